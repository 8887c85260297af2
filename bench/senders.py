"""Scenario 2b (issue 16): throughput with several senders to one receiver, not only one pair."""

from __future__ import annotations

import time
from typing import Any

import anyio

from bench.common import line, summary
from bench.scenarios import Context, check_delivery, cpu_seconds, send_windowed, wait_count

SENDERS = 4


async def senders(ctx: Context) -> dict[str, Any]:
    """SENDERS agents send to one receiver at once, each with window/SENDERS calls in flight
    (the same load in flight as one to one). Every message is checked: lost, repeated, and each
    sender's order."""
    size = ctx.sizes
    env = {"BRIDGE_ROOM": "many"}
    per_sender = size.throughput // SENDERS
    window = max(1, size.window // SENDERS)
    async with anyio.create_task_group() as tg:
        bob = await ctx.procs.agent(tg, "mbob", ctx.redis.url, ctx.tmp, env=env)
        senders = [await ctx.procs.agent(tg, f"ms{i}", ctx.redis.url, ctx.tmp, env=env)
                   for i in range(SENDERS)]
        for i, sender in enumerate(senders):  # warm up
            await sender.tool("send_message", to="mbob", text=f"w{i}")
        await bob.wait_messages(SENDERS, timeout=10)
        base = len(bob.message_times)
        texts = {s.name: [f"{s.name}-{i}" for i in range(per_sender)] for s in senders}
        pids = {"senders": [s.process.pid for s in senders], "receiver": [bob.process.pid],
                "redis": [ctx.redis.process.pid if ctx.redis.process else 0]}
        cpu = {who: sum(cpu_seconds(p) for p in ps) for who, ps in pids.items()}
        errors: list[str] = []
        started = time.perf_counter()

        async def run(sender: Any) -> None:
            _, errs, _ = await send_windowed(sender, "mbob", texts[sender.name], window)
            errors.extend(errs)

        async with anyio.create_task_group() as sending:
            for sender in senders:
                sending.start_soon(run, sender)
        total = per_sender * SENDERS
        complete = await wait_count(bob, base + total, timeout=60 + total / 200)
        seconds = bob.message_times[-1] - started
        cpu_us = {who: round(1e6 * (sum(cpu_seconds(p) for p in ps) - cpu[who]) / total, 1)
                  for who, ps in pids.items()}
        checks = [check_delivery(bob, s.name, texts[s.name]) for s in senders]
        delivered = sum(c["delivered"] for c in checks)
        result = {"senders": SENDERS, "messages": total, "window_each": window,
                  "seconds": seconds, "msg_per_s": delivered / seconds, "complete": complete,
                  "lost": sum(c["lost"] for c in checks),
                  "duplicates": sum(c["duplicates"] for c in checks),
                  "order_ok": all(c["order_ok"] for c in checks), "errors": errors[:5],
                  "cpu_us_per_message": cpu_us,
                  "arrival_gaps_ms": summary([1000 * (b - a) for a, b in zip(
                      bob.message_times[base:], bob.message_times[base + 1:], strict=False)])}
        print(f"  {SENDERS} senders -> 1 receiver, {total} messages, {window} in flight each: "
              f"{result['msg_per_s']:,.0f} msg/s; lost {result['lost']}, duplicates "
              f"{result['duplicates']}, per-sender order "
              f"{'kept' if result['order_ok'] else 'BROKEN'}")
        print("  CPU per message: " + ", ".join(f"{who} {us:.0f} µs" for who, us in
                                                  cpu_us.items()))
        print(line("gap between arrivals", result["arrival_gaps_ms"]))
        await ctx.procs.stop_agents([bob, *senders])
        tg.cancel_scope.cancel()
    return result
