"""Presence: claim, heartbeat, status, graceful leave, expiry after a crash."""

from __future__ import annotations

import contextlib
import os
import signal
import socket

import anyio
import pytest

from tests.support.mcp_client import PROTOCOL_VERSION, Agent

pytestmark = pytest.mark.anyio


def events(agent, kind):
    return [m for m in agent.channel(kind)]


async def test_presence_record_and_listing(agents, r):
    alice = await agents.start("alice", "--role", "manager")
    await agents.start("bob", "--role", "developer", "--delivery", "pull")
    record = {k.decode(): v.decode() for k, v in r.hgetall("bridge:{main}:agent:bob").items()}
    assert record["name"] == "bob" and record["role"] == "developer"
    assert record["delivery"] == "pull" and record["pid"].isdigit() and record["session"]
    assert 0 < r.ttl("bridge:{main}:agent:bob") <= 15
    assert r.zscore("bridge:{main}:agents", "bob") is not None

    listing = await alice.tool("list_participants")
    assert "alice (you): role manager" in listing
    assert "- bob: role developer" in listing and "delivery pull" in listing
    assert "last seen" in listing


async def test_joined_status_and_graceful_leave_events(agents, r):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    [joined] = await alice.wait_for(lambda: events(alice, "joined"))
    assert joined["meta"]["from"] == "bob" and "bob joined" in joined["content"]

    await bob.tool("set_status", text="writing the API")
    [status] = await alice.wait_for(lambda: events(alice, "status"))
    assert "writing the API" in status["content"]
    assert "status writing the API" in await alice.tool("list_participants")

    await bob.close_stdin()  # the client went away: leave at once, not after the TTL
    assert await bob.wait_exit() == 0
    [left] = await alice.wait_for(lambda: events(alice, "left"))
    assert left["meta"]["from"] == "bob" and "timed out" not in left["content"]
    assert not r.exists("bridge:{main}:agent:bob")
    assert r.zscore("bridge:{main}:agents", "bob") is None


async def test_sigterm_leaves_gracefully(agents, r):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    bob.process.send_signal(signal.SIGTERM)
    assert await bob.wait_exit() == 0
    await alice.wait_for(lambda: events(alice, "left"))
    assert not r.exists("bridge:{main}:agent:bob")


async def test_crashed_agent_expires_after_ttl(agents, r):
    alice = await agents.start("alice", "--ttl", "1")
    bob = await agents.start("bob", "--ttl", "1")
    bob.process.kill()
    await bob.wait_exit()
    # bob's record expires; alice's heartbeat prunes it and announces that bob left
    [left] = await alice.wait_for(lambda: events(alice, "left"), timeout=10)
    assert left["meta"]["from"] == "bob" and "timed out" in left["content"]
    assert not r.exists("bridge:{main}:agent:bob")
    listing = await alice.tool("list_participants")
    assert "bob" not in listing and "alice (you)" in listing
    assert r.exists("bridge:{main}:agent:alice")  # the heartbeat kept alice alive


async def start_refused(agents, name: str) -> Agent:
    """Start an agent whose name is taken, and wait for it to give up: it tries to join once
    initialize arrives, and stops (initialize stays unanswered)."""
    agent = await agents.start(name, handshake=False)
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError,
                             BrokenPipeError):
        await agent.send_request(1, "initialize", {"protocolVersion": PROTOCOL_VERSION,
                                                   "capabilities": {}, "clientInfo": {}})
    assert await agent.wait_exit() == 1, agent.stderr()
    return agent


async def test_duplicate_name_is_refused_with_holder(agents):
    first = await agents.start("alice")
    second = await agents.start("alice", handshake=False)
    # it tries to join once initialize arrives, and stops (initialize stays unanswered)
    await second.send_request(1, "initialize", {"protocolVersion": PROTOCOL_VERSION,
                                                "capabilities": {}, "clientInfo": {}})
    assert await second.wait_exit() == 1
    error = second.stderr()
    assert "already taken" in error and f"pid {first.process.pid}" in error
    assert os.uname().nodename in error
    # the first alice is unharmed
    assert "alice (you)" in await first.tool("list_participants")


async def logged(agent: Agent, event: str) -> dict:
    """The agent's first log line of ``event``, waited for (its stderr is a file)."""
    with anyio.fail_after(20):
        while not (found := [e for e in agent.log_events() if e.get("event") == event]):
            assert agent.process.returncode is None, agent.stderr()[-2000:]
            await anyio.sleep(0.05)
    return found[0]


