"""The MCP wire protocol of `bridge serve`: every reply checked against the SDK's own models,
a real SDK client session, and bad JSON-RPC that gets a clear error while serving goes on."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.version import SUPPORTED_PROTOCOL_VERSIONS

from bridge.mcp.protocol import PROTOCOL_VERSIONS
from tests.conftest import Agents
from tests.support.mcp_client import Agent

pytestmark = pytest.mark.anyio


def sdk_valid(message: dict[str, Any]) -> dict[str, Any]:
    """``message``, checked against the SDK's model of a JSON-RPC answer. An error whose id
    could not be read carries `"id": null` (JSON-RPC 2.0, section 5), which the SDK's
    JSONRPCError cannot hold: its error object is checked with the SDK's ErrorData instead."""
    if "error" in message and message.get("id") is None:
        assert set(message) == {"jsonrpc", "id", "error"} and message["jsonrpc"] == "2.0"
        types.ErrorData.model_validate(message["error"])
    elif "error" in message:
        types.JSONRPCError.model_validate(message)
    else:
        types.JSONRPCResponse.model_validate(message)
    return message


async def raw_reply(agent: Agent, line: bytes, request_id: Any) -> dict[str, Any]:
    """Write one raw line; return the whole JSON-RPC message answering ``request_id``,
    checked against the SDK's models."""
    assert agent.process.stdin is not None
    await agent.process.stdin.send(line + b"\n")
    await agent.wait_for(lambda: request_id in agent._pending, what=f"reply {request_id}")
    return sdk_valid(agent._pending.pop(request_id))


async def test_versions_match_the_sdk() -> None:
    assert list(PROTOCOL_VERSIONS) == list(SUPPORTED_PROTOCOL_VERSIONS)


async def test_every_reply_is_valid_for_the_sdk(agents: Agents) -> None:
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    init = types.InitializeResult.model_validate(alice.initialize_result)
    assert init.protocolVersion == "2025-06-18"  # the client's own revision is kept
    assert init.capabilities.experimental == {"claude/channel": {}}
    assert init.serverInfo.name == "bridge" and init.instructions

    listed = types.ListToolsResult.model_validate(await alice.request("tools/list"))
    assert {t.name for t in listed.tools} == {
        "send_message", "list_participants", "read_messages", "set_status", "task", "tasks",
        "claims"}

    ok = types.CallToolResult.model_validate(await alice.call("send_message", to="bob",
                                                              text="hi"))
    assert not ok.isError and "sent, message_id" in ok.content[0].text  # type: ignore[union-attr]
    failed = types.CallToolResult.model_validate(await alice.call("send_message", to="zed",
                                                                  text="hi"))
    assert failed.isError

    assert await alice.request("ping") == {}

    await bob.wait_messages(1)
    push = next(raw for raw in bob.raw_stdout if b"notifications/claude/channel" in raw
                and b'"message"' in raw)
    notification = types.JSONRPCNotification.model_validate_json(push)
    assert notification.params is not None
    assert notification.params["content"] == "hi"


@pytest.mark.parametrize("asked, answered", [
    ("2024-11-05", "2024-11-05"), ("2025-11-25", "2025-11-25"), ("1999-01-01", "2025-11-25"),
])
async def test_protocol_version_negotiation(agents: Agents, asked: str, answered: str) -> None:
    agent = await agents.start("alice", handshake=False)
    result = await agent.request("initialize", {
        "protocolVersion": asked, "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"}})
    assert result["protocolVersion"] == answered


