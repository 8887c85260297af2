"""Pull mode: nothing is pushed; read_messages long-polls; every result counts the unread."""

from __future__ import annotations

import json
import os
import subprocess

import anyio
import pytest

from tests.support.mcp_client import BRIDGE

pytestmark = pytest.mark.anyio


async def test_pull_mode_reads_waiting_messages_once(agents, r):
    alice = await agents.start("alice")
    bob = await agents.start("bob", "--delivery", "pull")
    assert "read_messages" in bob.initialize_result["instructions"]
    await alice.tool("send_message", to="bob", text="first")
    await alice.tool("send_message", to="bob", text="second")

    text = await bob.tool("read_messages", wait_seconds=5)
    if "second" not in text:  # the first read may have raced the second message
        text += await bob.tool("read_messages", wait_seconds=5)
    assert text.index("first") < text.index("second")
    assert "from alice to bob" in text
    assert bob.channel(None) == []  # nothing pushed in pull mode

    again = await bob.tool("read_messages", wait_seconds=0)
    assert "No messages waiting" in again  # nothing is delivered twice


async def test_unread_count_in_tool_results(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob", "--delivery", "pull")
    for i in range(3):
        await alice.tool("send_message", to="bob", text=f"m{i}")
    # the messages arrive asynchronously: long-poll for the first, then count the rest
    seen = await bob.tool("read_messages", wait_seconds=5)
    count = seen.count("from alice")
    with anyio.fail_after(30):
        while count < 3:
            seen = await bob.tool("read_messages", wait_seconds=5)
            count += seen.count("from alice")
    assert count == 3
    assert "(no unread messages)" in await bob.tool("list_participants")
    await alice.tool("send_message", to="bob", text="one more")
    # the message reaches bob's server a moment later; ask until it is counted
    with anyio.fail_after(10):
        while "1 unread message(s) waiting: call read_messages" not in (
            await bob.tool("set_status", text="busy")
        ):
            pass
    assert "one more" in await bob.tool("read_messages")


async def test_long_poll_returns_when_a_message_arrives(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob", "--delivery", "pull")
    await bob.send_request(77, "tools/call",
                           {"name": "read_messages", "arguments": {"wait_seconds": 30}})
    await alice.tool("send_message", to="bob", text="wake up")
    result = await bob.response(77, timeout=10)  # far less than the 30 s poll
    assert "wake up" in result["content"][0]["text"]


async def test_long_poll_times_out_empty(agents):
    bob = await agents.start("bob", "--delivery", "pull")
    text = await bob.tool("read_messages", wait_seconds=0.2)
    assert "No messages waiting" in text


async def test_pull_cursor_survives_restart(agents, r):
    alice = await agents.start("alice")
    bob = await agents.start("bob", "--delivery", "pull")
    await alice.tool("send_message", to="bob", text="read before restart")
    assert "read before restart" in await bob.tool("read_messages", wait_seconds=5)
    # asking again acknowledges what the last call returned
    assert "read before restart" not in await bob.tool("read_messages")
    await alice.tool("send_message", to="bob", text="unread at restart")
    await bob.close_stdin()
    await bob.wait_exit()
    bob2 = await agents.start("bob", "--delivery", "pull")
    text = await bob2.tool("read_messages", wait_seconds=5)
    assert "unread at restart" in text and "read before restart" not in text


async def test_pull_mode_pushes_no_events_either(agents):
    """Issue 11 item 21: in pull mode the room's joined, status and left events are returned
    by read_messages, and nothing is pushed for them (nor for a message)."""
    bob = await agents.start("bob", "--delivery", "pull")
    carol = await agents.start("carol")
    await carol.tool("set_status", text="on the parser")
    await carol.tool("send_message", to="bob", text="hello bob")
    await carol.close_stdin()
    assert await carol.wait_exit() == 0
    wanted = ["[event] carol joined the room", "[event] carol set status: on the parser",
              "from carol to bob", "[event] carol left the room"]
    seen = ""
    with anyio.fail_after(30):
        while not all(w in seen for w in wanted):
            seen += await bob.tool("read_messages", wait_seconds=5)
    events = [seen.index(w) for w in wanted if w.startswith("[event]")]
    assert events == sorted(events)  # one channel, in the order they happened
    assert bob.notifications == []  # no channel push, no notification of any kind


async def test_an_unacknowledged_answer_is_returned_again_after_a_restart(agents):
    """What one read_messages returned counts as received only when the agent asks again:
    a session that ends before that gets it again next time (at least once)."""
    alice = await agents.start("alice")
    bob = await agents.start("bob", "--delivery", "pull")
    await alice.tool("send_message", to="bob", text="first")
    assert "first" in await bob.tool("read_messages", wait_seconds=5)
    await bob.close_stdin()
    assert await bob.wait_exit() == 0
    bob2 = await agents.start("bob", "--delivery", "pull")
    assert "first" in await bob2.tool("read_messages", wait_seconds=5)
    assert "first" not in await bob2.tool("read_messages")


async def test_an_answer_the_client_never_read_is_not_lost(agents, redis_server, tmp_path):
    """The client is gone (its stdout closed) when the answer is written: the message must
    come back in the next session."""
    alice = await agents.start("alice")
    out, bob_stdout = os.pipe()  # our own pipe, so that we can close its reading end
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env |= {"BRIDGE_REDIS_URL": redis_server.url, "BRIDGE_LOG_LEVEL": "DEBUG"}
    stderr = tmp_path / "bob-gone.stderr"
    with stderr.open("wb") as stderr_file:
        bob = await anyio.open_process([*BRIDGE, "serve", "--name", "bob", "--delivery", "pull"],
                                       stdin=subprocess.PIPE, stdout=bob_stdout,
                                       stderr=stderr_file, env=env)
    os.close(bob_stdout)
    assert bob.stdin is not None
    for message in (
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "gone", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "read_messages", "arguments": {"wait_seconds": 30}}},
    ):
        await bob.stdin.send(json.dumps(message).encode() + b"\n")
    with anyio.fail_after(15):  # the initialize answer: bob is in the room
        assert b'"id":1' in await anyio.to_thread.run_sync(os.read, out, 65536)
    os.close(out)  # nobody will read the answer to the read_messages call
    await alice.tool("send_message", to="bob", text="into the void")
    with anyio.fail_after(10):  # stdout is closed: the log on stderr says when it failed
        while b"client_gone" not in stderr.read_bytes():
            await anyio.sleep(0.05)
    await bob.stdin.aclose()
    with anyio.fail_after(10):
        assert await bob.wait() == 0
    bob2 = await agents.start("bob", "--delivery", "pull")
    assert "into the void" in await bob2.tool("read_messages", wait_seconds=5)


