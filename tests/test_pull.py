"""Pull mode: nothing is pushed; read_messages long-polls; every result counts the unread."""

from __future__ import annotations

import anyio
import pytest

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
