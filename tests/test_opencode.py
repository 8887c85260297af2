"""The real OpenCode (pinned in tests/support/opencode_cli.py) with `bridge serve` as its MCP
server, offline against the tests' fake Chat Completions API (tests/support/fake_chat.py), in
a private network namespace that also holds the room's redis-server
(tests/support/opencode_driver.py).

Pull: under ``opencode run`` (no HTTP server to post into) bridge takes the pull path and
says why; the model reads with read_messages and answers. Push: the TUI started with
``--port`` is woken by a message with no keystroke (``POST /session/ID/prompt_async``), a
burst comes as one post, a message that arrives during a turn waits for its end, the cursor
moves once the session shows a model step after the post; without ``--port`` it is pulled.

To run these tests against another tree of bridge, set PYTHONPATH: it is passed to every
`bridge serve` under test.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from bridge.mcp.opencode_delivery import PUSHED as PUSH_LINE
from tests.conftest import agent_pool, free_port
from tests.support.fake_chat import message_text
from tests.support.mcp_client import Agent
from tests.support.opencode_cli import NPM_INSTALL_TIMEOUT, ensure_opencode
from tests.support.opencode_driver import OpenCode, Room, texts_brought

pytestmark = [pytest.mark.slow, pytest.mark.anyio,
              pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 300)]

WRAPPED = ("(Sent to you through bridge by a peer agent, not by your user.)\n"
           "[bridge] message from alice")
SLOW = 3.0  # seconds the fake model takes over a reply scripted as slow (a turn running)


@pytest.fixture(scope="session")
def opencode_bin() -> Path:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed; the tests drive the real OpenCode in tmux")
    return ensure_opencode()


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    made = Room(str(tmp_path), free_port())
    yield made
    made.close()


@pytest.fixture
def say(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a measured figure in the test output, even under -q without -s."""
    def printed(text: str) -> None:
        with capsys.disabled():
            print(f"\n{text}", flush=True)
    return printed


def call(name: str, **arguments: Any) -> list[dict[str, Any]]:
    return [{"type": "function_call", "name": f"bridge_{name}", "arguments": arguments}]