async def test_messages_already_here_are_read_while_redis_is_down(agents, redis_server, r):
    """read_messages answers from the agent's own inbox without Redis; what it returned is
    not lost when Redis comes back, nor after a restart."""
    alice = await agents.start("alice")
    bob = await agents.start("bob", "--delivery", "pull")
    await alice.tool("send_message", to="bob", text="before the outage")
    assert "before the outage" in await bob.tool("read_messages", wait_seconds=5)
    await alice.tool("send_message", to="bob", text="waiting in the inbox")
    with anyio.fail_after(10):  # until bob's server holds it
        while "1 unread message(s)" not in await bob.tool("set_status", text="x"):
            pass
    r.shutdown()  # writes the append-only file: nothing is lost with it
    text = await bob.tool("read_messages")
    assert "waiting in the inbox" in text and "before the outage" not in text
    redis_server.start()
    await bob.close_stdin()
    assert await bob.wait_exit() == 0
    bob2 = await agents.start("bob", "--delivery", "pull")
    again = await bob2.tool("read_messages", wait_seconds=5)
    # returned once but never acknowledged: it comes again; the acknowledged one does not
    assert "waiting in the inbox" in again and "before the outage" not in again


async def test_numbers_that_are_not_seconds_are_refused(agents):
    bob = await agents.start("bob", "--delivery", "pull")
    for bad in ("NaN", '"nan"', '" NaN "', "Infinity", "-1", "true", '"5"', "301"):
        line = ('{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":'
                '"read_messages","arguments":{"wait_seconds":' + bad + "}}}\n")
        assert bob.process.stdin is not None
        await bob.process.stdin.send(line.encode())
        result = await bob.response(3, timeout=5)
        assert result["isError"], bad
        assert "wait_seconds must be a number of seconds from 0 to 300" in \
            result["content"][0]["text"]
    assert await bob.request("ping", timeout=5) == {}  # still serving


