"""bridge on a real Redis Cluster (tests/support/redis_cluster.py: 3 primaries, 3 replicas): rooms
spread over the shards, agents talk, a primary dies, a room's slot moves."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from bridge.errors import SettingsError
from bridge.ops.acl import AclUser
from bridge.redis.cluster import parse_cluster_url
from bridge.room.connection import Room
from bridge.room.envelope import Envelope
from bridge.room.functions import load_library
from bridge.settings import Settings
from tests.conftest import Agents, agent_pool
from tests.support.mcp_client import Agent, ToolError
from tests.support.redis_cluster import Cluster
from tests.test_cli_ops import bridge, start_cli

pytestmark = pytest.mark.anyio

ROOMS = [f"room{i:02d}" for i in range(30)]
# the failover test's agents: each send waits for the room primary's replica (WAIT), so
# every send answered "Durable" must arrive, though the primary dies
FAILOVER_ENV = {"BRIDGE_MIN_REPLICAS": "1"}
STRICT = "BRIDGE_MIN_REPLICAS" in FAILOVER_ENV


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster.started(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
async def cluster_agents(cluster: Cluster, tmp_path: Path) -> AsyncIterator[Agents]:
    async with agent_pool(cluster.url, tmp_path) as pool:
        yield pool


def settings(cluster: Cluster, room: str, name: str) -> Settings:
    return Settings(redis_url=cluster.url, room=room, name=name, delivery="pull")


def texts(items: list[Any]) -> list[str]:
    return [item.text for item in items if isinstance(item, Envelope)]


async def receive(room: Room, count: int, timeout: float = 15) -> list[str]:
    got: list[str] = []
    with anyio.fail_after(timeout):
        while len(got) < count:
            batch = await room.next_batch(timeout)
            room.ack(*batch)
            got += texts(batch)
    return got


def test_cluster_url_forms() -> None:
    address = parse_cluster_url("rediss+cluster://u:p%40ss@h1:7000,[::1]:7001/")
    assert address.seeds == [("h1", 7000), ("::1", 7001)]
    assert address.options == {"ssl": True, "username": "u", "password": "p@ss"}
    with pytest.raises(SettingsError, match="only database 0"):
        parse_cluster_url("redis+cluster://h1:7000/3")
    with pytest.raises(SettingsError, match="HOST:PORT"):
        parse_cluster_url("redis+cluster://h1,h2:7001/")
    with pytest.raises(SettingsError, match="redis\\+cluster://host1:7000,host2:7001/"):
        Settings.from_env({"BRIDGE_REDIS_URL": "redis+cluster://h1:7000,h2/"})


async def test_a_plain_url_to_a_cluster_node_says_what_to_write(cluster: Cluster) -> None:
    port = cluster.primaries()[0].port
    plain = Settings(redis_url=f"redis://127.0.0.1:{port}/0", room="r", name="alice")
    with pytest.raises(SettingsError, match=rf"redis\+cluster://127.0.0.1:{port}/"):
        async with Room.connect(plain):
            pass


async def test_thirty_rooms_spread_over_three_shards_and_talk(
        cluster: Cluster, cluster_agents: Agents) -> None:
    owners = {room: cluster.owner(f"bridge:{{{room}}}:log").port for room in ROOMS}
    assert len(set(owners.values())) == 3, owners  # every shard holds some rooms

    # every room: a direct and a broadcast message, each delivered once, in order
    async with contextlib.AsyncExitStack() as stack:
        pairs = []
        for room in ROOMS:
            alice = await stack.enter_async_context(
                Room.connect(settings(cluster, room, "alice"), warn_unverified=False))
            bob = await stack.enter_async_context(
                Room.connect(settings(cluster, room, "bob"), warn_unverified=False))
            pairs.append((room, alice, bob))
        for room, alice, _ in pairs:
            await alice.send("bob", f"{room}-direct")
            await alice.send("*", f"{room}-all")
        for room, _, bob in pairs:
            assert await receive(bob, 2) == [f"{room}-direct", f"{room}-all"]
            assert await bob.next_batch(0) == []
        # the live path is sharded pub/sub on the room's shard: no classic PUBLISH ran
        for node in cluster.primaries():
            stats = node.client().info("commandstats")
            assert stats.get("cmdstat_spublish", {}).get("calls", 0) > 0, node.port
            assert "cmdstat_publish" not in stats, node.port

    # real `bridge serve` agents, in one room of each shard; names of their own: a leave of
    # the rooms above that outlived its 0.75 s on a loaded machine leaves alice's and bob's
    # records there, held by this (live) process, until their TTL (a CI run once saw it)
    per_shard = {port: room for room, port in owners.items()}
    for room in per_shard.values():
        alice = await cluster_agents.start("carol", "--room", room)
        bob = await cluster_agents.start("dave", "--room", room)
        for i in range(5):
            await alice.tool("send_message", to="dave", text=f"{room} d{i}")
            await bob.tool("send_message", to="*", text=f"{room} b{i}")
        await bob.wait_messages(5)
        await alice.wait_messages(5)
        assert [m["content"] for m in bob.channel()] == [f"{room} d{i}" for i in range(5)]
        assert [m["content"] for m in alice.channel()] == [f"{room} b{i}" for i in range(5)]


async def test_an_acl_user_of_one_room_talks_on_the_cluster(cluster: Cluster) -> None:
    # ACL users are per node: the admin sets the rule on every node, and loads the functions
    for node in cluster.live():
        for name in ("alice", "bob"):
            user = AclUser("aclroom", name, f"Pw-{name}-1")
            node.client().execute_command("ACL", "SETUSER", user.name, *user.rules())
    await load_library(Settings(redis_url=cluster.url))

    def as_user(name: str) -> Settings:
        url = AclUser("aclroom", name, f"Pw-{name}-1").url(cluster.url)
        assert url.startswith(f"redis+cluster://bridge-aclroom-{name}:Pw-{name}-1@127.0.0.1:")
        return Settings(redis_url=url, room="aclroom", name=name, delivery="pull")

    async with Room.connect(as_user("alice"), warn_unverified=False) as alice, \
            Room.connect(as_user("bob"), warn_unverified=False) as bob:
        await alice.send("bob", "direct")
        await alice.send("*", "to all")
        assert await receive(bob, 2) == ["direct", "to all"]
    for node in cluster.live():
        denied = [entry for entry in node.client().acl_log()
                  if entry.get("object") != "client|setinfo"]
        assert denied == [], (node.port, denied)


async def test_who_all_rooms_doctor_and_tail_on_the_cluster(cluster: Cluster,
                                                          tmp_path: Path) -> None:
    rooms = {cluster.owner(f"bridge:{{{room}}}:log").port: room for room in ROOMS}
    for room in rooms.values():
        sent = await bridge("send", "--redis", cluster.url, "--room", room, "--as", "op", "*",
                            f"hello {room}")
        assert sent.returncode == 0, sent.stderr
    # every shard's rooms: SCAN runs on every primary
    listed = await bridge("who", "--all-rooms", "--json", "--redis", cluster.url)
    assert {r["room"] for r in json.loads(listed.stdout)["rooms"]} >= set(rooms.values())

    room = next(iter(rooms.values()))
    doctor = await bridge("doctor", "--redis", cluster.url, "--room", room)
    slot = cluster.slot(f"bridge:{{{room}}}:log")
    owner = cluster.owner(f"bridge:{{{room}}}:log").port
    assert (f"Redis Cluster, cluster_state ok, 3 primaries; room {room} is in slot {slot}, "
            f"served by 127.0.0.1:{owner}") in doctor.stdout, doctor.stdout
    assert "FAIL" not in doctor.stdout, doctor.stdout

    plain = await bridge("doctor", "--redis", f"redis://127.0.0.1:{owner}/0", "--room", room)
    assert f"set --redis / BRIDGE_REDIS_URL to redis+cluster://127.0.0.1:{owner}/" in \
        plain.stdout, plain.stdout

    # tail: the log, and the events channel, a shard channel it subscribes to by name
    async with anyio.create_task_group() as tg:
        tail = await start_cli(tg, tmp_path, "tail", "--json", "--redis", cluster.url,
                               "--room", room)
        async with Room.connect(settings(cluster, room, "carol")) as carol:
            await carol.send("*", "live")
            await tail.wait_for(lambda lines: len(lines) >= 2, what="2 lines")
        records = tail.records()
        assert [(r["kind"], r.get("name"), r.get("text")) for r in records[:2]] == [
            ("joined", "carol", None), ("message", None, "live")]
        assert await tail.interrupt() == 0
        tg.cancel_scope.cancel()


def replica_of(cluster: Cluster, primary: int) -> list[int]:
    return [node.port for node in cluster.live()
            if node.client().info("replication").get("master_port") == primary]


async def send_numbered(agent: Agent, to: str, count: int, until: anyio.Event,
                        acked: list[int], failed: list[int],
                        undurable: list[int] | None = None) -> None:
    """Send "n000", "n001"… one after another, into ``acked`` or ``failed`` (an error the
    agent saw), or with BRIDGE_MIN_REPLICAS into ``undurable`` when the answer says no
    replica confirmed it; at least ``count``, and on until ``until`` is set."""
    i = 0
    while i < count or not until.is_set():
        try:
            reply = await agent.tool("send_message", to=to, text=f"n{i:03d}", timeout=30)
        except ToolError:
            failed.append(i)
        else:
            assert reply.startswith("sent, message_id"), reply
            if undurable is not None and "NOT known to be durable" in reply:
                undurable.append(i)
            else:
                assert undurable is None or "Durable: 1 replica(s)" in reply, reply
                acked.append(i)
        i += 1


def numbers(agent: Agent) -> list[int]:
    return [int(m["content"][1:]) for m in agent.channel() if re.fullmatch(r"n\d+",
                                                                            m["content"])]


@pytest.mark.slow
async def test_a_primary_dies_while_messages_flow(cluster: Cluster, tmp_path: Path) -> None:
    room = "failover"
    primary = cluster.owner(f"bridge:{{{room}}}:log")
    [replica] = replica_of(cluster, primary.port)
    async with agent_pool(cluster.url, tmp_path) as pool:
        alice = await pool.start("alice", "--room", room, env=dict(FAILOVER_ENV))
        bob = await pool.start("bob", "--room", room, env=dict(FAILOVER_ENV))
        failed_over = anyio.Event()
        acked: list[int] = []
        failed: list[int] = []
        undurable: list[int] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(send_numbered, alice, "bob", 40, failed_over, acked, failed,
                          undurable if STRICT else None)
            await bob.wait_messages(10, timeout=30)
            primary.kill()
            killed = time.monotonic()
            with anyio.fail_after(30):
                while cluster.owner(f"bridge:{{{room}}}:log").port != replica:
                    await anyio.sleep(0.1)
            failover = time.monotonic() - killed
            after = len(acked) + len(failed) + len(undurable) + 1  # once the replica took over
            seen = len(numbers(bob))
            # receivers resume: bob hears a message sent after the failover, in seconds
            await bob.wait_for(lambda: len(numbers(bob)) > seen, timeout=10,
                               what="a message after the failover")
            resumed = time.monotonic() - killed
            await anyio.sleep(0)  # (then let the sender run a few more through)
            await bob.wait_for(lambda: len(numbers(bob)) > seen + 5, timeout=15)
            failed_over.set()
        last = acked[-1]
        await bob.wait_for(lambda: last in numbers(bob), timeout=15, what="the last message")
        got = numbers(bob)
        print(f"failover {failover:.1f} s, bob resumed {resumed:.1f} s after the kill; "
              f"{len(acked)} sends acknowledged durable, {len(undurable)} not known to be "
              f"durable, {len(failed)} failed cleanly, {len(set(acked) - set(got))} "
              f"acknowledged but lost")
        assert len(got) == len(set(got)), got  # exactly once
        assert got == sorted(got), got  # in order
        assert set(got) <= set(acked) | set(failed) | set(undurable)  # nothing invented
        if STRICT:
            assert set(acked) <= set(got)
        assert set(got) >= {n for n in acked if n >= after}  # after the failover: all
    primary.start()  # back, as a replica of the new primary: the cluster is whole again
    primary.wait_up()
    cluster.wait_ok()
    cluster.wait_replicas()


def migrate_slot(cluster: Cluster, key: str, target: redis.Redis) -> None:
    """Move ``key``'s slot to ``target`` as `redis-cli --cluster reshard` does: IMPORTING,
    MIGRATING, MIGRATE the keys in batches, then SETSLOT NODE everywhere."""
    source = cluster.owner(key).client()
    slot = cluster.slot(key)
    source_id = source.execute_command("CLUSTER", "MYID").decode()
    target_id = target.execute_command("CLUSTER", "MYID").decode()
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    port = target.connection_pool.connection_kwargs["port"]
    while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 2):
        source.execute_command("MIGRATE", "127.0.0.1", port, "", 0, 5000, "KEYS", *keys)
        time.sleep(0.05)  # (a busy room: sends go on between the batches)
    for node in cluster.primaries():
        node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


@pytest.mark.slow
async def test_a_busy_rooms_slot_moves_to_another_node(cluster: Cluster,
                                                      cluster_agents: Agents) -> None:
    room = "moving"
    key = f"bridge:{{{room}}}:log"
    source = cluster.owner(key)
    target = next(node for node in cluster.primaries() if node.port != source.port)
    alice = await cluster_agents.start("alice", "--room", room)
    bob = await cluster_agents.start("bob", "--room", room)
    moved = anyio.Event()
    acked: list[int] = []
    failed: list[int] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(send_numbered, alice, "bob", 20, moved, acked, failed)
        await bob.wait_messages(5, timeout=30)
        await anyio.to_thread.run_sync(migrate_slot, cluster, key, target.client())
        assert cluster.owner(key).port == target.port
        seen = len(numbers(bob))
        await bob.wait_for(lambda: len(numbers(bob)) > seen + 5, timeout=20,
                           what="messages after the move")
        moved.set()
    await bob.wait_for(lambda: acked[-1] in numbers(bob), timeout=15)
    got = numbers(bob)
    assert failed == []  # a move is no outage: every send went through
    assert got == acked  # each once, in order, none lost
    assert any(e.get("event") == "redis_connection_lost" and "slot moved" in e.get("error", "")
               for e in bob.log_events())  # bob did follow the room to its new node


async def test_a_durable_send_waits_for_the_replica_of_its_rooms_primary(
        cluster: Cluster, tmp_path: Path) -> None:
    """The WAIT goes to the node that ran the send. One shard's replica is down: a send in
    that shard's room is said not to be durable, a send in the other shards' rooms is said
    durable. (A WAIT sent to any other node, which has no write of ours to wait for, answers
    at once with that node's replicas: one of the two would come out wrong.)"""
    rooms: dict[int, str] = {}  # primary's port -> a room it serves
    for i in range(100):
        rooms.setdefault(cluster.owner(f"bridge:{{durable{i}}}:log").port, f"durable{i}")
    assert len(rooms) == 3
    down_port, down_room = next(iter(rooms.items()))
    [replica_port] = replica_of(cluster, down_port)
    env = {"BRIDGE_MIN_REPLICAS": "1", "BRIDGE_MIN_REPLICAS_TIMEOUT": "0.5"}
    async with agent_pool(cluster.url, tmp_path) as pool:
        senders = {room: await pool.start("alice", "--room", room, env=dict(env))
                   for room in rooms.values()}
        for sender in senders.values():
            assert "Durable: 1 replica(s)" in await sender.tool("send_message", to="*",
                                                                text="one")
        replica = cluster.node(replica_port)
        replica.kill()
        try:
            for room, sender in senders.items():
                reply = await sender.tool("send_message", to="*", text="two")
                expected = "NOT known to be durable" if room == down_room else "Durable: 1"
                assert expected in reply, (room, reply)
        finally:
            replica.start()
            replica.wait_up()
    cluster.wait_ok()
    cluster.wait_replicas()


async def test_a_primary_without_bridges_functions_gets_them_on_the_first_send(
        cluster: Cluster, cluster_agents: Agents) -> None:
    """A node that joined later has no functions (a replica gets its primary's; a new primary
    has none): the first send there answers "Function not found", the agent loads the library
    on every primary and sends again, once."""
    room = "newnode"
    primary = cluster.owner(f"bridge:{{{room}}}:log")
    alice = await cluster_agents.start("alice", "--room", room)
    bob = await cluster_agents.start("bob", "--room", room)
    await alice.tool("send_message", to="bob", text="before")
    primary.client().execute_command("FUNCTION", "FLUSH")  # (replicated to its replica)
    assert primary.client().execute_command("FUNCTION", "LIST") == []
    reply = await alice.tool("send_message", to="bob", text="after")
    assert reply.startswith("sent, message_id"), reply
    await bob.wait_messages(2)
    assert [m["content"] for m in bob.channel()] == ["before", "after"]
    assert primary.client().execute_command("FUNCTION", "LIST") != []


async def test_a_stuck_reader_holds_the_log_and_the_sender_back_on_the_cluster(
        cluster_agents: Agents) -> None:
    # retention (bridge/room/retention.py) reads the holders' cursor keys by name, in the
    # room's slot: the log is kept for bob, who does not read, and then alice is held back
    env = {"BRIDGE_LOG_MAXLEN": "100", "BRIDGE_BACKLOG_MAX": "150",
           "BRIDGE_LOG_HARD_MAXLEN": "1000"}
    room = "retention"
    alice = await cluster_agents.start("alice", "--room", room, env=dict(env))
    await cluster_agents.start("bob", "--room", room, "--delivery", "pull", env=dict(env))
    carol = await cluster_agents.start("carol", "--room", room, env=dict(env))
    for i in range(150):
        await alice.tool("send_message", to="bob", text=f"m:{i}")
    with pytest.raises(ToolError, match="bob is 150 messages behind"):
        await alice.tool("send_message", to="bob", text="one too many")
    answer = await alice.tool("send_message", to="*", text="to all")
    assert "Not queued for bob: 150 messages behind" in answer, answer
    [got] = await carol.wait_messages(1)
    assert got["content"] == "to all"


async def test_the_task_board_works_on_every_shard(cluster: Cluster) -> None:
    # one room per primary: the task function and the board's reads run on its slot's node
    rooms = {cluster.owner(f"bridge:{{{room}}}:tasks").port: room for room in ROOMS}
    assert len(rooms) == 3
    for room in rooms.values():
        where = ("--redis", cluster.url, "--room", room)
        for args in (("add", "first"), ("add", "second", "--waits-for", "t1"),
                     ("done", "t1")):
            done = await bridge("tasks", *args, *where)
            assert done.returncode == 0, done.stderr
        listed = json.loads((await bridge("tasks", "--json", *where)).stdout)
        assert [(t["id"], t["status"]) for t in listed["tasks"]] == [("t2", "open"),
                                                                    ("t1", "done")]
        shown = json.loads((await bridge("tasks", "show", "t2", "--json", *where)).stdout)
        assert shown["waits_for"] == ["t1"] and len(shown["history"]) == 1
