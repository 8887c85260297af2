"""BRIDGE_MIN_REPLICAS: a send is said to be sent once a replica has it, and said plainly not to
be known durable when none confirms in time; either way it is delivered exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from bridge.room.keys import Keys
from tests.conftest import Agents, RedisServer, agent_pool, free_port
from tests.support.redis_sentinel import PRIMARY, start_replica

pytestmark = pytest.mark.anyio

# 2 s, not less: with the suite on four workers over two cores, a replica that is up and
# caught up once took over 0.5 s to answer WAIT's GETACK (a false "NOT known to be durable")
DURABLE = {"BRIDGE_MIN_REPLICAS": "1", "BRIDGE_MIN_REPLICAS_TIMEOUT": "2"}


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer(free_port(), tmp_path / "primary")
    replica = RedisServer(free_port(), tmp_path / "replica")
    try:
        for server in (primary, replica):
            server.directory.mkdir()
        primary.start(*PRIMARY)
        start_replica(replica, primary)
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


@pytest.fixture
async def on_primary(replicated: tuple[RedisServer, RedisServer],
                     tmp_path: Path) -> AsyncIterator[Agents]:
    async with agent_pool(replicated[0].url, tmp_path) as pool:
        yield pool


async def until(condition: Callable[[], Any], timeout: float = 15) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.05)


def caught_up(primary: RedisServer, replica: RedisServer) -> bool:
    """The replica is online for the primary and has acknowledged all it was sent."""
    mine = primary.client().info("replication")
    link = mine.get("slave0") or {}
    return (replica.client().info("replication")["master_link_status"] == "up"
            and link.get("state") == "online"
            and link.get("offset") == mine["master_repl_offset"])


def texts(agent) -> list[str]:  # type: ignore[no-untyped-def]
    return [m["content"] for m in agent.channel()]


async def test_sends_say_whether_a_replica_has_them(on_primary, replicated):
    primary, replica = replicated
    alice = await on_primary.start("alice", env=dict(DURABLE))
    bob = await on_primary.start("bob")

    answer = await alice.tool("send_message", to="bob", text="one")
    assert "Durable: 1 replica(s) have it." in answer, answer
    assert replica.client().xlen(Keys("main").log) == 1  # the replica has it indeed

    replica.stop()  # the primary notices the link is gone: WAIT now times out
    # not an error (tool() raises on isError): the message is logged and will be delivered
    answer = await alice.tool("send_message", to="bob", text="two")
    assert "NOT known to be durable: 0 of the 1 replica(s)" in answer, answer
    assert "Do not send it again" in answer and "sent, message_id" in answer

    replica.start("--replicaof", "127.0.0.1", str(primary.port))
    await until(lambda: caught_up(primary, replica))
    answer = await alice.tool("send_message", to="bob", text="three")
    assert "Durable: 1 replica(s) have it." in answer, answer

    await bob.wait_for(lambda: "three" in texts(bob), what="the last message")
    assert texts(bob) == ["one", "two", "three"]  # each exactly once, in order


async def test_without_min_replicas_a_send_says_nothing_of_replicas(agents):
    alice = await agents.start("alice")
    await agents.start("bob")
    answer = await alice.tool("send_message", to="bob", text="plain")
    assert "sent, message_id" in answer and "replica" not in answer.lower()
