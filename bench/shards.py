"""Per-shard cost on Redis, and many rooms on one node, then on a three-shard cluster.

    .venv/bin/python -m bench --only shards [--quick]

In each room a sender sends to a receiver, in every room at once (rooms in one process: the
Room, no MCP). Per call, from INFO commandstats: the send path (FCALL of the send function;
its XADD, SPUBLISH… run inside it and are in its usec) and the receive path (XRANGE of the
log). Redis' whole CPU per delivered message (commands, networking, replication to the
replica) is INFO cpu's used_cpu_user + used_cpu_sys over the messages delivered, summed over
the primaries: a shard's capacity is 1e6 / that, per core. Aggregate throughput is
measured against one node and then a cluster of three primaries (each with a replica), in
the same run. On a 2-core machine the agents and all six redis-servers share two cores: the
aggregate figure is bound by the clients, and cannot show the cluster's scaling; the
projection per shard is the figure that carries over.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import redis

from bridge import logs
from bridge.room.connection import Room
from bridge.room.envelope import Envelope
from bridge.settings import Settings
from tests.support.redis_cluster import Cluster

SEND = ("fcall",)  # the send function: its XADD, SPUBLISH… run inside and count here
RECEIVE = ("xrange",)  # the receiver's log read


def command_usec(clients: list[redis.Redis]) -> dict[str, tuple[int, int]]:
    """command -> (calls, usec), summed over the nodes; "cpu" -> (0, usec of CPU)."""
    total: dict[str, tuple[int, int]] = {"cpu": (0, 0)}
    for client in clients:
        cpu = client.info("cpu")
        total["cpu"] = (0, total["cpu"][1] + int(
            (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1e6))
        for name, stat in client.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            calls, usec = total.get(command, (0, 0))
            total[command] = (calls + int(stat["calls"]), usec + int(stat["usec"]))
    return total


async def exchange(url: str, rooms: int, messages: int) -> dict[str, Any]:
    """Every room: alice sends ``messages`` to bob, all rooms at once; bob reads them all."""
    def settings(room: str, name: str) -> Settings:
        return Settings(redis_url=url, room=room, name=name, delivery="pull")

    async with AsyncExitStack() as stack:
        pairs = []
        for i in range(rooms):
            room = f"bench{i:03d}"
            alice = await stack.enter_async_context(
                Room.connect(settings(room, "alice"), warn_unverified=False))
            bob = await stack.enter_async_context(
                Room.connect(settings(room, "bob"), warn_unverified=False))
            pairs.append((alice, bob))
        got: list[list[str]] = [[] for _ in pairs]

        async def send(alice: Room) -> None:
            for n in range(messages):
                await alice.send("bob", f"m{n}")

        async def receive(bob: Room, into: list[str]) -> None:
            while len(into) < messages:
                batch = await bob.next_batch(10)
                bob.ack(*batch)
                into += [item.text for item in batch if isinstance(item, Envelope)]
            await bob.flush_cursor()

        start = time.perf_counter()
        with anyio.fail_after(300):
            async with anyio.create_task_group() as tg:
                for (alice, bob), into in zip(pairs, got, strict=True):
                    tg.start_soon(send, alice)
                    tg.start_soon(receive, bob, into)
        seconds = time.perf_counter() - start
    expected = [f"m{n}" for n in range(messages)]
    return {"rooms": rooms, "messages": rooms * messages, "seconds": seconds,
            "msg_per_s": rooms * messages / seconds,
            "exact": all(into == expected for into in got)}


def cost(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
         delivered: int) -> dict[str, Any]:
    diff = {name: (calls - before.get(name, (0, 0))[0], usec - before.get(name, (0, 0))[1])
            for name, (calls, usec) in after.items()}

    def per_call(names: tuple[str, ...]) -> float:
        calls = sum(diff.get(n, (0, 0))[0] for n in names)
        return sum(diff.get(n, (0, 0))[1] for n in names) / calls if calls else 0.0

    def per_message(names: tuple[str, ...]) -> float:
        return sum(diff.get(n, (0, 0))[1] for n in names) / delivered

    total = per_message(("cpu",))
    return {"send_usec_per_call": per_call(SEND), "receive_usec_per_call": per_call(RECEIVE),
            "send_usec_per_msg": per_message(SEND), "receive_usec_per_msg": per_message(RECEIVE),
            "redis_usec_per_msg": total,
            "projected_msg_per_s_per_shard_core": 1e6 / total if total else None,
            "calls": {name: calls for name, (calls, _) in diff.items() if calls}}



async def measure(url: str, clients: list[redis.Redis], rooms: int,
                  messages: int) -> dict[str, Any]:
    await exchange(url, rooms, 5)  # joins, functions loaded, connections warm
    before = command_usec(clients)
    result = await exchange(url, rooms, messages)
    result.update(cost(before, command_usec(clients), result["messages"]))
    return result


async def shards(ctx: Any) -> dict[str, Any]:
    rooms, messages = ctx.sizes.shard_rooms, ctx.sizes.shard_messages
    logs.configure("WARNING")  # the rooms run in this process: their joins are not results
    one = await measure(ctx.redis.url, [ctx.redis.client()], rooms, messages)
    report("one node", one)
    with Cluster.started(Path(ctx.tmp) / "cluster") as cluster:
        url = cluster.url
        three = await measure(url, [node.client() for node in cluster.primaries()], rooms,
                              messages)
    report("3 shards", three)
    print("   a 2-core machine runs the agents and every redis-server on the same two cores: "
          "the aggregate msg/s is bound by the clients, not by Redis, and cannot show the "
          "cluster's scaling; Redis' usec per message is the figure that carries over: one "
          "shard (one core) carries about 1e6 / usec messages per second")
    return {"one_node": one, "three_shards": three}


def report(label: str, r: dict[str, Any]) -> None:
    projected = r["projected_msg_per_s_per_shard_core"]
    print(f"   {label}: {r['rooms']} rooms, {r['messages']} messages in {r['seconds']:.1f} s "
          f"= {r['msg_per_s']:.0f} msg/s aggregate "
          f"({'exactly once, in order' if r['exact'] else 'DELIVERY BROKEN'}); "
          f"Redis: send {r['send_usec_per_call']:.1f} usec/call, receive "
          f"{r['receive_usec_per_call']:.1f} usec/call; CPU {r['redis_usec_per_msg']:.1f} usec "
          f"per delivered message -> ~{projected or 0:,.0f} msg/s per shard core")
