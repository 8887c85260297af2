"""The cost of BRIDGE_MIN_REPLICAS (issue 14): send -> push and send -> answer, with 0 and 1,
against a primary and its replica that this scenario starts (and stops) itself.

The push does not wait for the replica (the send function publishes before the WAIT that
follows it), the sender's answer does: so the answer is where the cost shows."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import anyio
import redis

from bench.common import REDIS_SERVER, RedisServer, line, summary
from tests.support.mcp_client import Agent


def start_replica(ctx: Any, primary: RedisServer) -> RedisServer:
    replica = RedisServer(ctx.tmp / "replica")
    replica.directory.mkdir(exist_ok=True)
    replica.process = ctx.procs.popen(
        [REDIS_SERVER, "--port", str(replica.port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(replica.directory),
         "--replicaof", "127.0.0.1", str(primary.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            if replica.client().info("replication").get("master_link_status") == "up":
                return replica
        except redis.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the bench's replica did not sync within 20 s")
        time.sleep(0.05)


async def one_setting(ctx: Any, url: str, replicas: int, count: int,
                      warmup: int) -> dict[str, Any]:
    from bench.scenarios import next_id, send_params

    env = {"BRIDGE_ROOM": f"durable{replicas}", "BRIDGE_MIN_REPLICAS": str(replicas)}
    push, answer, durable = [], [], 0
    async with anyio.create_task_group() as tg:
        alice: Agent = await ctx.procs.agent(tg, "alice", url, ctx.tmp, env=env)
        bob: Agent = await ctx.procs.agent(tg, "bob", url, ctx.tmp, env=env)
        for i in range(count + warmup):
            request_id = next_id()
            started = time.perf_counter()
            await alice.send_request(request_id, "tools/call", send_params("bob", f"m{i}"))
            await bob.wait_messages(i + 1, timeout=10)
            result = await alice.response(request_id, timeout=10)
            if i >= warmup:
                push.append((bob.message_times[i] - started) * 1000)
                answer.append((alice.response_times[request_id] - started) * 1000)
                durable += "Durable:" in result["content"][0]["text"]
        await ctx.procs.stop_agents([alice, bob])
        tg.cancel_scope.cancel()
    return {"push": summary(push), "answer": summary(answer), "durable": durable,
            "messages": count}


async def durability(ctx: Any) -> dict[str, Any]:
    primary = RedisServer(ctx.tmp / "primary")
    primary.directory.mkdir(exist_ok=True)
    primary.start()
    ctx.procs.popens.append(primary.process)
    replica = None
    try:
        primary.client().config_set("repl-diskless-sync-delay", 0)
        replica = await anyio.to_thread.run_sync(start_replica, ctx, primary)
        count = max(ctx.sizes.latency // 2, 20)
        out: dict[str, Any] = {"version": primary.version()}
        for replicas in (0, 1):
            result = await one_setting(ctx, primary.url, replicas, count, ctx.sizes.warmup)
            out[str(replicas)] = result
            print(line(f"BRIDGE_MIN_REPLICAS={replicas}: send -> push", result["push"]))
            print(line(f"BRIDGE_MIN_REPLICAS={replicas}: send -> answer", result["answer"]))
        out["answer_p50_cost_ms"] = out["1"]["answer"]["p50"] - out["0"]["answer"]["p50"]
        print(f"  WAIT 1 costs the answer {out['answer_p50_cost_ms']:.3f} ms at p50; "
              f"{out['1']['durable']} of {out['1']['messages']} confirmed durable")
        return out
    finally:
        for server in (replica, primary):
            if server is not None:
                server.stop()
