"""Old code against new, in interleaved rounds of one run (a noisy machine moves both alike).

    .venv/bin/python -m bench.ab --a ../wt-base --b . [--rounds 6] [--latency 300]
                                 [--throughput 3000] [--fanout N] [--env KEY=VALUE ...]

Each tree is a checkout of bridge: its `bridge serve` runs with PYTHONPATH at that tree (the
same virtualenv, so the same dependencies). Every round runs A, then B (then B, A in the next
round), each with a fresh pair of agents in a room of its own on one redis-server: send→push
one at a time (p50), then one to one with 32 calls in flight (msg/s), with the CPU time of
each process and Redis' own time per delivered message (INFO commandstats); with --fanout N,
broadcasts to N agents (time until the last has it, and the receivers' CPU per message). Prints the
median of each figure per tree and B's change against A.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import redis

from bench.common import Processes, RedisServer, percentile
from bench.scenarios import cpu_seconds, next_id, send_params, send_windowed, wait_count

SECRET = "bench-secret-bench-secret-bench-secret"


def redis_usec(client: redis.Redis) -> float:
    """Redis' own time in commands so far (µs): the sum over INFO commandstats."""
    stats = client.info("commandstats")
    return float(sum(v["usec"] for k, v in stats.items() if k.startswith("cmdstat_")))


async def one(procs: Processes, server: RedisServer, tree: Path, tmp: Path, room: str,
              args: argparse.Namespace) -> dict[str, float]:
    env = {"BRIDGE_ROOM": room, "PYTHONPATH": str(tree), **dict(args.env)}
    client = server.client()
    async with anyio.create_task_group() as tg:
        alice = await procs.agent(tg, "alice", server.url, tmp, env=env)
        bob = await procs.agent(tg, "bob", server.url, tmp, env=env)
        samples = []
        for i in range(args.latency + 20):
            request_id = next_id()
            started = time.perf_counter()
            await alice.send_request(request_id, "tools/call", send_params("bob", f"m{i}"))
            await bob.wait_messages(i + 1, timeout=10)
            samples.append((bob.message_times[i] - started) * 1000)
            await alice.response(request_id, timeout=10)
        samples = samples[20:]
        base = len(bob.message_times)
        pids = {"A": alice.process.pid, "B": bob.process.pid,
                "redis": server.process.pid if server.process else 0}
        cpu = {who: cpu_seconds(pid) for who, pid in pids.items()}
        usec = redis_usec(client)
        started = time.perf_counter()
        texts = [f"t{i}" for i in range(args.throughput)]
        sent, errors, _ = await send_windowed(alice, "bob", texts, 32)
        assert not errors, errors[:3]
        assert await wait_count(bob, base + sent, timeout=60), "not all delivered"
        seconds = bob.message_times[-1] - started
        result = {"p50_ms": statistics.median(samples), "p99_ms": percentile(samples, 0.99),
                  "msg_per_s": sent / seconds,
                  "redis_us_per_msg": (redis_usec(client) - usec) / sent}
        for who, pid in pids.items():
            result[f"cpu_us_{who}"] = 1e6 * (cpu_seconds(pid) - cpu[who]) / sent
        got = [p["content"] for p in bob.channel()][base:]
        assert got == texts, "lost, repeated or reordered"
        receivers = [bob]
        if args.fanout:
            receivers += [await procs.agent(tg, f"r{i}", server.url, tmp, env=env)
                          for i in range(args.fanout - 1)]
            spans, cpu = [], {r.name: cpu_seconds(r.process.pid) for r in receivers}
            for b in range(13):
                bases = [len(r.message_times) for r in receivers]
                started = time.perf_counter()
                await alice.tool("send_message", to="*", text=f"f{b}")
                for r, n in zip(receivers, bases, strict=True):
                    await r.wait_messages(n + 1, timeout=30)
                if b >= 3:
                    spans.append((max(r.message_times[n] for r, n in
                                      zip(receivers, bases, strict=True)) - started) * 1000)
            result["fanout_p50_ms"] = statistics.median(spans)
            result["fanout_max_ms"] = max(spans)
            result["fanout_cpu_us_per_receiver"] = 1e6 * sum(
                cpu_seconds(r.process.pid) - cpu[r.name] for r in receivers) / 13 / len(receivers)
        await procs.stop_agents([alice, *receivers])
        tg.cancel_scope.cancel()
    client.close()
    return result


async def rounds(args: argparse.Namespace, server: RedisServer, tmp: Path
                 ) -> dict[str, list[dict[str, float]]]:
    procs = Processes()
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    try:
        for r in range(args.rounds):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")
            for label in order:
                tree = args.a if label == "A" else args.b
                result = await one(procs, server, tree, tmp, f"ab{r}{label.lower()}", args)
                results[label].append(result)
                print(f"round {r} {label}: " + "  ".join(
                    f"{k} {v:.3f}" if v < 10 else f"{k} {v:.0f}" for k, v in result.items()),
                    flush=True)
    finally:
        procs.kill_all()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="the old tree")
    parser.add_argument("--b", type=Path, required=True, help="the new tree")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--latency", type=int, default=300)
    parser.add_argument("--throughput", type=int, default=3000)
    parser.add_argument("--fanout", type=int, default=0, help="then broadcasts to N agents")
    parser.add_argument("--env", action="append", default=[],
                        type=lambda text: tuple(text.split("=", 1)),
                        help="KEY=VALUE for both trees' agents (BRIDGE_SECRET is set)")
    args = parser.parse_args()
    args.a, args.b = args.a.resolve(), args.b.resolve()
    if not any(key == "BRIDGE_SECRET" for key, _ in args.env):
        args.env.append(("BRIDGE_SECRET", SECRET))
    with tempfile.TemporaryDirectory(prefix="bridge-ab-") as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            results = anyio.run(rounds, args, server, Path(tmp))
        finally:
            server.stop()
    print(f"\nmedians over {args.rounds} rounds (A {args.a}, B {args.b}; "
          f"load {os.getloadavg()[0]:.1f}):")
    for key in results["A"][0]:
        a = statistics.median(r[key] for r in results["A"])
        b = statistics.median(r[key] for r in results["B"])
        print(f"  {key:<20} A {a:10.3f}   B {b:10.3f}   B/A {b / a if a else float('nan'):.2f}")


if __name__ == "__main__":
    sys.exit(main())
