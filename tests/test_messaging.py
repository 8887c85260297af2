"""Direct, multi and broadcast messages between real `bridge serve` processes."""

from __future__ import annotations

import json

import pytest

from tests.support.mcp_client import ToolError

pytestmark = pytest.mark.anyio


async def test_direct_message_is_pushed_with_meta(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    result = await alice.tool("send_message", to="bob", text="hello bob")
    assert "sent, message_id" in result and "bob" in result

    [push] = await bob.wait_messages(1)
    assert push["content"] == "hello bob"
    meta = push["meta"]
    assert meta["from"] == "alice" and meta["to"] == "bob" and meta["kind"] == "message"
    assert meta["message_id"] in result
    assert all(isinstance(v, str) for v in meta.values())
    # reply_to only when set, role when the sender has one; host as the sender's record says
    assert set(meta) == {"from", "to", "message_id", "kind", "host"}


async def test_reply_carries_reply_to(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    await alice.tool("send_message", to="bob", text="question")
    [question] = await bob.wait_messages(1)
    await bob.tool("send_message", to="alice", text="answer",
                   reply_to=question["meta"]["message_id"])
    [answer] = await alice.wait_messages(1)
    assert answer["content"] == "answer"
    assert answer["meta"]["reply_to"] == question["meta"]["message_id"]


async def test_three_agents_direct_multi_broadcast_reach_only_their_recipients(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    carol = await agents.start("carol")

    await alice.tool("send_message", to="bob", text="only-bob")
    await alice.tool("send_message", to=["bob", "carol"], text="bob-and-carol")
    broadcast = await bob.tool("send_message", to="*", text="everyone")
    assert "alice" in broadcast and "carol" in broadcast

    await bob.wait_messages(2)
    await carol.wait_messages(2)
    await alice.wait_messages(1)
    # a marker sent last: once it arrives, anything misdirected would have arrived too
    await carol.tool("send_message", to="*", text="marker")
    for agent in (alice, bob):
        await agent.wait_for(lambda a=agent: any(m["content"] == "marker" for m in a.channel()))

    assert [m["content"] for m in bob.channel()] == ["only-bob", "bob-and-carol", "marker"]
    assert [m["content"] for m in carol.channel()] == ["bob-and-carol", "everyone"]
    assert [m["content"] for m in alice.channel()] == ["everyone", "marker"]
    assert carol.channel()[1]["meta"]["to"] == "*"


async def test_overlapping_sends_keep_call_order(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    count = 200
    # fire every call before reading any response: the calls overlap in the server
    for i in range(count):
        await alice.send_request(1000 + i, "tools/call",
                                 {"name": "send_message",
                                  "arguments": {"to": "bob", "text": f"m{i}"}})
    for i in range(count):
        result = await alice.response(1000 + i)
        assert not result.get("isError"), result
    messages = await bob.wait_messages(count)
    assert [m["content"] for m in messages] == [f"m{i}" for i in range(count)]
    ids = [tuple(map(int, m["meta"]["message_id"].split("-"))) for m in messages]
    assert ids == sorted(ids)


async def test_message_to_known_offline_agent_is_queued_and_delivered_on_return(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    await bob.close_stdin()
    assert await bob.wait_exit() == 0
    result = await alice.tool("send_message", to="bob", text="while you were away")
    assert "queued" in result and "bob" in result

    bob_again = await agents.start("bob")
    [push] = await bob_again.wait_messages(1)
    assert push["content"] == "while you were away"


async def test_unknown_recipient_lists_who_is_here(agents):
    alice = await agents.start("alice")
    await agents.start("bob")
    with pytest.raises(ToolError) as error:
        await alice.tool("send_message", to="zed", text="hi")
    text = str(error.value)
    assert "unknown recipient" in text and "zed" in text and "bob" in text
    assert "Nothing was sent" in text


async def test_empty_and_oversized_and_self_are_tool_errors(agents, r):
    alice = await agents.start("alice", "--max-bytes", "100")
    await agents.start("bob")
    with pytest.raises(ToolError, match="empty"):
        await alice.tool("send_message", to="bob", text="   ")
    with pytest.raises(ToolError, match="101 bytes, over the limit of 100"):
        await alice.tool("send_message", to="bob", text="x" * 101)
    with pytest.raises(ToolError, match="not yourself"):
        await alice.tool("send_message", to="alice", text="me")
    with pytest.raises(ToolError, match="not a valid agent name"):
        await alice.tool("send_message", to="Bad Name!", text="hi")
    with pytest.raises(ToolError, match="not a message id"):
        await alice.tool("send_message", to="bob", text="hi", reply_to="nope")
    assert r.xlen("bridge:{main}:log") == 0  # nothing was logged
    # and the server still serves
    assert "sent" in await alice.tool("send_message", to="bob", text="x" * 100)


async def test_log_holds_readable_fields(agents, r):
    alice = await agents.start("alice")
    await agents.start("bob")
    await alice.tool("send_message", to="bob", text="in the log", reply_to="")
    [(entry_id, fields)] = r.xrange("bridge:{main}:log")
    assert fields[b"from"] == b"alice" and fields[b"to"] == b"bob"
    assert fields[b"text"] == b"in the log" and fields[b"kind"] == b"message"


async def test_rooms_are_isolated(agents):
    alice = await agents.start("alice", "--room", "red")
    bob_red = await agents.start("bob", "--room", "red")
    bob_blue = await agents.start("bob", "--room", "blue")  # same name, other room: fine
    await alice.tool("send_message", to="*", text="red only")
    await bob_red.wait_messages(1)
    with pytest.raises(ToolError, match="unknown recipient"):
        await bob_blue.tool("send_message", to="alice", text="hi")
    assert bob_blue.channel() == []


async def test_stdout_carries_only_json_rpc(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    await alice.tool("send_message", to="bob", text="x")
    await bob.wait_messages(1)
    await bob.tool("list_participants")
    await bob.close_stdin()
    await bob.wait_exit()
    await bob.wait_for(lambda: bob.stdout_closed, what="stdout EOF")
    assert bob.raw_stdout
    for line in bob.raw_stdout:
        message = json.loads(line)
        assert message["jsonrpc"] == "2.0"
    # and the logs went to stderr, as JSON lines
    events = [e["event"] for e in bob.log_events()]
    assert "joined" in events and "left" in events


async def test_pushed_messages_are_not_pushed_again_after_restart(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    await alice.tool("send_message", to="bob", text="once")
    await bob.wait_messages(1)
    await bob.close_stdin()  # a graceful exit flushes the cursor
    await bob.wait_exit()
    await alice.tool("send_message", to="bob", text="twice?")
    bob_again = await agents.start("bob")
    await bob_again.wait_messages(1)
    await alice.tool("send_message", to="bob", text="marker")
    await bob_again.wait_messages(2)
    assert [m["content"] for m in bob_again.channel()] == ["twice?", "marker"]


async def test_wrong_argument_types_are_clear_tool_errors(agents):
    alice = await agents.start("alice")
    await agents.start("bob")
    cases = [
        ({"to": 5, "text": "x"}, "`to` must be"),
        ({"to": ["bob", 3], "text": "x"}, "`to` must be"),
        ({"to": "bob"}, "`text` must be a string"),
        ({"to": "bob", "text": {"a": 1}}, "`text` must be a string"),
        ({"to": "bob", "text": "x", "reply_to": 12}, "`reply_to` must be"),
        ({"to": [], "text": "x"}, "no recipient"),
    ]
    for arguments, expected in cases:
        with pytest.raises(ToolError, match=expected):
            await alice.tool("send_message", **arguments)
    with pytest.raises(ToolError, match="wait_seconds must be a number"):
        await alice.tool("read_messages", wait_seconds="soon")
    with pytest.raises(ToolError, match="`text` must be a string"):
        await alice.tool("set_status", text=None)
    assert "sent" in await alice.tool("send_message", to="bob", text="fine")


async def test_hostile_tool_arguments_are_clear_tool_errors(agents, r):
    """Names that only look valid, text that is not Unicode, and over-long lists: refused
    with what to do, nothing logged, and the server keeps serving."""
    alice = await agents.start("alice")
    await agents.start("bob")
    cases = [
        ({"to": "bob\n", "text": "x"}, "not a valid agent name"),  # "$" would have let it by
        ({"to": ["bob", "bob\n"], "text": "x"}, "not a valid agent name"),
        ({"to": "bob", "text": "half a pair \ud800"}, "not valid Unicode"),
        ({"to": "bob", "text": "x", "reply_to": "1-0\n"}, "not a message id"),
        ({"to": "bob", "text": "x", "reply_to": "١٧٣٢-٠"}, "not a message id"),
        ({"to": [f"n{i}" for i in range(65)], "text": "x"}, "65 recipients is over the limit"),
    ]
    for arguments, expected in cases:
        with pytest.raises(ToolError, match=expected):
            await alice.tool("send_message", **arguments)
    assert r.xlen("bridge:{main}:log") == 0
    assert "sent" in await alice.tool("send_message", to="bob", text="fine")


async def test_read_messages_in_push_mode_does_not_stop_the_pushes(agents):
    """read_messages works in push mode too; a call that finds nothing must not leave the
    pusher waiting for a wake-up that never comes."""
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    assert "No messages waiting" in await bob.tool("read_messages")
    await alice.tool("send_message", to="bob", text="still pushed")
    [push] = await bob.wait_messages(1)
    assert push["content"] == "still pushed"