async def initialized_as(agents, name: str, client_info: dict, capabilities: dict, *args: str):
    """An agent whose client introduces itself with ``client_info`` and ``capabilities``."""
    from tests.support.mcp_client import PROTOCOL_VERSION

    agent = await agents.start(name, *args, handshake=False)
    agent.initialize_result = await agent.request("initialize", {
        "protocolVersion": PROTOCOL_VERSION, "capabilities": capabilities,
        "clientInfo": client_info})
    await agent.notify("notifications/initialized")
    return agent


def delivery_logged(agent) -> list[dict]:
    return [e for e in agent.log_events() if e.get("event") == "delivery"]


async def test_under_auto_a_client_that_shows_no_channel_gets_pull_and_loses_nothing(agents):
    """Without Claude Code's inbox, --delivery auto used to push channel notifications to any
    client: one that drops them (Gemini CLI, Cursor, …) lost the messages, while the cursor
    moved past them. Now only Claude Code, or a client that declares claude/channel, gets the
    channel; any other reads with read_messages."""
    alice = await agents.start("alice")
    gem = await initialized_as(agents, "gem", {"name": "gemini-cli-mcp-client",
                                               "version": "0.61.0"}, {"roots": {}})
    assert delivery_logged(gem)[-1]["path"] == "pull"
    assert "Gemini CLI (gemini-cli-mcp-client 0.61.0)" in delivery_logged(gem)[-1]["reason"]
    assert "read_messages(wait_seconds=30)" in gem.initialize_result["instructions"]
    other = await initialized_as(agents, "ed", {"name": "some-editor", "version": "3"}, {})
    assert delivery_logged(other)[-1]["path"] == "pull"
    for name in ("gem", "ed"):
        await alice.tool("send_message", to=name, text=f"for {name}")
    assert "for gem" in await gem.tool("read_messages", wait_seconds=10)
    assert "for ed" in await other.tool("read_messages", wait_seconds=10)
    assert gem.channel(None) == [] and other.channel(None) == []
    assert "delivery pull (gemini-cli-mcp-client 0.61.0)" in await alice.tool(
        "list_participants")


async def test_claude_code_or_a_declared_channel_or_an_explicit_flag_keeps_the_channel(agents):
    alice = await agents.start("alice")
    claude = await initialized_as(agents, "cc", {"name": "claude-code", "version": "2.1.328"},
                                  {"roots": {}})
    declared = await initialized_as(agents, "dc", {"name": "x", "version": "1"},
                                    {"experimental": {"claude/channel": {}}})
    asked = await initialized_as(agents, "ask", {"name": "y", "version": "1"}, {},
                                 "--delivery", "channel")
    for agent in (claude, declared, asked):
        assert [e["path"] for e in delivery_logged(agent)] == ["channel"]
        await alice.tool("send_message", to=agent.name, text=f"to {agent.name}")
        [push] = await agent.wait_messages(1)
        assert push["content"] == f"to {agent.name}"