async def test_a_second_server_of_the_same_client_serves_and_the_first_steps_aside(agents, r):
    """A client that starts `bridge serve` twice for one agent (Gemini CLI's ACP mode does):
    the same host, the same parent process (here: this test), the same clientInfo. The
    newer one takes the name and serves; the older one steps aside and keeps serving its
    tools, and takes the name back once the newer has left."""
    key = "bridge:{main}:agent:alice"
    first = await agents.start("alice", "--delivery", "pull", "--ttl", "1")
    second = await agents.start("alice", "--delivery", "pull", "--ttl", "1")
    assert r.hget(key, "pid") == str(second.process.pid).encode()
    assert r.hget(key, "client") == b"bridge-tests 0"
    assert (await logged(second, "sibling_claim_taken_over"))["old_pid"] == \
        str(first.process.pid)
    await logged(first, "stepped_aside")
    bob = await agents.start("bob")
    await bob.tool("send_message", to="alice", text="for the agent, once")
    read = ""
    with anyio.fail_after(20):  # (bob's joined event may come first, in a read of its own)
        while "for the agent, once" not in read:
            read += await second.tool("read_messages", wait_seconds=5)
    # the older one's tools still work, as alice
    await first.tool("send_message", to="bob", text="from the first")
    [push] = await bob.wait_messages(1)
    assert push["meta"]["from"] == "alice" and push["content"] == "from the first"
    assert first.process.returncode is None and "name_lost" not in first.stderr()
    # the newer leaves: the older claims the name again at its next heartbeat
    await second.close_stdin()
    assert await second.wait_exit() == 0
    await logged(first, "presence_lost")
    with anyio.fail_after(10):
        while r.hget(key, "pid") != str(first.process.pid).encode():
            await anyio.sleep(0.05)


async def test_a_server_of_another_client_or_without_one_is_still_refused(agents, r):
    first = await agents.start("alice")
    for client_info in ({}, {"name": "another-client", "version": "1"}):
        other = await agents.start("alice", handshake=False)
        await other.send_request(1, "initialize", {"protocolVersion": PROTOCOL_VERSION,
                                                   "capabilities": {},
                                                   "clientInfo": client_info})
        assert await other.wait_exit() == 1
        assert "already taken" in other.stderr()
    assert r.hget("bridge:{main}:agent:alice", "pid") == str(first.process.pid).encode()


async def test_name_is_free_again_after_leave(agents):
    first = await agents.start("alice")
    await first.close_stdin()
    await first.wait_exit()
    second = await agents.start("alice")
    assert "alice (you)" in await second.tool("list_participants")


async def test_derived_name_is_logged(agents):
    agent = await agents.start(None)
    [derived] = [e for e in agent.log_events() if e["event"] == "name_derived"]
    assert derived["name"] in await agent.tool("list_participants")


async def test_set_status_without_text_is_allowed_and_empty_listing_is_clear(agents):
    alice = await agents.start("alice")
    assert "status set" in await alice.tool("set_status", text="")
    with pytest.raises(RuntimeError, match="-32602.*Unknown tool"):  # a protocol error
        await alice.tool("no_such_tool")


async def test_listing_survives_separator_characters_and_hand_written_records(agents, r):
    """The LIST script joins each record's fields with 0x1f: a status holding one is shown
    with a space, and a record written by hand that would not split is left out."""
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    await bob.tool("set_status", text="step\x1fone")
    r.hset("bridge:{main}:agent:bob", "role", "dev\x1fops")  # only redis-cli can do this
    listing = await alice.tool("list_participants")
    assert "alice (you)" in listing and "- bob" not in listing
    r.hset("bridge:{main}:agent:bob", "role", "devops")
    listing = await alice.tool("list_participants")
    assert "- bob: role devops" in listing and "status step one" in listing


async def test_a_claim_held_from_another_host_must_expire_before_the_name_is_taken(agents, r):
    """Issue 11 item 21: a live claim from another host (a fresh last_seen, a TTL, a pid that
    means nothing here) is not taken over: `bridge serve` under that name is refused until
    the claim expires, then it gets the name."""
    key = "bridge:{main}:agent:alice"
    seconds, micros = r.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    ttl_ms = 4000
    r.hset(key, mapping={  # what an agent on host "elsewhere" writes when it claims the name
        "name": "alice", "role": "developer", "host": "elsewhere", "pid": str(2**22 + 1),
        "session": "0123456789abcdef", "status": "", "joined_at": now_ms,
        "last_seen": now_ms, "delivery": "push", "version": "0"})
    r.pexpire(key, ttl_ms)
    r.zadd("bridge:{main}:agents", {"alice": now_ms + ttl_ms})
    assert socket.gethostname() != "elsewhere"

    refused = await start_refused(agents, "alice")
    assert "already taken" in refused.stderr() and "host elsewhere" in refused.stderr()
    assert r.hget(key, "host") == b"elsewhere"  # the claim is untouched
    with anyio.fail_after(ttl_ms / 1000 + 10):
        while r.exists(key):  # its TTL, on Redis' clock
            await anyio.sleep(0.05)  # poll interval, bounded by the deadline
    alice = await agents.start("alice")
    assert "alice (you)" in await alice.tool("list_participants")
    assert r.hget(key, "host") == socket.gethostname().encode()