async def test_the_sdk_client_session_works(redis_server: Any, tmp_path: Path) -> None:
    """The SDK's own client, end to end: handshake, tools, a call."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(BRIDGE_REDIS_URL=redis_server.url, BRIDGE_NAME="sdk")
    params = StdioServerParameters(command=str(Path(sys.executable).with_name("bridge")),
                                   args=["serve"], env=env)
    with anyio.fail_after(30), open(tmp_path / "sdk.stderr", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.capabilities.experimental == {"claude/channel": {}}
            tools = await session.list_tools()
            assert "send_message" in {t.name for t in tools.tools}
            result = await session.call_tool("list_participants", {})
            assert not result.isError
            assert "- sdk (you)" in result.content[0].text  # type: ignore[union-attr]


async def test_bad_json_rpc_gets_errors_and_serving_goes_on(agents: Agents) -> None:
    alice = await agents.start("alice")
    parse = await raw_reply(alice, b"{not json", None)
    assert parse["error"]["code"] == -32700
    no_method = await raw_reply(alice, b'{"jsonrpc":"2.0","id":7}', 7)
    assert no_method["error"]["code"] == -32600
    not_an_object = await raw_reply(alice, b"42", None)
    assert not_an_object["error"]["code"] == -32600
    unknown = await raw_reply(alice, b'{"jsonrpc":"2.0","id":8,"method":"resources/list"}', 8)
    assert unknown["error"] == {"code": -32601, "message": "Method not found: resources/list"}
    no_name = await raw_reply(alice, b'{"jsonrpc":"2.0","id":9,"method":"tools/call"}', 9)
    assert no_name["error"]["code"] == -32602
    bad_args = await raw_reply(
        alice, b'{"jsonrpc":"2.0","id":10,"method":"tools/call","params":'
               b'{"name":"set_status","arguments":[1]}}', 10)
    assert bad_args["error"]["code"] == -32602  # a protocol error, as the spec lists it
    unknown_tool = await raw_reply(
        alice, b'{"jsonrpc":"2.0","id":11,"method":"tools/call","params":'
               b'{"name":"format_disk"}}', 11)
    assert unknown_tool["error"]["code"] == -32602
    assert "Unknown tool" in unknown_tool["error"]["message"]
    # this session negotiated 2025-06-18, which removed batches (tests/test_protocol_strict.py
    # has the revisions that accept them)
    batch = await raw_reply(alice, b'[{"jsonrpc":"2.0","id":12,"method":"ping"}]', None)
    assert "has no JSON-RPC batches" in batch["error"]["message"]
    # an unknown notification gets no reply, and after all of this the server still works
    await alice.notify("notifications/made_up", {"x": 1})
    assert "alice (you)" in await alice.tool("list_participants")
    assert alice.process.returncode is None


async def test_a_cancelled_request_takes_nothing(agents: Agents) -> None:
    """A long-poll the client cancels must not swallow the message that arrives next."""
    alice = await agents.start("alice")
    bob = await agents.start("bob", "--delivery", "pull")  # after alice: no join event waits
    await bob.send_request(100, "tools/call",
                           {"name": "read_messages", "arguments": {"wait_seconds": 60}})
    await bob.notify("notifications/cancelled", {"requestId": 100, "reason": "user"})
    await bob.request("ping")  # the cancellation has been read
    await alice.tool("send_message", to="bob", text="after the cancel")
    text = await bob.tool("read_messages", wait_seconds=10)
    assert "after the cancel" in text
    assert 100 not in bob._pending



async def test_odd_ids_and_lone_surrogates_cost_one_answer_not_the_server(
        agents: Agents) -> None:
    alice = await agents.start("alice")
    bad_id = await raw_reply(alice, b'{"jsonrpc":"2.0","id":[1],"method":"ping"}', None)
    assert "`id` must be a string or an integer" in bad_id["error"]["message"]
    # a cancellation naming an unhashable request id is ignored
    await alice.notify("notifications/cancelled", {"requestId": {}})
    # an id that is a lone surrogate is echoed back escaped, as valid JSON
    echoed = await raw_reply(alice, b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}',
                             "\ud800")
    assert echoed["result"] == {}
    status = await alice.call("set_status", text="\ud800")
    assert status["isError"] and "not valid Unicode" in status["content"][0]["text"]
    assert "alice (you)" in await alice.tool("list_participants")
    assert alice.process.returncode is None


async def test_a_cancelled_send_in_a_batch_strands_no_later_send(agents: Agents) -> None:
    """Sends queued behind a batch wait their turn; cancelling one of them must not leave
    the queue without a leader (every later send would hang)."""
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    ids = list(range(500, 540))
    for request_id in ids:
        await alice.send_request(request_id, "tools/call", {
            "name": "send_message", "arguments": {"to": "bob", "text": f"m{request_id}"}})
    for request_id in ids[1::3]:
        await alice.notify("notifications/cancelled", {"requestId": request_id})
    for request_id in ids[::3]:
        assert not (await alice.response(request_id))["isError"]
    assert "sent, message_id" in await alice.tool("send_message", to="bob", text="after")
    await bob.wait_for(lambda: any(m["content"] == "after" for m in bob.channel()))

