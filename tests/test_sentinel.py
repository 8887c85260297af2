"""A Sentinel-watched primary: agents reach it by a redis+sentinel:// URL, and a failover (the
primary SIGKILLed while messages flow) is one more reconnect; with BRIDGE_MIN_REPLICAS=1 every
message acknowledged as durable arrives exactly once, in order."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from bridge.room.keys import Keys
from tests.conftest import agent_pool
from tests.support.mcp_client import Agent
from tests.support.redis_sentinel import PRIMARY, SERVICE, SentinelGroup, poll, sentinel_group
from tests.test_cli_ops import bridge, cli_env

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

COUNT, KILL_AT, WINDOW = 150, 40, 4  # messages per sender; alice's acks before the kill
# delivery must be back this long after the sentinels name the new primary: the receiver's
# reconnect backoff is capped at 5 s, and it may be at its longest step when it happens
RESUME_WITHIN = 10.0
ENV = {"BRIDGE_MIN_REPLICAS": "1", "BRIDGE_MIN_REPLICAS_TIMEOUT": "0.5",
       "BRIDGE_SEND_TIMEOUT": "20", "BRIDGE_LOOP_LIMIT": "0"}  # (two agents alone: no loop hold)


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelGroup]:
    with sentinel_group(tmp_path / "redis") as group:
        yield group


def outcome(result: dict[str, Any]) -> str:
    text = "".join(part.get("text", "") for part in result["content"])
    if result.get("isError"):
        assert "NOT sent" in text, text  # a failure says plainly that nothing was sent
        return "failed"
    if "Durable: 1 replica(s) have it." in text:
        return "durable"
    assert "NOT known to be durable" in text, text
    return "unsure"


async def stream(sender: Agent, to: str, outcomes: list[str], done: anyio.Event,
                 on_ack: Any = None) -> None:
    """Send `NAME:i` messages, up to WINDOW in flight, at least COUNT and on until ``done``;
    note how each was answered."""
    in_flight: list[int] = []

    async def settle() -> None:
        request = in_flight.pop(0)
        outcomes.append(outcome(await sender.response(request, timeout=60)))
        if on_ack:
            on_ack(len(outcomes))

    i = 0
    while i < COUNT or not done.is_set():
        await sender.send_request(1000 + i, "tools/call", {
            "name": "send_message", "arguments": {"to": to, "text": f"{sender.name}:{i}"}})
        in_flight.append(1000 + i)
        i += 1
        if len(in_flight) >= WINDOW:
            await settle()
    while in_flight:
        await settle()


def gaps(agent: Agent) -> list[float]:
    """Seconds from each time the receiver lost Redis to its reconnect (its log's times)."""
    lost, out = None, []
    for event in agent.log_events():
        at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        if event["event"] == "redis_connection_lost" and lost is None:
            lost = at
        elif event["event"] == "reconnected" and lost is not None:
            out.append(at - lost)
            lost = None
    return out


def received(agent: Agent, sender: str) -> list[int]:
    return [int(m["content"].split(":")[1]) for m in agent.channel()
            if m["content"].startswith(sender + ":")]


@pytest.mark.parametrize("how", ["sigkill", "sentinel failover"])
async def test_a_failover_mid_stream_loses_no_durable_message(sentinels, tmp_path, how):
    """SIGKILL: the primary is gone; it comes back later and the sentinels make it a replica.
    SENTINEL FAILOVER: the primary is demoted while connections to it are open (its writes
    answer READONLY until the clients move)."""
    old = sentinels.primary
    async with agent_pool(sentinels.url(), tmp_path) as pool:
        alice = await pool.start("alice", env=dict(ENV))
        bob = await pool.start("bob", env=dict(ENV))
        outcomes: dict[str, list[str]] = {"alice": [], "bob": []}
        killed = anyio.Event()
        times: dict[str, float] = {}

        def kill_at(acked: int) -> None:
            if acked == KILL_AT and not killed.is_set():
                if how == "sigkill":
                    old.stop()
                else:
                    sentinels.sentinels[0].client().execute_command("SENTINEL", "FAILOVER",
                                                                   SERVICE)
                times["killed"] = time.perf_counter()
                killed.set()

        async def failover() -> None:
            await killed.wait()
            new_port = await anyio.to_thread.run_sync(sentinels.wait_failover, old.port)
            times["promoted"] = time.perf_counter()
            # the old primary comes back; the sentinels make it the new one's replica, and
            # sends are durable again
            if how == "sigkill":
                await anyio.to_thread.run_sync(lambda: old.start(*PRIMARY))
            new = redis.Redis(port=new_port, socket_timeout=5)
            await anyio.to_thread.run_sync(lambda: poll(
                lambda: new.info("replication")["connected_slaves"] == 1, 60,
                "the old primary back as a replica"))
            times["new_port"] = new_port

        async def failover_then_more() -> None:
            await failover()
            # a few more batches once the replica is back: messages flow after the failover
            await alice.wait_for(lambda: len(outcomes["alice"]) >= COUNT, timeout=60)
            done.set()

        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(failover_then_more)
            tg.start_soon(stream, alice, "bob", outcomes["alice"], done, kill_at)
            tg.start_soon(stream, bob, "alice", outcomes["bob"], done)

        # a last durable message each way: once it is in, everything before it is too
        for sender, receiver in ((alice, bob), (bob, alice)):
            last = len(outcomes[sender.name])
            assert "Durable" in await sender.tool("send_message", to=receiver.name,
                                                  text=f"{sender.name}:{last}")
            outcomes[sender.name].append("durable")
            await receiver.wait_for(lambda r=receiver, s=sender, n=last: n in received(r, s.name),
                                    timeout=30, what="the last message")
        # each receiver lost Redis once and was back within the failover's time plus a few
        # seconds (the gap its own log shows)
        failover_took = times["promoted"] - times["killed"]
        for receiver in (alice, bob):
            assert gaps(receiver) and max(gaps(receiver)) < failover_took + RESUME_WITHIN, (
                receiver.name, gaps(receiver), failover_took)

        new = redis.Redis(port=int(times["new_port"]), socket_timeout=5)
        keys = Keys("main")
        for receiver in (alice, bob):  # each subscriber is on the new primary
            channel = keys.direct(receiver.name)
            assert dict(new.pubsub_numsub(channel))[channel.encode()] == 1
            # and so is each cursor writer (its single connection once went back to the old
            # primary's address: redis-py skipped the sentinels on a reconnect)
            last = receiver.channel()[-1]["meta"]["message_id"]
            await anyio.to_thread.run_sync(lambda r=receiver, m=last: poll(
                lambda: m in (new.get(keys.cursor(r.name)) or b"").decode(), 10,
                f"{r.name}'s cursor at {m} on the new primary"))

        for sender, receiver in ((alice, bob), (bob, alice)):
            got = received(receiver, sender.name)
            durable = [i for i, o in enumerate(outcomes[sender.name]) if o == "durable"]
            wrong = {i: got.count(i) for i in durable if got.count(i) != 1}
            assert not wrong, (sender.name, "durable message: times delivered", wrong,
                               [(m["content"], m["meta"]["message_id"]) for m in receiver.channel()
                                if int(m["content"].split(":")[1]) in wrong],
                               [e["event"] for e in receiver.log_events() if "log_" in e["event"]],
                               )  # exactly once
            in_order = [i for i in got if i in set(durable)]
            assert in_order == durable, (sender.name, got)
            tally = {o: outcomes[sender.name].count(o) for o in ("durable", "unsure", "failed")}
            unsure_delivered = sum(1 for i, o in enumerate(outcomes[sender.name])
                                   if o == "unsure" and i in got)
            print(f"\n{sender.name}->{receiver.name}: {tally}; not-durable ones delivered "
                  f"{unsure_delivered}; {len(got)} pushed, {len(set(got))} distinct; "
                  f"promoted {failover_took:.2f} s after the {how}, {receiver.name} "
                  f"reconnected after {max(gaps(receiver)):.2f} s",
                  file=sys.stderr)
        assert any(e.get("event") == "reconnected" for e in bob.log_events())
        readonly = sum("now a slave" in str(e.get("error")) for agent in (alice, bob)
                       for e in agent.log_events())
        print(f"writes that met a demoted primary (READONLY) and were retried: {readonly}",
              file=sys.stderr)


async def test_sentinel_mistakes_get_one_clear_line(sentinels):
    sentinel = f"127.0.0.1:{sentinels.sentinels[0].port}"
    # a sentinel's address as a plain URL: which URL to write instead
    plain = await bridge("who", env=cli_env(BRIDGE_REDIS_URL=f"redis://{sentinel}/0"))
    assert plain.returncode == 1 and "is a Redis Sentinel, not a Redis server" in plain.stderr
    assert f"redis+sentinel://{sentinel}/{SERVICE}" in plain.stderr, plain.stderr
    # a service the sentinels do not watch: the ones they do
    wrong = sentinels.url().replace(f"/{SERVICE}/", "/nosuch/")
    named = await bridge("who", env=cli_env(BRIDGE_REDIS_URL=wrong))
    assert named.returncode == 1 and f"watch: {SERVICE}" in named.stderr, named.stderr
    # doctor names the primary, its replica and the sentinels
    doctor = await bridge("doctor", env=cli_env(BRIDGE_REDIS_URL=sentinels.url(),
                                                BRIDGE_MIN_REPLICAS="1"))
    assert doctor.returncode == 0, doctor.stdout
    assert (f"Sentinel-watched primary '{SERVICE}' at 127.0.0.1:{sentinels.primary.port}: "
            f"1 replica(s) up, 3 sentinel(s) watch it (quorum 2); 3 of the 3 in the URL "
            f"answer") in doctor.stdout, doctor.stdout
    assert "BRIDGE_MIN_REPLICAS" not in doctor.stdout  # one replica is enough for 1