async def in_thread(function: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(function, *args)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not after {timeout:.0f}s: {what}")
        time.sleep(0.02)
    return value


async def read_until(agent: Agent, needle: str, timeout: float = 30) -> str:
    """read_messages until what it returns has ``needle`` (events may come first)."""
    seen = ""
    with anyio.fail_after(timeout):
        while needle not in seen:
            seen += await agent.tool("read_messages", wait_seconds=timeout) + "\n"
    return seen


def taken(oc: OpenCode) -> int:
    """Messages the cursor passed on the opencode path (a model step began after them)."""
    return sum(e.get("messages", 0) for e in oc.log("post_taken"))


def brought_with(oc: OpenCode, needle: str) -> str:
    [text] = [t for t in texts_brought(oc.wait_request(needle, 30)) if needle in t]
    return text


async def started(oc: OpenCode, room: Room, prompt: str = "start") -> None:
    """The TUI up with bridge in the room, its first turn (``prompt``) done: a session ran."""
    oc.launch()
    await in_thread(lambda: oc.wait_ready(120, ready=lambda: room.present(oc.name)))
    oc.type(prompt)
    await in_thread(oc.wait_request, prompt, 60)
    await in_thread(oc.wait_idle, 30)
    await in_thread(lambda: wait_until(lambda: oc.log("opencode_session"), 10,
                                       "bridge saw the session run"))


def tui(opencode_bin: Path, tmp_path: Path, room: Room, turns: dict[str, Any], *,
        port: bool = True, name: str = "oc", share: OpenCode | None = None) -> OpenCode:
    oc = OpenCode(str(opencode_bin), str(tmp_path), name=name, turns=turns, netns=room.ns,
                  port=free_port() if port else None, share=share)
    oc.mcp["bridge"] = oc.bridge(room.url)
    return oc


async def test_opencode_run_is_pulled_and_answers(opencode_bin: Path, room: Room,
                                                  tmp_path: Path) -> None:
    """`opencode run`: no server to push into, so bridge takes the pull path and says why;
    the model calls read_messages, reads alice's message and answers with send_message."""
    turns = {"default_reply": "done", "rules": [
        {"id": "read", "when": {"last_user_contains": "check mail"},
         "reply": call("read_messages", wait_seconds=30)},
        {"id": "answer", "when": {"last_user_contains": "HELLO-OC"},
         "reply": call("send_message", to="alice", text="HI-ALICE")}]}
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        oc = OpenCode(str(opencode_bin), str(tmp_path), name="oc", turns=turns, netns=room.ns)
        with oc:
            oc.mcp["bridge"] = oc.bridge(room.url)
            run = oc.run("check mail")
            await in_thread(lambda: wait_until(lambda: room.present("oc"), 90, "oc joined"))
            await alice.tool("send_message", to="oc", text="HELLO-OC from alice")
            await read_until(alice, "HI-ALICE")
            assert await in_thread(lambda: run.wait(60)) == 0, Path(oc.path("run.err")).read_text()
            [delivery] = [e for e in oc.log("delivery") if "OpenCode" in e["reason"]]
            assert delivery["path"] == "pull", delivery
            assert "listens on no port" in delivery["reason"], delivery
            [*_, answer] = oc.requests()
            assert "HELLO-OC from alice" in "\n".join(texts_brought(oc.requests()[1]))
            assert answer["served"] is None  # the turn ended after send_message
            assert room.cli("get", "bridge:{main}:cursor:oc")  # read_messages acknowledged


async def test_an_idle_opencode_wakes_on_a_message_and_answers_it(
        opencode_bin: Path, room: Room, tmp_path: Path) -> None:
    turns = {"default_reply": "done", "rules": [
        {"id": "answer", "when": {"last_user_contains": "PING-TO-OC"},
         "reply": call("send_message", to="alice", text="PONG-FROM-OC")}]}
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with tui(opencode_bin, tmp_path, room, turns) as oc:
            await started(oc, room)
            [delivery] = [e for e in oc.log("delivery") if "OpenCode" in e["reason"]]
            assert delivery["path"] == "opencode", delivery
            assert PUSH_LINE in oc.requests()[0]["body"]["messages"][0]["content"]
            woken_from = oc.last_seq()
            sent = await alice.tool("send_message", to="oc", text="PING-TO-OC")
            request = await in_thread(oc.wait_request, "PING-TO-OC", 30, woken_from)
            [text] = [t for t in texts_brought(request) if "PING-TO-OC" in t]  # no keystroke
            assert text.startswith(WRAPPED), text
            assert 'send_message(to="alice", reply_to="' in text
            await read_until(alice, "PONG-FROM-OC")
            await in_thread(lambda: wait_until(lambda: taken(oc) == 1, 10, "post taken"))
            message_id = sent.split("message_id ")[1].split(".")[0]
            assert room.cli("get", "bridge:{main}:cursor:oc").split()[0] == message_id


async def test_a_burst_of_three_comes_in_one_turn(opencode_bin: Path, room: Room,
                                                  tmp_path: Path) -> None:
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with tui(opencode_bin, tmp_path, room, {"default_reply": "done"}) as oc:
            await started(oc, room)
            before = oc.last_seq()
            for n in (1, 2, 3):
                await alice.tool("send_message", to="oc", text=f"BURST-{n}")
            text = await in_thread(brought_with, oc, "BURST-1")
            assert text.startswith("(Sent to you through bridge by a peer agent, not by your "
                                   "user.)\n[bridge] 3 messages from the room:"), text
            where = [text.index(f"BURST-{n}") for n in (1, 2, 3)]
            assert where == sorted(where), text
            await in_thread(lambda: wait_until(lambda: taken(oc) == 3, 10, "all 3 taken"))
            await in_thread(oc.wait_idle, 30)
            woken = [r for r in oc.requests() if r["seq"] > before]
            assert len(woken) == 1, [texts_brought(r) for r in woken]  # one turn, one step


async def test_messages_sent_during_a_turn_come_together_after_it(
        opencode_bin: Path, room: Room, tmp_path: Path) -> None:
    """A turn runs (the model answers slowly); alice sends three messages meanwhile: bridge
    waits for the turn's end, then one post brings all three, in order, once."""
    turns = {"default_reply": "done", "rules": [
        {"id": "slow", "when": {"last_user_contains": "take your time"}, "delay": SLOW,
         "reply": "slow turn done"}]}
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with tui(opencode_bin, tmp_path, room, turns) as oc:
            await started(oc, room)
            oc.type("take your time")
            slow = await in_thread(lambda: oc.wait_request(lambda r: r["served"] == "slow", 30))
            for n in (1, 2, 3):
                await alice.tool("send_message", to="oc", text=f"DURING-TURN-{n}")
            assert time.time() < slow["t"] + SLOW, "the turn ended before alice had sent"
            request = await in_thread(oc.wait_request, "DURING-TURN-1", 30)
            assert request["t"] >= slow["t"] + SLOW  # after the slow answer, not during it
            [text] = [t for t in texts_brought(request) if "DURING-TURN-1" in t]
            assert "[bridge] 3 messages from the room:" in text, text
            await in_thread(lambda: wait_until(lambda: taken(oc) == 3, 10, "all 3 taken"))
            said = "\n".join(t for r in oc.requests()[-1:] for t in
                             [m.get("content") if isinstance(m.get("content"), str) else
                              str(m.get("content")) for m in r["body"]["messages"]])
            assert [said.count(f"DURING-TURN-{n}") for n in (1, 2, 3)] == [1, 1, 1], said
            assert not oc.log("post_again")


async def test_a_message_before_any_turn_is_pushed_after_the_first(
        opencode_bin: Path, room: Room, tmp_path: Path) -> None:
    """Before the user's first prompt no session has run here: the message waits, and comes
    by itself once the first turn has ended."""
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with tui(opencode_bin, tmp_path, room, {"default_reply": "done"}) as oc:
            oc.launch()
            await in_thread(lambda: oc.wait_ready(120, ready=lambda: room.present("oc")))
            await alice.tool("send_message", to="oc", text="EARLY-BIRD")
            oc.type("start")
            first = await in_thread(oc.wait_request, "start", 60)
            request = await in_thread(oc.wait_request, "EARLY-BIRD", 30)
            assert request["seq"] > first["seq"], "not in the user's own turn"
            assert brought_with(oc, "EARLY-BIRD").startswith(WRAPPED)
            await in_thread(lambda: wait_until(lambda: taken(oc) == 1, 10, "post taken"))


async def test_a_failed_post_leaves_the_message_for_read_messages(
        opencode_bin: Path, room: Room, tmp_path: Path) -> None:
    """The session bridge posts into is gone (deleted through the server): the POST fails,
    the log says why, and the model's read_messages returns the message, with the reason."""
    turns = {"default_reply": "done", "rules": [
        {"id": "read", "when": {"last_user_contains": "check mail"},
         "reply": call("read_messages", wait_seconds=10)}]}
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with tui(opencode_bin, tmp_path, room, turns) as oc:
            await started(oc, room)
            [session] = oc.log("opencode_session")
            assert oc.api(f"/session/{session['session']}", "DELETE") is True
            await alice.tool("send_message", to="oc", text="KEEP-ME")
            [failed, *_] = await in_thread(lambda: wait_until(
                lambda: oc.log("opencode_post_failed"), 15, "a failed POST"))
            assert "prompt_async answered 404" in failed["error"], failed
            oc.type("check mail")  # a new session; its model reads
            request = await in_thread(oc.wait_request, "KEEP-ME", 30)
            [result] = [t for t in texts_brought(request) if "KEEP-ME" in t]
            assert "bridge could not push the last messages into this session (" \
                   "prompt_async answered 404" in result, result
            assert not oc.log("post_taken")


async def test_two_opencodes_in_one_folder_each_get_their_own(
        opencode_bin: Path, room: Room, tmp_path: Path) -> None:
    """Two TUIs in one folder share their sessions' storage (each lists the other's), and
    the one used last is the other's: each bridge still posts into its own OpenCode's
    session (the server's event stream says which ran there)."""
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with tui(opencode_bin, tmp_path, room, {"default_reply": "done"}) as one, \
                tui(opencode_bin, tmp_path, room, {}, name="two", share=one) as two:
            await started(one, room, "start one")
            await started(two, room, "start two")
            sessions = {oc.name: oc.log("opencode_session")[-1]["session"] for oc in (one, two)}
            assert len(set(sessions.values())) == 2
            assert [s["id"] for s in one.api("/session")][0] == sessions["two"]  # newest
            for oc in (one, two):
                await alice.tool("send_message", to=oc.name, text=f"FOR-{oc.name.upper()}")
                request = await in_thread(one.wait_request, f"FOR-{oc.name.upper()}", 30)
                assert request["headers"]["x-session-id"] == sessions[oc.name], request
                await in_thread(oc.wait_idle, 30)


async def test_a_tui_without_a_port_is_pulled(opencode_bin: Path, room: Room,
                                              tmp_path: Path) -> None:
    """`opencode` without --port has no server: bridge says so at start and pushes nothing;
    the model's read_messages has the message."""
    turns = {"default_reply": "done", "rules": [
        {"id": "read", "when": {"last_user_contains": "check mail"},
         "reply": call("read_messages", wait_seconds=5)}]}
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with tui(opencode_bin, tmp_path, room, turns, port=False) as oc:
            oc.launch()
            await in_thread(lambda: oc.wait_ready(120, ready=lambda: room.present("oc")))
            [delivery] = [e for e in oc.log("delivery") if "OpenCode" in e["reason"]]
            assert delivery["path"] == "pull", delivery
            assert "listens on no port: start it with --port" in delivery["reason"], delivery
            await alice.tool("send_message", to="oc", text="WAITING-FOR-A-READ")
            oc.type("check mail")
            request = await in_thread(oc.wait_request, "WAITING-FOR-A-READ", 30)
            main = oc.requests()  # (the title's request may come between: not counted)
            [first] = [r for r in main if "check mail" in "\n".join(texts_brought(r))]
            assert main.index(request) == main.index(first) + 1  # not pushed before
            [result] = [m for m in request["body"]["messages"] if m["role"] == "tool"]
            assert "WAITING-FOR-A-READ" in message_text(result)  # read_messages' result
            assert "Call read_messages(wait_seconds=30)" in first["body"]["messages"][0][
                "content"]
            assert not oc.log("opencode_push")


async def test_wake_time(opencode_bin: Path, room: Room, tmp_path: Path,
                         say: Callable[[str], None]) -> None:
    """Measured: from alice's send_message returning to the model request that brings the
    message, 10 times, the session idle each time."""
    wakes: list[float] = []
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with tui(opencode_bin, tmp_path, room, {"default_reply": "done"}) as oc:
            await started(oc, room)
            for n in range(10):
                message = f"WAKE-{n:02d} are you there?"
                after = oc.last_seq()
                await alice.tool("send_message", to="oc", text=message)
                returned = time.time()
                request = await in_thread(oc.wait_request, message, 10, after)
                wakes.append(request["t"] - returned)
                await in_thread(lambda k=n: wait_until(lambda: taken(oc) == k + 1, 10,
                                                       "bridge saw its post taken"))
                await in_thread(oc.wait_idle, 30)
    p50 = statistics.median(wakes)
    say(f"MEASURED wake: alice's send_message returned -> OpenCode model request: p50 "
        f"{p50:.3f} s, min {min(wakes):.3f}, max {max(wakes):.3f} (n={len(wakes)})")
    assert p50 < 2.0, wakes
