"""send_message at agent A -> channel notification at agent B, through real `bridge serve`.

    .venv/bin/python -m bench.latency [--count 2000] [--redis URL]

Starts its own redis-server on a free port unless --redis is given. Prints min/p50/p90/p99/max
in milliseconds. Each message is sent after the previous one arrived (no pipelining).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import anyio

from bench.common import free_port, percentile
from tests.support.mcp_client import start_agent


async def measure(url: str, count: int, tmp: Path) -> list[float]:
    async with anyio.create_task_group() as tg:
        alice = await start_agent(tg, "alice", url, tmp, env={"BRIDGE_LOG_LEVEL": "WARNING"})
        bob = await start_agent(tg, "bob", url, tmp, env={"BRIDGE_LOG_LEVEL": "WARNING"})
        samples = []
        for i in range(count + 50):  # the first 50 warm up
            started = time.perf_counter()
            await alice.send_request(i + 10, "tools/call", {
                "name": "send_message", "arguments": {"to": "bob", "text": f"m{i}"}})
            await bob.wait_messages(i + 1)
            samples.append((bob.message_times[i] - started) * 1000)
            await alice.response(i + 10)
        for agent in (alice, bob):
            await agent.close_stdin()
            await agent.wait_exit()
        tg.cancel_scope.cancel()
    return samples[50:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--redis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        url = args.redis
        if not url:
            port = free_port()
            server = subprocess.Popen(
                [shutil.which("redis-server") or "redis-server", "--port", str(port),
                 "--save", "", "--appendonly", "no", "--dir", tmp],
                stdout=subprocess.DEVNULL)
            url = f"redis://127.0.0.1:{port}/0"
            deadline = time.monotonic() + 10
            while subprocess.run(["redis-cli", "-p", str(port), "ping"],
                                 capture_output=True).stdout.strip() != b"PONG":
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
        try:
            samples = anyio.run(measure, url, args.count, Path(tmp))
        finally:
            if server:
                server.kill()
    print(f"send_message -> channel push, {len(samples)} messages, ms: "
          f"min {min(samples):.3f}  p50 {statistics.median(samples):.3f}  "
          f"p90 {percentile(samples, 0.9):.3f}  p99 {percentile(samples, 0.99):.3f}  "
          f"max {max(samples):.3f}")


if __name__ == "__main__":
    main()
