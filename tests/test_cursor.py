"""The cursor: it lives as long as its agent, follows the room's log when Redis is replaced,
and with a room secret cannot be set back by hand to replay old messages."""

from __future__ import annotations

import shutil
import time

import anyio
import pytest

from tests.support.mcp_client import Agent

pytestmark = pytest.mark.anyio

LOG = "bridge:{main}:log"
SIGNED = {"BRIDGE_SECRET": "a-room-secret-for-tests"}


def contents(agent: Agent) -> list[str]:
    return [m["content"] for m in agent.channel()]


async def test_a_present_agents_cursor_lives_as_long_as_the_agent(agents, r):
    """The heartbeat refreshes the cursor's TTL: an agent quiet for longer than
    BRIDGE_CURSOR_TTL is still known to its room. bob's own cursor writes (the first one, a
    moment after it joins, and one after each push) set the TTL too: the test waits until
    bob has written its cursor over a message, and then has nothing left to write."""
    env = {"BRIDGE_TTL": "1", "BRIDGE_CURSOR_TTL": "60"}
    bob = await agents.start("bob", env=dict(env))
    key = "bridge:{main}:cursor:bob"
    entry_id = r.xadd(LOG, {"from": "alice", "to": "bob", "text": "hello", "reply_to": "",
                            "kind": "message", "ts": str(int(time.time() * 1000)),
                            "seq": str(r.incr("bridge:{main}:seq"))}).decode()
    r.publish("bridge:{main}:to:bob", f'{{"id":"{entry_id}"}}')
    await bob.wait_messages(1)
    with anyio.fail_after(10):  # written after the push (it covers the first write too)
        while not r.get(key).decode().startswith(f"{entry_id} "):
            await anyio.sleep(0.02)
    r.pexpire(key, 3000)  # as if bob had been quiet for all but 3 s of its cursor's life
    with anyio.fail_after(10):  # a heartbeat comes every ttl/3; without one it expires
        while 0 < (ttl := r.pttl(key)) <= 3000:
            await anyio.sleep(0.05)
    assert ttl > 50_000, f"the cursor's TTL was not refreshed (PTTL {ttl})"
    assert r.get(key).decode().startswith(f"{entry_id} ")


def add_from_the_future(r, text: str) -> str:
    """An entry as a server whose clock ran an hour ahead would log it, and its wake-up."""
    ahead_ms = int(time.time() * 1000) + 3_600_000
    entry_id = f"{ahead_ms}-0"
    r.xadd(LOG, {"from": "alice", "to": "bob", "text": text, "reply_to": "",
                 "kind": "message", "ts": str(ahead_ms), "seq": "2"}, id=entry_id)
    r.publish("bridge:{main}:to:bob", f'{{"id":"{entry_id}"}}')
    return entry_id


def replace_redis(redis_server) -> None:
    """A new, empty Redis at the same address: the old one's data is gone."""
    redis_server.stop()
    for path in redis_server.directory.iterdir():
        if "appendonly" in path.name or path.suffix == ".rdb":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    redis_server.start()


async def test_a_new_redis_whose_ids_sort_before_the_cursor_starts_a_new_log(
        agents, redis_server, r):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    await alice.tool("send_message", to="bob", text="on the old redis")
    await bob.wait_messages(1)
    # the old server's clock ran an hour ahead: its last entry, and bob's cursor, are there
    add_from_the_future(r, "from the old clock")
    await bob.wait_messages(2)
    replace_redis(redis_server)
    with anyio.fail_after(30):  # both are back in the room (alice resends until bob is known)
        while True:
            result = await alice.call("send_message", to="bob", text="on the new redis")
            if not result.get("isError"):
                break
            await anyio.sleep(0.1)
    await bob.wait_messages(3, timeout=20)
    assert contents(bob) == ["on the old redis", "from the old clock", "on the new redis"]
    [notice] = bob.channel("notice")
    assert "was reset" in notice["content"]
    assert [e for e in bob.log_events() if e.get("event") == "log_reset"]


async def test_a_log_reset_by_hand_to_now_goes_on_from_its_end(agents, r):
    """docs/security.md's reset of a log dated in the future (XDEL the future entries, XSETID back
    to now): a restarted agent whose cursor is past the log's end goes on from the end."""
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    await alice.tool("send_message", to="bob", text="before")
    await bob.wait_messages(1)
    future = add_from_the_future(r, "future")
    await bob.wait_messages(2)
    await bob.close_stdin()
    assert await bob.wait_exit() == 0
    r.xdel(LOG, future)
    seconds, micros = r.time()
    r.execute_command("XSETID", LOG, f"{seconds * 1000 + micros // 1000}-0")
    bob = await agents.start("bob")
    [notice] = await bob.wait_for(lambda: bob.channel("notice"), what="a notice")
    assert "lost its newest entries" in notice["content"]
    await alice.tool("send_message", to="bob", text="after the reset")
    await bob.wait_messages(1)
    assert contents(bob) == ["after the reset"]


async def test_a_cursor_set_back_by_hand_does_not_replay_signed_messages(agents, r):
    alice = await agents.start("alice", env=dict(SIGNED))
    bob = await agents.start("bob", env=dict(SIGNED))
    for text in ("pay 10 euros", "pay 20 euros"):
        await alice.tool("send_message", to="bob", text=text)
    await bob.wait_messages(2)
    await bob.close_stdin()
    assert await bob.wait_exit() == 0
    key = "bridge:{main}:cursor:bob"
    assert len(r.get(key).split()) == 4  # id, seq, epoch and the MAC
    r.set(key, "0-0 0")  # someone without the secret sets it back
    bob = await agents.start("bob", env=dict(SIGNED))
    [notice] = await bob.wait_for(lambda: bob.channel("notice"), what="a notice")
    assert "not written by this agent with the room secret" in notice["content"]
    await alice.tool("send_message", to="bob", text="marker")
    await bob.wait_messages(1)
    assert contents(bob) == ["marker"]  # the old ones were not delivered again
    assert [e for e in bob.log_events() if e.get("event") == "cursor_unverified"]
