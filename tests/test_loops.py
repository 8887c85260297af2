"""Reply loops are cut: two agents alone answering each other are held after N messages."""

from __future__ import annotations

import json

import pytest

from tests.test_cli_ops import bridge

pytestmark = pytest.mark.anyio

LOOP = {"BRIDGE_LOOP_LIMIT": "4", "BRIDGE_LOOP_WINDOW": "60"}


async def hold_a2(alice, bob) -> list[dict]:
    """a0 b0 a1 b1 a2: the fifth message of the pair within the window, nobody else
    involved: bob holds alice's a2 (BRIDGE_LOOP_LIMIT 4). Returns bob's notices."""
    for i in range(2):
        await alice.tool("send_message", to="bob", text=f"a{i}")
        await bob.wait_messages(i + 1)
        await bob.tool("send_message", to="alice", text=f"b{i}")
        await alice.wait_messages(i + 1)
    await alice.tool("send_message", to="bob", text="a2")
    return await bob.wait_for(lambda: bob.channel("notice"), what="the hold's notice")


async def test_a_reply_loop_is_held_and_read_messages_resumes_it(agents, redis_server):
    alice = await agents.start("alice", env=dict(LOOP))
    bob = await agents.start("bob", env=dict(LOOP))
    [notice] = await hold_a2(alice, bob)
    assert "holding alice's messages" in notice["content"]
    assert "read_messages" in notice["content"]
    assert [m["content"] for m in bob.channel()] == ["a0", "a1"]  # a2 was not pushed

    who = json.loads((await bridge("who", "--json", "--redis", redis_server.url)).stdout)
    status = {a["name"]: a["status"] for a in who["agents"]}
    assert status["bob"].startswith("holding alice's messages")  # the operator sees it
    note = await bob.tool("list_participants")
    assert "1 unread message(s) waiting" in note and "held from alice" in note

    held = await bob.tool("read_messages")  # nothing is lost; reading resumes
    assert "a2" in held
    await alice.tool("send_message", to="bob", text="a3")
    await bob.wait_messages(3)
    assert bob.channel()[-1]["content"] == "a3"
    who = json.loads((await bridge("who", "--json", "--redis", redis_server.url)).stdout)
    assert {a["name"]: a["status"] for a in who["agents"]}["bob"] == ""


async def test_a_third_party_means_no_loop(agents):
    alice = await agents.start("alice", env=dict(LOOP))
    bob = await agents.start("bob", env=dict(LOOP))
    carol = await agents.start("carol", env=dict(LOOP))
    await carol.tool("send_message", to="bob", text="c0")
    for i in range(3):
        await alice.tool("send_message", to="bob", text=f"a{i}")
        await bob.tool("send_message", to="alice", text=f"b{i}")
    await bob.wait_messages(4)
    assert bob.channel("notice") == []
