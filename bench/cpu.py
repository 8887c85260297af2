"""CPU time per message, in each process on the path: A's server, B's server, redis-server.

    .venv/bin/python -m bench.cpu [--count 5000] [--window 32] [--profile]

Wall-clock figures swing with whatever else the machine runs; CPU time per message barely
does, so this is the figure to watch while cutting per-message work. A sends `count`
messages to B with `window` tool calls in flight; every one must arrive, in order.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from bench.common import free_port
from bench.scenarios import (
    check_delivery,
    cpu_seconds,
    send_windowed,
    summarise_profile,
    wait_count,
)
from tests.support.mcp_client import start_agent


async def measure(url: str, redis_pid: int, count: int, window: int, tmp: Path,
                  profile: bool) -> None:
    env = {"BRIDGE_LOG_LEVEL": "WARNING"}
    async with anyio.create_task_group() as tg:
        alice = await start_agent(tg, "alice", url, tmp, env=env)
        bob = await start_agent(tg, "bob", url, tmp, env=env)
        await send_windowed(alice, "bob", [f"w{i}" for i in range(200)], window)
        await wait_count(bob, 200, 30)
        pids = {"A (sender)": alice.process.pid, "B (receiver)": bob.process.pid,
                "redis-server": redis_pid}
        spies = [subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "-r", "500", "-p",
             str(agent.process.pid), "-f", "raw", "-o", str(tmp / f"{agent.name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for agent in (alice, bob)] if profile else []
        await anyio.sleep(1 if profile else 0)  # py-spy attaches
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        started = time.perf_counter()
        texts = [f"t{i}" for i in range(count)]
        sent, errors, _ = await send_windowed(alice, "bob", texts, window)
        await wait_count(bob, 200 + sent, 120)
        seconds = time.perf_counter() - started
        after = {k: cpu_seconds(p) for k, p in pids.items()}
        delivery = check_delivery(bob, "alice", texts)
        print(f"{sent} messages, window {window}: {sent / seconds:.0f} msg/s wall, "
              f"lost {delivery['lost']}, dup {delivery['duplicates']}, "
              f"order {'kept' if delivery['order_ok'] else 'BROKEN'}, errors {len(errors)}")
        for k in pids:
            print(f"  {k:13s} {1e6 * (after[k] - before[k]) / sent:7.1f} µs CPU per message")
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait()
        for agent in (alice, bob) if profile else ():
            summary = summarise_profile(tmp / f"{agent.name}.txt", seconds, 500)
            print(f"  py-spy {agent.name}: {summary['samples']} samples; self, then inclusive:")
            for frame, pct in summary["top_self"][:12]:
                print(f"      {pct:5.1f}%  {frame}")
            for frame, pct in summary["top_inclusive"][8:30]:
                print(f"      {pct:5.1f}%  {frame}")
        for agent in (alice, bob):
            await agent.close_stdin()
            await agent.wait_exit()
        tg.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--profile", action="store_true", help="py-spy A and B meanwhile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(port),
             "--save", "", "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while subprocess.run(["redis-cli", "-p", str(port), "ping"],
                                 capture_output=True).stdout.strip() != b"PONG":
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)
            anyio.run(measure, f"redis://127.0.0.1:{port}/0", server.pid, args.count,
                      args.window, Path(tmp), args.profile)
        finally:
            server.kill()


if __name__ == "__main__":
    main()
