"""The file claims' tool, `claims`, used by real `bridge serve` agents over stdio; the board
events every task or claim change publishes (riding along with the next message, printed by
`bridge tail`); and BRIDGE_BOARD_TOOLS=0, which leaves the board's tools out."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import pytest

from tests.support.mcp_client import ToolError
from tests.test_cli_ops import cli  # noqa: F401 - a fixture
from tests.test_task_tools import arrives

pytestmark = pytest.mark.anyio

QUIET = {"BRIDGE_PUSH_EVENTS": "0"}  # the default: events ride along (the test pool pushes)


async def test_a_claim_over_anothers_exclusive_one_is_refused_saying_whose_and_why(agents):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    claimed = await alice.tool("claims", action="claim", paths=["src/api/**", "./docs/api.md"],
                               reason="rewriting the API")
    assert claimed.startswith("claimed 2 (exclusive): src/api/**, docs/api.md.")

    with pytest.raises(ToolError) as refused:
        await bob.tool("claims", action="claim", paths=["src/api/routes.py"])
    text = str(refused.value)
    assert "'src/api/routes.py' overlaps an exclusive claim of alice's on 'src/api/**'" in text
    assert "held since" in text and "'rewriting the API'" in text
    assert "Ask alice to release it" in text
    with pytest.raises(ToolError, match="overlaps an exclusive claim of alice's"):
        await bob.tool("claims", action="claim", paths=["src/**"], shared=True)

    assert "claimed 1 (shared)" in await bob.tool("claims", action="claim", paths=["tests"],
                                                  shared=True, reason="adding cases")
    listed = (await bob.tool("claims", action="list")).split("\n\n")[0].splitlines()
    assert [row.split(" (")[0] for row in listed] == [
        "alice docs/api.md", "alice src/api/**", "bob tests"]
    assert listed[2].endswith(": adding cases") and "(shared, 0 min)" in listed[2]
    narrowed = await bob.tool("claims", action="list", paths=["src/api/x.py"])
    assert narrowed.split("\n\n")[0] == listed[1]  # only what covers the path

    released = await alice.tool("claims", action="release", paths=["src/api/**"])
    assert released.startswith("released 1 claim\n")
    assert "claimed 1 (exclusive)" in await bob.tool("claims", action="claim",
                                                     paths=["src/api/routes.py"])
    assert (await alice.tool("claims", action="release")).startswith("released 1 claim\n")
    assert (await alice.tool("claims", action="release")).startswith(
        "you held no claim on anything")


async def test_bad_values_are_tool_errors_that_say_what_to_do(agents):
    alice = await agents.start("alice")
    for arguments, expected in [
        ({"action": "grab"}, "`action` must be one of claim, release, list"),
        ({"action": "claim"}, "nothing to claim: give one or more paths"),
        ({"action": "claim", "paths": "src"}, "`paths` must be a list"),
        ({"action": "claim", "paths": ["/etc/passwd"]}, "is absolute: give it relative"),
        ({"action": "claim", "paths": ["../x"]}, "has '..'"),
        ({"action": "claim", "paths": ["a\nb"]}, "control character"),
        ({"action": "claim", "paths": ["x"], "ttl": float("nan")}, "`ttl` must be a number"),
        ({"action": "claim", "paths": ["x"], "ttl": True}, "`ttl` must be a number"),
        ({"action": "claim", "paths": ["x"], "shared": "yes"}, "`shared` true or false"),
        ({"action": "claim", "paths": ["x"], "reason": "r" * 201}, "at most 200"),
        ({"action": "claim", "paths": [f"f{i}" for i in range(101)]}, "at most 100"),
    ]:
        result = await alice.call("claims", **arguments)
        assert result["isError"] is True, arguments
        assert expected in result["content"][0]["text"], (arguments, result)
    assert (await alice.tool("claims", action="list")).startswith("No file claims in the room.")


async def test_an_absolute_path_inside_the_repository_is_made_relative(agents, tmp_path):
    repo = tmp_path / "checkout"
    (repo / "src" / "deep").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=60)
    # the client starts the server in a subdirectory of the user's checkout
    alice = await agents.start("alice", cwd=repo / "src" / "deep")
    answer = await alice.tool("claims", action="claim", paths=[str(repo / "src" / "api.py")])
    assert answer.startswith("claimed 1 (exclusive): src/api.py.")
    outside = await alice.call("claims", action="claim", paths=[str(tmp_path / "other.py")])
    assert outside["isError"] and "is absolute" in outside["content"][0]["text"]


@pytest.mark.slow
async def test_a_claim_lives_while_its_holder_does_and_lapses_after_a_sigkill(agents, redis_server):
    from tests.test_claims import books, patterns, redis_ms, until_redis_time

    alice = await agents.start("alice", "--ttl", "1")
    bob = await agents.start("bob", "--ttl", "1")
    await alice.tool("claims", action="claim", paths=["src/a"], ttl=4)
    await bob.tool("claims", action="claim", paths=["src/b"], ttl=4)
    async with books(redis_server, 1) as [book]:
        _, first = await book.claims()
        await until_redis_time(book, max(c.expires for c in first) + 500)
        assert await patterns(book) == ["alice src/a", "bob src/b"]  # renewed past the TTL
        bob.process.kill()  # SIGKILL: no leave, the claim stays until its expiry
        await bob.wait_exit()
        killed = await redis_ms(book)
        _, live = await book.claims()
        expires = next(c.expires for c in live if c.agent == "bob")
        assert expires - killed > 4000 - 1000  # renewed within the last heartbeat or so
        while await redis_ms(book) < expires - 100:
            assert "bob src/b" in await patterns(book)  # not before
            await anyio.sleep(0.05)
        await until_redis_time(book, expires)
        assert await patterns(book) == ["alice src/a"]
        with pytest.raises(ToolError, match="alice's"):
            await bob_again(agents, "src/a")
        await alice.close_stdin()  # a clean leave releases at once
        assert await alice.wait_exit() == 0
        assert await patterns(book) == []


async def bob_again(agents, path: str) -> str:
    bob = await agents.start("bob")
    return await bob.tool("claims", action="claim", paths=[path])


async def test_board_changes_ride_along_with_the_next_message(agents):
    bob = await agents.start("bob", env=dict(QUIET))
    alice = await agents.start("alice")
    await alice.tool("task", action="create", title="Write <the> parser\x1b[31m")
    await alice.tool("task", action="claim", id="t1")
    await alice.tool("claims", action="claim", paths=["src/parse.py"], reason="parser")
    await alice.tool("task", action="update", id="t1", status="done")
    await alice.tool("send_message", to="bob", text="parser is in")
    [push] = await bob.wait_messages(1)
    # none was pushed on its own: they came with the message, in order
    assert [n["params"]["meta"]["kind"] for n in bob.notifications] == ["message"]
    changes = push["meta"]["room_changes"].split("; ")
    title = "Write <the> parser\ufffd[31m"  # the escape character cleaned out
    assert changes[-4:] == [
        f"alice created t1: {title}", f"alice claimed t1: {title}",
        "alice claimed src/parse.py (exclusive): parser", f"alice set t1 to done: {title}"]
    assert "\x1b" not in push["meta"]["room_changes"]


async def test_an_assignment_is_a_message_and_the_rest_only_rides_along(agents):
    bob = await agents.start("bob", env=dict(QUIET))
    carol = await agents.start("carol")
    await carol.tool("task", action="create", title="Review", assignee="bob")
    notice = await arrives(bob, "[task t1] assigned to you by carol: Review")
    assert notice["meta"]["room_changes"].endswith("carol created t1 for bob: Review")
    assert len(bob.notifications) == 1  # the board event cost no push of its own


async def test_bridge_tail_prints_board_events(agents, redis_server, cli):  # noqa: F811
    tail = await cli("tail", "--redis", redis_server.url)
    alice = await agents.start("alice")
    await alice.tool("task", action="create", title="Ship it", assignee="bob")
    await alice.tool("claims", action="claim", paths=["deploy/**"], shared=True)
    lines = await tail.wait_for(
        lambda lines: any("claimed deploy/**" in line for line in lines) and lines,
        what="the claim's event")
    board = [line for line in lines if "alice created" in line or "alice claimed" in line]
    assert [line.split("  · ", 1)[1] for line in board] == [
        "alice created t1 for bob: Ship it", "alice claimed deploy/** (shared)"]
    assert await tail.interrupt() == 0


async def test_board_tools_off_leaves_them_out(agents):
    alice = await agents.start("alice", env={"BRIDGE_BOARD_TOOLS": "0"})
    listed = {tool["name"] for tool in (await alice.request("tools/list"))["tools"]}
    assert listed == {"send_message", "list_participants", "read_messages", "set_status"}
    assert "task board" not in alice.initialize_result["instructions"]
    with pytest.raises(RuntimeError, match="Unknown tool: 'tasks'"):
        await alice.call("tasks")
    bob = await agents.start("bob")
    assert "The room's task board: tasks, task." in bob.initialize_result["instructions"]


def test_the_checkout_a_server_runs_in_is_found_from_below(tmp_path: Path):
    from bridge.mcp.claim_tools import relative, repository_root

    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "a" / "b").mkdir(parents=True)
    root = repository_root(tmp_path / "repo" / "a" / "b")
    assert root == tmp_path / "repo"
    assert relative(str(tmp_path / "repo" / "a" / "x.py"), root) == "a/x.py"
    assert relative(str(tmp_path / "repo" / "a" / ".." / "y.py"), root) == "y.py"
    assert relative("a/x.py", root) == "a/x.py"
    assert relative(str(tmp_path / "elsewhere"), root) == str(tmp_path / "elsewhere")
    assert repository_root(Path("/")) is None or (Path("/") / ".git").exists()


async def test_in_a_signed_room_a_forged_board_event_rides_along_with_nothing(agents, r):
    from tests.test_hostile_presence import EVENTS, NASTY, now_ms
    from tests.test_security import SIGNED

    bob = await agents.start("bob", env={**SIGNED, **QUIET})
    alice = await agents.start("alice", env=dict(SIGNED))
    r.publish(EVENTS, json.dumps({"kind": "board", "name": "alice", "ts": now_ms(),
                                  "status": f"claimed t1: forged{NASTY}"}))
    await alice.tool("task", action="create", title="genuine")  # signed by alice's bridge
    await alice.tool("send_message", to="bob", text="see the board")
    [push] = await bob.wait_messages(1)
    assert push["meta"]["room_changes"].endswith("alice created t1: genuine")
    assert "forged" not in push["meta"]["room_changes"]
    assert any(e["event"] == "event_dropped" and e["reason"] == "event_unsigned"
               for e in bob.log_events())
