"""The task board's tools, `task` and `tasks`, used by real `bridge serve` agents over stdio,
and the notices they send: assigned to you, a task you wait for is done, your task taken
over, each arriving as an ordinary message in the right agent's channel."""

from __future__ import annotations

import json
import re

import anyio
import pytest

from tests.support.mcp_client import ToolError
from tests.test_cli_ops import bridge, cli_env

pytestmark = pytest.mark.anyio


def contents(agent) -> list[str]:
    return [push["content"] for push in agent.channel()]


async def arrives(agent, needle: str) -> dict:
    """The first channel message of ``agent`` that contains ``needle``, waited for."""
    def found():
        return next((push for push in agent.channel() if needle in push["content"]), None)
    return await agent.wait_for(found, what=repr(needle))


async def test_tools_list_has_the_board_tools_with_tight_schemas(agents):
    alice = await agents.start("alice")
    listed = (await alice.request("tools/list"))["tools"]
    tools = {tool["name"]: tool for tool in listed}
    assert set(tools) == {"send_message", "list_participants", "read_messages", "set_status",
                          "task", "tasks", "claims"}
    task = tools["task"]["inputSchema"]
    assert task["required"] == ["action"]
    assert task["properties"]["action"]["enum"] == ["create", "claim", "assign", "update"]
    assert task["properties"]["status"]["enum"] == ["open", "in_progress", "blocked", "done"]
    assert set(tools["tasks"]["inputSchema"]["properties"]) == {"status", "assignee", "mine",
                                                                "id"}
    claims = tools["claims"]["inputSchema"]
    assert claims["required"] == ["action"]
    assert claims["properties"]["action"]["enum"] == ["claim", "release", "list"]
    assert set(claims["properties"]) == {"action", "paths", "shared", "reason", "ttl"}


