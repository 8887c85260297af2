"""Presence changes cost no model turns: by default joined/left/status ride along with the
next message instead of being pushed on their own."""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.anyio

QUIET = {"BRIDGE_PUSH_EVENTS": "0"}  # the default (the test pool turns pushes on)


async def test_events_ride_along_with_the_next_message(agents):
    bob = await agents.start("bob", env=dict(QUIET))
    for name in ("c1", "c2", "c3"):
        churn = await agents.start(name)
        await churn.close_stdin()
        assert await churn.wait_exit() == 0
    alice = await agents.start("alice")
    await alice.tool("set_status", text="on the parser")
    await alice.tool("send_message", to="bob", text="hello")
    [push] = await bob.wait_messages(1)
    # on one subscription, what was published first arrives first: every event came before
    # the message, and none was pushed on its own
    assert [n["params"]["meta"]["kind"] for n in bob.notifications] == ["message"]
    changes = push["meta"]["room_changes"]
    assert changes.startswith("c1 joined; c1 left; c2 joined; c2 left; c3 joined; c3 left")
    assert changes.endswith("alice joined; alice set status: on the parser")
    assert "(you)" in await bob.tool("list_participants")  # always current

    await alice.tool("send_message", to="bob", text="again")
    await bob.wait_messages(2)
    assert "room_changes" not in bob.channel()[1]["meta"]  # said once


async def test_push_events_pushes_them_on_their_own(agents):
    bob = await agents.start("bob", env={"BRIDGE_PUSH_EVENTS": "1"})
    await agents.start("alice")
    [joined] = await bob.wait_for(lambda: bob.channel("joined"), what="alice joined")
    assert joined["meta"]["from"] == "alice"


async def test_a_channel_push_gives_the_facts_an_inbox_post_gives(agents):
    """Who sent it, with role and host, its id and reply_to: the same facts on both paths."""
    bob = await agents.start("bob")
    alice = await agents.start("alice", "--role", "developer")
    await alice.tool("send_message", to="bob", text="first")
    [first] = await bob.wait_messages(1)
    await alice.tool("send_message", to="bob", text="second",
                     reply_to=first["meta"]["message_id"])
    second = (await bob.wait_messages(2))[1]
    meta = second["meta"]
    assert meta["from"] == "alice" and meta["role"] == "developer"
    assert meta["host"] == socket.gethostname()[:64]
    assert meta["reply_to"] == first["meta"]["message_id"] and meta["message_id"]
