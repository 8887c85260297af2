"""The JSON-RPC session held to the letter of the MCP specification: every request gets an
answer however it is nested, batches in the revisions that have them (and a clear refusal in
those that removed them), and protocol errors where the specification lists them. Every reply
is checked against the SDK's own models."""

from __future__ import annotations

import json
from typing import Any

import anyio
import mcp.types as types
import pytest

from bridge.mcp.nesting import MAX_NESTING
from tests.conftest import Agents
from tests.support.mcp_client import Agent
from tests.test_protocol import raw_reply, sdk_valid

pytestmark = pytest.mark.anyio


async def start_with_revision(agents: Agents, name: str, revision: str, *args: str) -> Agent:
    agent = await agents.start(name, *args, handshake=False)
    result = await agent.request("initialize", {
        "protocolVersion": revision, "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}})
    assert result["protocolVersion"] == revision
    await agent.notify("notifications/initialized")
    return agent


async def batch_reply(agent: Agent, batch: list[Any]) -> list[dict[str, Any]]:
    """Send ``batch`` on one line; return the one array that answers it, each element
    checked against the SDK's models."""
    assert agent.process.stdin is not None
    seen = len(agent.batches)
    await agent.process.stdin.send(json.dumps(batch).encode() + b"\n")
    await agent.wait_for(lambda: len(agent.batches) > seen, what="a batch reply")
    answers = agent.batches[seen]
    assert answers, "an empty array is never a valid answer"
    return [sdk_valid(answer) for answer in answers]


def request(request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def call(request_id: Any, tool: str, **arguments: Any) -> dict[str, Any]:
    return request(request_id, "tools/call", {"name": tool, "arguments": arguments})


# ------------------------------------------------------------------ item 7: deep nesting
async def test_a_deeply_nested_request_gets_an_answer(agents: Agents) -> None:
    alice = await agents.start("alice")
    deep = b"[" * 100_000 + b"]" * 100_000
    first = await raw_reply(alice, b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":'
                                   b'{"name":"send_message","arguments":{"to":' + deep +
                            b',"text":"hi"}}}', 5)
    assert first["error"]["code"] == -32600
    assert "nested more than" in first["error"]["message"]
    # the id may come after the deep part, and brackets inside strings do not count
    late = await raw_reply(alice, b'{"jsonrpc":"2.0","method":"tools/call","params":{"a":"]]}",'
                                  b'"b":' + deep + b'},"id":"late"}', "late")
    assert late["error"]["code"] == -32600
    # deeper than bridge reads, though json itself would still parse it
    moderate = b"[" * (MAX_NESTING + 5) + b"]" * (MAX_NESTING + 5)
    refused = await raw_reply(alice, b'{"jsonrpc":"2.0","id":6,"method":"tools/call","params":'
                                     b'{"name":"set_status","arguments":{"text":' + moderate +
                              b"}}}", 6)
    assert refused["error"]["code"] == -32600
    # no id to answer to: a parse error with id null, as JSON-RPC says
    for line in (deep, b'{"jsonrpc":"2.0","method":"ping","params":' + deep + b"}"):
        anonymous = await raw_reply(alice, line, None)
        assert anonymous["error"]["code"] == -32700
        assert "nested more than" in anonymous["error"]["message"]
    assert await alice.request("ping") == {}
    assert alice.process.returncode is None


# ------------------------------------------------------------------ item 15: batches
async def test_a_batch_is_answered_in_one_array_in_2025_03_26(agents: Agents) -> None:
    alice = await start_with_revision(agents, "alice", "2025-03-26")
    bob = await agents.start("bob")
    answers = await batch_reply(alice, [
        request("b1", "ping"),
        request(2, "tools/list"),
        call("b3", "send_message", to="bob", text="from a batch"),
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}},
        42,
        request("b5", "resources/list"),
        call("b6", "format_disk"),
    ])
    by_id = {answer["id"]: answer for answer in answers}
    assert len(answers) == 6 and set(by_id) == {"b1", 2, "b3", None, "b5", "b6"}
    assert by_id["b1"]["result"] == {}
    types.ListToolsResult.model_validate(by_id[2]["result"])
    sent = types.CallToolResult.model_validate(by_id["b3"]["result"])
    assert not sent.isError
    assert by_id[None]["error"]["code"] == -32600
    assert by_id["b5"]["error"]["code"] == -32601
    assert by_id["b6"]["error"]["code"] == -32602
    await bob.wait_for(lambda: any(m["content"] == "from a batch" for m in bob.channel()))


async def test_the_requests_of_a_batch_run_concurrently_and_can_be_cancelled(
        agents: Agents) -> None:
    alice = await agents.start("alice")
    bob = await start_with_revision(agents, "bob", "2025-03-26", "--delivery", "pull")
    assert bob.process.stdin is not None
    # bob's read waits for alice's answer, which she sends only once she has bob's question,
    # which the second element of the same batch sends: one at a time, this never completes
    seen = len(bob.batches)
    await bob.process.stdin.send(json.dumps([
        call("wait", "read_messages", wait_seconds=60),
        call("ask", "send_message", to="alice", text="question"),
    ]).encode() + b"\n")
    await alice.wait_for(lambda: any(m["content"] == "question" for m in alice.channel()))
    await alice.tool("send_message", to="bob", text="answer")
    await bob.wait_for(lambda: len(bob.batches) > seen, what="the batch's answers")
    answers = {answer["id"]: sdk_valid(answer) for answer in bob.batches[seen]}
    assert set(answers) == {"wait", "ask"}
    assert "answer" in answers["wait"]["result"]["content"][0]["text"]
    # a cancelled element gets no answer; the rest of its batch still does
    seen = len(bob.batches)
    await bob.process.stdin.send(json.dumps([
        call("long", "read_messages", wait_seconds=60), request("quick", "ping"),
    ]).encode() + b"\n")
    await bob.notify("notifications/cancelled", {"requestId": "long"})
    await bob.wait_for(lambda: len(bob.batches) > seen, what="the batch's answers")
    assert [answer["id"] for answer in bob.batches[seen]] == ["quick"]


async def test_batch_edge_cases_in_2025_03_26(agents: Agents) -> None:
    alice = await start_with_revision(agents, "alice", "2025-03-26")
    empty = await raw_reply(alice, b"[]", None)
    assert empty["error"]["code"] == -32600 and "empty" in empty["error"]["message"]
    # initialize must not be batched: that element is refused, the others are served
    answers = await batch_reply(alice, [
        request("init", "initialize", {"protocolVersion": "2025-03-26", "capabilities": {},
                                       "clientInfo": {"name": "t", "version": "0"}}),
        request("p", "ping")])
    by_id = {answer["id"]: answer for answer in answers}
    assert by_id["init"]["error"]["code"] == -32600
    assert "initialize" in by_id["init"]["error"]["message"]
    assert by_id["p"]["result"] == {}
    # only notifications: no answer at all (the ping after it is answered, nothing else)
    seen = len(alice.batches)
    assert alice.process.stdin is not None
    await alice.process.stdin.send(b'[{"jsonrpc":"2.0","method":"notifications/made_up"}]\n')
    assert await alice.request("ping") == {}
    assert len(alice.batches) == seen


async def test_a_batch_in_2024_11_05_is_answered(agents: Agents) -> None:
    alice = await start_with_revision(agents, "alice", "2024-11-05")
    answers = await batch_reply(alice, [request(1, "ping"), request(2, "ping")])
    assert sorted(answer["id"] for answer in answers) == [1, 2]


@pytest.mark.parametrize("revision", ["2025-06-18", "2025-11-25"])
async def test_a_batch_is_refused_where_the_revision_removed_them(
        agents: Agents, revision: str) -> None:
    alice = await start_with_revision(agents, "alice", revision)
    refused = sdk_valid(await raw_reply(alice, b'[{"jsonrpc":"2.0","id":11,"method":"ping"}]',
                                        None))
    assert refused["error"]["code"] == -32600
    assert revision in refused["error"]["message"]
    assert "one request per line" in refused["error"]["message"]
    assert 11 not in alice._pending  # the ping inside was not served


async def test_a_batch_before_initialize_is_refused(agents: Agents) -> None:
    alice = await agents.start("alice", handshake=False)
    refused = await raw_reply(alice, b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', None)
    assert refused["error"]["code"] == -32600
    assert "initialize" in refused["error"]["message"]


# ------------------------------------------------------------------ item 16: strictness
async def test_unknown_tool_and_bad_arguments_are_protocol_errors(agents: Agents) -> None:
    alice = await agents.start("alice")
    unknown = await raw_reply(alice, json.dumps(call(1, "format_disk")).encode(), 1)
    assert unknown["error"]["code"] == -32602
    assert "Unknown tool: 'format_disk'" in unknown["error"]["message"]
    assert "send_message" in unknown["error"]["message"]  # it says what exists
    for arguments in ([1], "to=bob", 5):
        bad = await raw_reply(alice, json.dumps(request(
            2, "tools/call", {"name": "set_status", "arguments": arguments})).encode(), 2)
        assert bad["error"]["code"] == -32602
        assert "`arguments` must be an object" in bad["error"]["message"]
    bad_params = await raw_reply(alice, b'{"jsonrpc":"2.0","id":3,"method":"ping","params":[1]}',
                                 3)
    assert bad_params["error"]["code"] == -32602


async def test_any_tools_list_cursor_is_invalid(agents: Agents) -> None:
    alice = await agents.start("alice")
    cursor = await raw_reply(alice, json.dumps(request(
        1, "tools/list", {"cursor": "eyJwYWdlIjogMn0="})).encode(), 1)
    assert cursor["error"]["code"] == -32602
    assert "cursor" in cursor["error"]["message"]
    listed = await raw_reply(alice, json.dumps(request(2, "tools/list", {})).encode(), 2)
    types.ListToolsResult.model_validate(listed["result"])


@pytest.mark.parametrize("raw_id, shown", [
    (b"1.5", "1.5"), (b"NaN", "NaN"), (b"Infinity", "Infinity"), (b"-Infinity", "-Infinity"),
    (b"1e3", "1000.0"), (b"null", "null"), (b"true", "a boolean"),
])
async def test_an_id_that_is_not_a_string_or_integer_is_refused_consistently(
        agents: Agents, raw_id: bytes, shown: str) -> None:
    alice = await agents.start("alice")
    refused = await raw_reply(alice, b'{"jsonrpc":"2.0","id":' + raw_id +
                              b',"method":"ping"}', None)
    message = refused["error"]["message"]
    assert refused["error"]["code"] == -32600
    assert "must be a string or an integer" in message and shown in message
    assert "or a number" not in message  # 1.5 is a number: the message must not say so


async def test_a_request_without_jsonrpc_2_0_is_not_served(agents: Agents) -> None:
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    for version in (b"", b'"jsonrpc":"1.0",', b'"jsonrpc":2,'):
        refused = await raw_reply(alice, b"{" + version + b'"id":7,"method":"tools/call",'
                                  b'"params":{"name":"send_message","arguments":'
                                  b'{"to":"bob","text":"not served"}}}', 7)
        assert refused["error"]["code"] == -32600
        assert '"jsonrpc": "2.0"' in refused["error"]["message"]
    await alice.tool("send_message", to="bob", text="served")
    await bob.wait_for(lambda: any(m["content"] == "served" for m in bob.channel()))
    assert [m["content"] for m in bob.channel()] == ["served"]


async def test_an_id_still_in_flight_is_not_reused(agents: Agents) -> None:
    """Two requests under one id could not be told apart by a cancellation: the second is
    refused, and cancelling the id still ends the first."""
    alice = await agents.start("alice", "--delivery", "pull")
    wait = (b'{"jsonrpc":"2.0","id":"w","method":"tools/call","params":{"name":'
            b'"read_messages","arguments":{"wait_seconds":60}}}')
    assert alice.process.stdin is not None
    await alice.process.stdin.send(wait + b"\n")
    refused = await raw_reply(alice, wait, "w")
    assert refused["error"]["code"] == -32600 and "already used" in refused["error"]["message"]
    await alice.notify("notifications/cancelled", {"requestId": "w"})
    bob = await agents.start("bob")
    await bob.tool("send_message", to="alice", text="for the next read")
    # the cancelled wait took nothing: the message goes to a new read, and "w" is never
    # answered (a read may first return bob's joined event)
    with anyio.fail_after(15):
        while "for the next read" not in await alice.tool("read_messages", wait_seconds=10):
            pass
    assert "w" not in alice._pending