async def test_create_claim_and_a_second_claim_refused_naming_the_holder(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    created = await alice.tool("task", action="create", title="Write the parser",
                               detail="bridge/parse.py, with tests")
    assert created.startswith("created: t1 [open] nobody: Write the parser")
    claimed = await bob.tool("task", action="claim", id="t1")
    assert claimed.startswith("claimed: t1 [in_progress] bob: Write the parser")

    refused = await alice.call("task", action="claim", id="t1")
    assert refused["isError"] is True
    text = refused["content"][0]["text"]
    assert "t1 is taken: bob has it" in text

    shown = await alice.tool("tasks", id="t1")
    assert "t1 [in_progress] bob: Write the parser" in shown
    assert "detail: bridge/parse.py, with tests" in shown
    assert "- alice created" in shown and "- bob claimed" in shown


async def test_refusals_and_bad_arguments_are_tool_errors_that_say_what_to_do(agents):
    alice = await agents.start("alice")
    with pytest.raises(ToolError, match="`action` must be one of create, claim"):
        await alice.tool("task", action="delete", id="t1")
    with pytest.raises(ToolError, match="task action create needs `title`"):
        await alice.tool("task", action="create")
    with pytest.raises(ToolError, match="no task t9 in room"):
        await alice.tool("task", action="claim", id="t9")
    with pytest.raises(ToolError, match="bad status 'finished'"):
        await alice.tool("tasks", status="finished")
    with pytest.raises(ToolError, match="title of 201 characters: at most 200"):
        await alice.tool("task", action="create", title="x" * 201)
    with pytest.raises(ToolError, match="`waits_for` must be a list of task ids"):
        await alice.tool("task", action="create", title="x", waits_for="t1")


async def test_a_task_that_waits_is_refused_until_what_it_waits_for_is_done(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    await alice.tool("task", action="create", title="Parser")
    second = await alice.tool("task", action="create", title="Release", waits_for=["t1"])
    assert "t2 [open] nobody (waits for t1): Release" in second
    with pytest.raises(ToolError, match="t2 waits for t1, not done yet"):
        await bob.tool("task", action="claim", id="t2")
    with pytest.raises(ToolError, match="a task can only wait for tasks that exist"):
        await alice.tool("task", action="create", title="Later", waits_for=["t7"])
    await alice.tool("task", action="claim", id="t1")
    await alice.tool("task", action="update", id="t1", status="done")
    assert "claimed: t2 [in_progress] bob" in await bob.tool("task", action="claim", id="t2")


async def test_list_filters_status_assignee_and_mine(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    await alice.tool("task", action="create", title="Parser")
    await alice.tool("task", action="create", title="Lexer")
    await alice.tool("task", action="create", title="Docs")
    await bob.tool("task", action="claim", id="t2")
    await alice.tool("task", action="claim", id="t3")
    await alice.tool("task", action="update", id="t3", status="done")

    everything = (await alice.tool("tasks")).split("\n\n")[0].splitlines()
    assert [row.split()[0] for row in everything] == ["t1", "t2", "t3"]  # done ones last
    assert (await bob.tool("tasks", mine=True)).startswith("t2 [in_progress] bob: Lexer\n")
    assert (await alice.tool("tasks", assignee="bob")).startswith("t2 ")
    open_ones = (await alice.tool("tasks", status="open")).split("\n\n")[0]
    assert open_ones == "t1 [open] nobody: Parser"
    done = (await bob.tool("tasks", status="done")).split("\n\n")[0]
    assert done == "t3 [done] alice: Docs"
    assert (await bob.tool("tasks", status="blocked")).startswith(
        "No tasks matching that on the board.")


async def test_peer_text_is_one_bounded_line(agents):
    alice = await agents.start("alice")
    await alice.tool("task", action="create", title="evil\x1b[2J\ntitle")
    listed = (await alice.tool("tasks")).split("\n\n")[0]
    assert "\x1b" not in listed and listed.count("\n") == 0
    assert "evil" in listed and "title" in listed


async def test_assigned_to_you_arrives_as_a_message_for_the_assignee_only(agents):
    carol = await agents.start("carol")
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    said = await carol.tool("task", action="create", title="Write the parser",
                            assignee="alice")
    assert "(told alice)" in said
    push = await arrives(alice, "[task t1] assigned to you by carol: Write the parser")
    assert push["meta"]["from"] == "carol" and push["meta"]["kind"] == "message"

    await carol.tool("task", action="create", title="Lexer")
    await carol.tool("task", action="assign", id="t2", assignee="bob")
    await arrives(bob, "[task t2] assigned to you by carol: Lexer")
    # a marker sent last: anything misdirected would have arrived by then
    await carol.tool("send_message", to="*", text="marker")
    for agent in (alice, bob):
        await arrives(agent, "marker")
    assert not [c for c in contents(bob) if "t1" in c]
    assert not [c for c in contents(alice) if "t2" in c]
    assert not [c for c in contents(carol) if c.startswith("[task")]


async def test_taken_over_and_waited_for_done_notices(agents):
    carol = await agents.start("carol")
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    await carol.tool("task", action="create", title="Parser")
    await carol.tool("task", action="create", title="Release", waits_for=["t1"],
                     assignee="bob")
    await arrives(bob, "[task t2] assigned to you by carol: Release")
    await alice.tool("task", action="claim", id="t1")

    # alice's task taken over: assigned to bob while she had it
    said = await carol.tool("task", action="assign", id="t1", assignee="bob")
    assert "(told alice, bob)" in said
    await arrives(alice, "[task t1] taken over: assigned to bob by carol: Parser")
    await arrives(bob, "[task t1] assigned to you by carol: Parser")

    # bob finishes t1: who waits for it (bob's t2) is told, not the closer himself
    await bob.tool("task", action="update", id="t1", status="done")
    assert not [c for c in contents(bob) if "it waits for is done" in c]
    await carol.tool("task", action="assign", id="t2", assignee="alice")
    await arrives(alice, "[task t2] assigned to you by carol: Release")
    await arrives(bob, "[task t2] taken over: assigned to alice by carol: Release")
    await carol.tool("task", action="create", title="Announce", waits_for=["t2"],
                     assignee="bob")
    # claiming a task assigned to you starts it
    assert "claimed: t2 [in_progress] alice" in await alice.tool("task", action="claim",
                                                                  id="t2")
    await alice.tool("task", action="update", id="t2", status="done")
    push = await arrives(bob, "[task t3] t2 it waits for is done (alice): Announce")
    assert push["meta"]["from"] == "alice"
    assert re.search(r"t3 \[open\] bob \(waits for t2\): Announce",
                     await bob.tool("tasks", mine=True))


async def test_the_operators_assign_and_done_tell_the_agents(agents, redis_server):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    env = cli_env(BRIDGE_REDIS_URL=redis_server.url, BRIDGE_ROOM="main")
    await alice.tool("task", action="create", title="Parser")
    await alice.tool("task", action="create", title="Release", waits_for=["t1"],
                     assignee="bob")
    await arrives(bob, "[task t2] assigned to you by alice: Release")
    await alice.tool("task", action="claim", id="t1")

    assigned = await bridge("tasks", "assign", "t1", "bob", env=env)
    assert assigned.returncode == 0, assigned.stderr
    assert assigned.stdout.strip() == "t1 assigned to bob: Parser"  # the notes are on stderr
    assert "told alice, bob" in assigned.stderr
    push = await arrives(alice, "[task t1] taken over: assigned to bob by operator: Parser")
    assert push["meta"]["from"] == "operator"
    await arrives(bob, "[task t1] assigned to you by operator: Parser")

    done = await bridge("tasks", "done", "t1", "--as", "boss", "--json", env=env)
    assert json.loads(done.stdout)["told"] == ["bob"], done.stderr
    await arrives(bob, "[task t2] t1 it waits for is done (boss): Release")


async def test_a_notice_that_cannot_be_sent_leaves_the_change_standing(agents, redis_server):
    alice = await agents.start("alice")
    said = await alice.tool("task", action="create", title="Parser", assignee="nobody-yet")
    assert said.startswith("created: t1 [open] nobody-yet: Parser")
    assert "(the change stands, but could not tell: nobody-yet (unknown recipient" in said
    assert "t1 [open] nobody-yet: Parser" in await alice.tool("tasks", id="t1")


async def test_a_pull_agent_reads_its_notice_with_read_messages(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob", "--delivery", "pull")
    await alice.tool("task", action="create", title="Parser", assignee="bob")
    text = ""
    with anyio.fail_after(20):  # an event may come first: read until the notice is there
        while "[task t1]" not in text:
            text += await bob.tool("read_messages", wait_seconds=5)
    assert "from alice to bob:\n[task t1] assigned to you by alice: Parser" in text
    assert bob.channel(None) == []
