"""Push into the real Codex CLI (pinned in tests/support/codex_cli.py), interactive in tmux,
against the tests' fake Responses API (tests/support/fake_openai.py), in a private network
namespace that also holds the room's redis-server: `bridge serve` recognises Codex, learns its
thread from the model's first bridge tool call, and wakes the idle session with `codex queue`;
where a queued message would not reach the model (`codex exec`, no codex binary, a Codex home
the server does not see, a failing `codex queue`) nothing is lost: read_messages returns it.

Where bridge's log goes: Codex reads an MCP server's stderr and logs each line as
``MCP server stderr (COMMAND): LINE`` at INFO (target
``codex_rmcp_client::stdio_server_launcher``), which its default filter drops. With
``RUST_LOG`` naming that target (``LOG_FILTER``; the TUI passes it on to the app-server
daemon it starts) the lines land in ``$CODEX_HOME/app-server-daemon/daemon.stderr.log`` for an
interactive session (the daemon runs the MCP servers), and in the stderr of ``codex exec``.
``bridge_log`` reads them from there.

To run these tests against another tree of bridge (to see a test fail without the part it
tests), set PYTHONPATH: it is passed to every `bridge serve` under test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import agent_pool, free_port
from tests.support.codex_cli import NPM_INSTALL_TIMEOUT, ensure_codex
from tests.support.codex_driver import (
    Codex,
    NetNs,
    brought,
    item_text,
    native_codex,
    tool_calls,
    turn_metadata,
    user_texts,
)
from tests.support.mcp_client import BRIDGE, Agent

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

LOG_FILTER = "warn,codex_rmcp_client::stdio_server_launcher=info"
STDERR_LINE = re.compile(r"MCP server stderr \([^)]*\): (\{.*\})\s*$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SLOW = 3.0  # seconds the fake model takes over a reply scripted as slow (a turn running)


@pytest.fixture(scope="session")
def codex_bin() -> Path:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed; the tests drive the real Codex in tmux")
    return ensure_codex()


class Room:
    """A redis-server inside a private network namespace, for Codex and the bridge agents."""

    def __init__(self, tmp: Path) -> None:
        self.ns = NetNs()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis = subprocess.Popen(
            [*self.ns.prefix, shutil.which("redis-server") or "redis-server", "--port",
             str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run([*self.ns.prefix, "redis-cli", "-p", str(self.port), "ping"],
                             capture_output=True, text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def present(self, name: str) -> bool:
        """The agent is in the room (its bridge serve answered Codex's initialize)."""
        return subprocess.run(
            [*self.ns.prefix, "redis-cli", "-p", str(self.port), "exists",
             f"bridge:{{main}}:agent:{name}"], capture_output=True, text=True).stdout.strip() == "1"

    def close(self) -> None:
        self.redis.kill()
        self.redis.wait()
        self.ns.close()


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    made = Room(tmp_path)
    yield made
    made.close()


@pytest.fixture
def say(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a measured figure in the test output, even under -q without -s."""
    def printed(text: str) -> None:
        with capsys.disabled():
            print(f"\n{text}", flush=True)
    return printed


def bridge_server(name: str, room: Room, **env: str) -> dict[str, Any]:
    if os.environ.get("PYTHONPATH"):  # another tree of bridge under test (module docstring)
        env.setdefault("PYTHONPATH", os.environ["PYTHONPATH"])
    # required: Codex waits for bridge before the first turn, as the config bridge writes for
    # users does (bridge.ops.codex_home); without it a loaded machine once had `codex exec`
    # call list_participants before bridge's tools were listed ("unsupported call")
    return {"command": BRIDGE[0], "args": ["serve", "--name", name],
            "env": {"BRIDGE_REDIS_URL": room.url, "BRIDGE_LOG_LEVEL": "DEBUG", **env},
            "required": True, "startup_timeout_sec": 30}


def codex_on_path(tmp_path: Path, codex_bin: Path) -> str:
    """A PATH with `codex` on it, as a user who installed Codex has (the MCP server gets
    Codex's PATH, with two folders in front that hold only rg)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    (folder / "codex").symlink_to(native_codex(str(codex_bin)) or codex_bin)
    return f"{folder}:{os.environ.get('PATH', '/usr/bin:/bin')}"


def call(name: str, **arguments: Any) -> list[dict[str, Any]]:
    return [{"type": "function_call", "namespace": "mcp__bridge", "name": name,
             "arguments": arguments}]


async def in_thread(function: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(function, *args)


def bridge_log(path: Path | str) -> list[dict[str, Any]]:
    """bridge serve's log lines (JSON), as Codex logged its MCP server's stderr into ``path``
    (run with RUST_LOG=LOG_FILTER)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        match = STDERR_LINE.search(ANSI.sub("", line))
        if match:
            try:
                found.append(json.loads(match.group(1)))
            except ValueError:
                continue
    return found


def daemon_log(cx: Codex) -> Path:
    return Path(cx.codex_home) / "app-server-daemon" / "daemon.stderr.log"


def events(path: Path | str, name: str) -> list[dict[str, Any]]:
    return [line for line in bridge_log(path) if line.get("event") == name]


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not after {timeout:.0f}s: {what}")
        time.sleep(0.02)
    return value


def taken(log: Path) -> int:
    """Messages the cursor passed on the codex path (the rollout showed a reply to them)."""
    return sum(e.get("messages", 0) for e in events(log, "post_taken"))


async def read_until(agent: Agent, needle: str, timeout: float = 30) -> str:
    """read_messages until what it returns has ``needle`` (events may come first)."""
    seen = ""
    with anyio.fail_after(timeout):
        while needle not in seen:
            seen += await agent.tool("read_messages", wait_seconds=timeout) + "\n"
    return seen


def conversation(cx: Codex) -> list[str]:
    """The user messages of the whole conversation, as the latest model request has them."""
    main = cx.requests("main")
    return user_texts(main[-1]) if main else []


def output_of(cx: Codex, name: str) -> str:
    outputs = [c["output"] or "" for c in tool_calls(cx.requests("main")) if c["name"] == name]
    assert outputs, f"no {name} call came back: {cx.diagnose()}"
    return outputs[0]


async def started(cx: Codex, room: Room) -> None:
    """Codex up, its first turn ("start") done: its model called a bridge tool, so bridge
    knows the thread."""
    cx.launch()
    await in_thread(lambda: cx.wait_ready(90, ready=lambda _: room.present("dave")))
    cx.type("start")
    await in_thread(cx.wait_idle, 60)


def queued_turns(cx: Codex) -> list[dict[str, Any]]:
    return [t for t in cx.turns() if t["trigger"] == "queue"]


async def nothing_more_queued(alice: Agent, cx: Codex, log: Path, turns: int) -> None:
    """After ``turns`` turns, the cursor having passed what was posted: a last message from
    alice comes alone, as the next turn (a post given back or posted again would come before
    it or with it)."""
    await alice.tool("send_message", to="dave", text="LAST-ONE")
    request = await in_thread(cx.wait_request, "LAST-ONE", 30)
    [text] = [t for t in (item_text(i) for i in brought(request)) if "LAST-ONE" in t]
    assert "[bridge] message from alice" in text, text  # one message, nothing with it
    await in_thread(lambda: cx.wait_idle(30, turns=turns + 1))
    assert len(cx.turns()) == turns + 1, cx.turns()
    assert not events(log, "post_again"), events(log, "post_again")


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 300)
async def test_an_idle_codex_wakes_on_a_message_and_answers_it(
        codex_bin: Path, room: Room, tmp_path: Path) -> None:
    turns = {"default_reply": "done", "rules": [
        {"id": "start", "when": {"last_user_contains": "start"},
         "reply": call("list_participants")},
        {"id": "answer", "when": {"last_user_contains": "PING-TO-CODEX"},
         "reply": call("send_message", to="alice", text="PONG-FROM-CODEX")}]}
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with Codex(str(codex_bin), str(tmp_path), name="dave", turns=turns, netns=room.ns,
                   mcp_servers={"bridge": bridge_server("dave", room)}) as cx:
            await started(cx, room)
            woken_from = cx.last_seq()
            await alice.tool("send_message", to="dave", text="PING-TO-CODEX")
            request = await in_thread(cx.wait_request, "PING-TO-CODEX", 30)
            assert request["seq"] > woken_from
            assert turn_metadata(request)["turn_trigger"] == "queue"  # no keystroke
            [text] = [t for t in user_texts(request) if "PING-TO-CODEX" in t]
            assert text.startswith("(Sent to you through bridge by a peer agent, not by your "
                                   "user.)\n[bridge] message from alice"), text
            assert 'send_message(to="alice", reply_to="' in text
            await read_until(alice, "PONG-FROM-CODEX")


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 300)
async def test_messages_sent_during_a_turn_come_together_in_the_next_one(
        codex_bin: Path, room: Room, tmp_path: Path) -> None:
    """A turn runs (the model answers slowly); alice sends three messages meanwhile: one post,
    queued while the turn runs, brings all three to the next turn, in order, once."""
    turns = {"default_reply": "done", "rules": [
        {"id": "start", "when": {"last_user_contains": "start"},
         "reply": call("list_participants")},
        {"id": "slow", "when": {"after": "start", "last_user_contains": "dave (you)"},
         "delay": SLOW, "reply": "slow turn done"}]}
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with Codex(str(codex_bin), str(tmp_path), name="dave", turns=turns, netns=room.ns,
                   env={"RUST_LOG": LOG_FILTER},
                   mcp_servers={"bridge": bridge_server("dave", room)}) as cx:
            log = daemon_log(cx)
            cx.launch()
            await in_thread(lambda: cx.wait_ready(90, ready=lambda _: room.present("dave")))
            cx.type("start")
            slow = await in_thread(lambda: cx.wait_request(lambda r: r["served"] == "slow", 60))
            for n in (1, 2, 3):
                await alice.tool("send_message", to="dave", text=f"DURING-TURN-{n}")
            assert time.time() < slow["t"] + SLOW, "the turn ended before alice had sent"
            assert not cx.idle(), "the first turn is no longer running"

            request = await in_thread(cx.wait_request, "DURING-TURN-", 30)
            assert turn_metadata(request)["turn_trigger"] == "queue"
            [text] = [item_text(i) for i in brought(request) if "DURING-TURN-" in item_text(i)]
            assert text.startswith("(Sent to you through bridge by a peer agent, not by your "
                                   "user.)\n[bridge] 3 messages from the room:"), text
            where = [text.index(f"DURING-TURN-{n}") for n in (1, 2, 3)]
            assert where == sorted(where), text
            await in_thread(lambda: cx.wait_idle(30, turns=2))
            assert [t["trigger"] for t in cx.turns()] == ["user", "queue"], cx.turns()
            await in_thread(lambda: wait_until(lambda: taken(log) == 3, 10,
                                               "bridge saw the three taken"))
            await nothing_more_queued(alice, cx, log, turns=2)
            said = "\n".join(conversation(cx))
            assert [said.count(f"DURING-TURN-{n}") for n in (1, 2, 3)] == [1, 1, 1], said


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 300)
async def test_messages_spread_over_a_running_turn_come_together_in_the_next_one(
        codex_bin: Path, room: Room, tmp_path: Path) -> None:
    """Alice sends three messages a second apart (longer than bridge's coalescing, so this
    gap is the scenario, not a wait for something) while one turn runs: bridge waits for the
    turn to end, and the next turn brings all three."""
    turns = {"default_reply": "done", "rules": [
        {"id": "start", "when": {"last_user_contains": "start"},
         "reply": call("list_participants")},
        {"id": "slow", "when": {"after": "start", "last_user_contains": "dave (you)"},
         "delay": 2 * SLOW, "reply": "slow turn done"}]}
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with Codex(str(codex_bin), str(tmp_path), name="dave", turns=turns, netns=room.ns,
                   mcp_servers={"bridge": bridge_server("dave", room)}) as cx:
            cx.launch()
            await in_thread(lambda: cx.wait_ready(90, ready=lambda _: room.present("dave")))
            cx.type("start")
            slow = await in_thread(lambda: cx.wait_request(lambda r: r["served"] == "slow", 60))
            for n in (1, 2, 3):
                if n > 1:
                    await anyio.sleep(1.0)
                await alice.tool("send_message", to="dave", text=f"SPREAD-{n}")
            assert time.time() < slow["t"] + 2 * SLOW, "the turn ended before alice had sent"
            request = await in_thread(cx.wait_request, "SPREAD-1", 30)
            [text] = [item_text(i) for i in brought(request) if "SPREAD-1" in item_text(i)]
            assert "SPREAD-2" in text and "SPREAD-3" in text, text


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 300)
async def test_a_burst_of_fifty_arrives_whole_in_a_few_turns(
        codex_bin: Path, room: Room, tmp_path: Path, say: Callable[[str], None]) -> None:
    turns = {"default_reply": "done", "rules": [
        {"id": "start", "when": {"last_user_contains": "start"},
         "reply": call("list_participants")}]}
    names = [f"BURST-{n:03d}" for n in range(50)]
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with Codex(str(codex_bin), str(tmp_path), name="dave", turns=turns, netns=room.ns,
                   env={"RUST_LOG": LOG_FILTER},
                   mcp_servers={"bridge": bridge_server("dave", room)}) as cx:
            log = daemon_log(cx)
            await started(cx, room)
            began = time.time()
            for name in names:
                await alice.tool("send_message", to="dave", text=f"{name} of the burst")
            sent = time.time()
            await in_thread(lambda: wait_until(lambda: taken(log) == 50, 60,
                                               f"all 50 taken ({taken(log)} so far)"))
            await in_thread(lambda: cx.wait_idle(30))
            burst_turns = len(queued_turns(cx))
            say(f"MEASURED burst: 50 messages (sent in {sent - began:.2f} s) reached the "
                f"model in {burst_turns} queued turn(s)")
            assert burst_turns <= 3, cx.turns()
            await nothing_more_queued(alice, cx, log, turns=1 + burst_turns)
            said = "\n".join(conversation(cx))
            counts = {name: said.count(name) for name in names}
            assert counts == dict.fromkeys(names, 1), counts
            where = [said.index(name) for name in names]
            assert where == sorted(where)


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 300)
async def test_codex_exec_is_not_pushed_to_and_loses_nothing(
        codex_bin: Path, room: Room, tmp_path: Path) -> None:
    """Under `codex exec` a queued message is started and aborted (docs/codex-facts.md):
    bridge queues nothing, though it has a codex to queue with (on PATH), says so, and
    read_messages returns what came meanwhile."""
    turns = {"default_reply": "done", "rules": [
        {"id": "start", "when": {"last_user_contains": "EXEC-START"},
         "reply": call("list_participants")},
        {"id": "slow", "when": {"after": "start", "last_user_contains": "dave (you)"},
         "delay": SLOW, "reply": call("read_messages", wait_seconds=20)},
        {"id": "end", "when": {"last_user_contains": "DURING-EXEC"}, "reply": "exec done"}]}
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with Codex(str(codex_bin), str(tmp_path), name="dave", turns=turns, netns=room.ns,
                   mcp_servers={"bridge": bridge_server("dave", room)}) as cx:
            run = cx.run("exec", "--skip-git-repo-check", "EXEC-START", background=True,
                         env={"RUST_LOG": LOG_FILTER,
                              "PATH": codex_on_path(tmp_path, codex_bin)})
            assert isinstance(run, subprocess.Popen)
            [log] = Path(cx.dir).glob("run*-exec.err")
            await in_thread(lambda: cx.wait_request(lambda r: r["served"] == "slow", 60))
            await alice.tool("send_message", to="dave", text="DURING-EXEC")  # the model waits
            assert await in_thread(lambda: run.wait(60)) == 0, log.read_text()[-3000:]

            assert "DURING-EXEC" in output_of(cx, "read_messages")
            assert [t["trigger"] for t in cx.turns()] == ["exec"], cx.turns()  # none queued
            assert cx.queue_items() == []
            assert "bridge cannot push messages into this session (this is `codex exec`" in (
                output_of(cx, "list_participants"))
            [thread] = events(log, "codex_thread")
            assert thread["trigger"] == "exec", thread
            [pull] = events(log, "codex_pull")
            assert "codex exec" in pull["reason"], pull
            assert not events(log, "codex_queue_failed")


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 300)
@pytest.mark.parametrize("case", ["missing_binary", "other_codex_home", "queue_exits_1"])
async def test_when_codex_queue_cannot_work_nothing_is_lost(
        case: str, codex_bin: Path, room: Room, tmp_path: Path) -> None:
    """No codex to queue with, a Codex home the server does not see (CODEX_HOME set for
    Codex, not passed to its MCP server), or a `codex queue` that fails: the message waits
    for read_messages, and the log says why in one line."""
    turns = {"default_reply": "done", "rules": [
        {"id": "start", "when": {"last_user_contains": "start"},
         "reply": call("list_participants")},
        {"id": "slow", "when": {"after": "start", "last_user_contains": "dave (you)"},
         "delay": SLOW, "reply": call("read_messages", wait_seconds=20)},
        {"id": "end", "when": {"last_user_contains": "KEEP-ME"}, "reply": "got it"},
        {"id": "check", "when": {"last_user_contains": "check"},
         "reply": call("read_messages", wait_seconds=5)}]}
    server_env: dict[str, str] = {}
    codex_env = {"RUST_LOG": LOG_FILTER}
    codex_home = None
    if case == "missing_binary":
        server_env["BRIDGE_CODEX_BIN"] = str(tmp_path / "no-such-codex")
    elif case == "other_codex_home":  # and a codex on PATH, as a user would have
        codex_home = str(tmp_path / "elsewhere" / "codex-home")
        codex_env["PATH"] = codex_on_path(tmp_path, codex_bin)
    else:
        server_env["BRIDGE_CODEX_BIN"] = shutil.which("false") or "/bin/false"
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with Codex(str(codex_bin), str(tmp_path), name="dave", turns=turns, netns=room.ns,
                   env=codex_env, codex_home=codex_home,
                   mcp_servers={"bridge": bridge_server("dave", room, **server_env)}) as cx:
            log = daemon_log(cx)
            cx.launch()
            await in_thread(lambda: cx.wait_ready(90, ready=lambda _: room.present("dave")))
            cx.type("start")
            await in_thread(lambda: cx.wait_request(lambda r: r["served"] == "slow", 60))
            await alice.tool("send_message", to="dave", text="KEEP-ME")
            await in_thread(lambda: cx.wait_request(lambda r: r["served"] == "end", 30))
            await in_thread(lambda: cx.wait_idle(30))

            assert "KEEP-ME" in output_of(cx, "read_messages")
            assert [t["trigger"] for t in cx.turns()] == ["user"], cx.turns()  # none queued
            assert cx.queue_items() == []
            note = output_of(cx, "list_participants")
            if case == "queue_exits_1":
                # (KEEP-ME came during a turn: bridge left it for that turn's read_messages.)
                # A message to the idle session is queued, and the command fails:
                await alice.tool("send_message", to="dave", text="AFTER-THE-TURN")
                failed = await in_thread(lambda: wait_until(
                    lambda: events(log, "codex_queue_failed"), 15, "a failed codex queue"))
                assert all("codex queue exited 1" in f["error"] for f in failed), failed
                assert not events(log, "codex_pull")
                cx.type("check")  # the model's read_messages has it, and is told why
                await in_thread(lambda: cx.wait_request(
                    lambda r: "AFTER-THE-TURN" in json.dumps(r.get("body", {})), 30))
                [*_, last] = [c["output"] or "" for c in tool_calls(cx.requests("main"))
                              if c["name"] == "read_messages"]
                assert "AFTER-THE-TURN" in last, last
                assert "bridge could not push the last messages into this session (codex " \
                    "queue exited 1" in last, last
                return
            [pull] = events(log, "codex_pull")
            assert not events(log, "codex_queue_failed")
            assert f"bridge cannot push messages into this session ({pull['reason']})" in note
            if case == "missing_binary":
                assert pull["reason"].startswith("BRIDGE_CODEX_BIN="), pull
            else:
                assert pull["reason"].startswith("no session file of thread"), pull
                assert 'env_vars = ["CODEX_HOME"]' in pull["reason"], pull


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 300)
async def test_a_bad_codex_bin_is_named_as_the_reason(
        codex_bin: Path, room: Room, tmp_path: Path) -> None:
    bad = str(tmp_path / "no-such-codex")
    turns = {"default_reply": "done", "rules": [
        {"id": "start", "when": {"last_user_contains": "start"},
         "reply": call("list_participants")}]}
    with Codex(str(codex_bin), str(tmp_path), name="dave", turns=turns, netns=room.ns,
               env={"RUST_LOG": LOG_FILTER, "PATH": codex_on_path(tmp_path, codex_bin)},
               mcp_servers={"bridge": bridge_server("dave", room, BRIDGE_CODEX_BIN=bad)}) as cx:
        log = daemon_log(cx)
        await started(cx, room)
        [pull] = await in_thread(lambda: wait_until(lambda: events(log, "codex_pull"), 10,
                                                    "bridge said why it does not push"))
        assert bad in pull["reason"] and "none on PATH" not in pull["reason"], pull


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 300)
async def test_wake_time_and_what_bridge_adds(
        codex_bin: Path, room: Room, tmp_path: Path, say: Callable[[str], None]) -> None:
    """Measured: from alice's send_message returning to the model request that brings the
    message, 20 times, the session idle each time; and the length of bridge's own lines in a
    one-message post."""
    turns = {"default_reply": "done", "rules": [
        {"id": "start", "when": {"last_user_contains": "start"},
         "reply": call("list_participants")}]}
    wakes: list[float] = []
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with Codex(str(codex_bin), str(tmp_path), name="dave", turns=turns, netns=room.ns,
                   env={"RUST_LOG": LOG_FILTER},
                   mcp_servers={"bridge": bridge_server("dave", room)}) as cx:
            log = daemon_log(cx)
            await started(cx, room)
            wrapper, wrapped = 0, ""
            for n in range(20):
                message = f"WAKE-{n:02d} are you there?"
                after = cx.last_seq()
                await alice.tool("send_message", to="dave", text=message)
                returned = time.time()
                request = await in_thread(lambda m=message, a=after: cx.wait_request(
                    m, 10, after_seq=a))
                wakes.append(request["t"] - returned)
                assert turn_metadata(request)["turn_trigger"] == "queue"
                if n == 0:
                    [text] = [item_text(i) for i in brought(request) if message in item_text(i)]
                    wrapper = len(text) - len(message)
                    wrapped = text
                # idle again: the turn ended and bridge saw the reply to its post
                await in_thread(lambda k=n: cx.wait_idle(30, turns=k + 2))
                await in_thread(lambda k=n: wait_until(lambda: taken(log) == k + 1, 10,
                                                       "bridge saw its post taken"))
            assert len(queued_turns(cx)) == 20
    p50 = statistics.median(wakes)
    say(f"MEASURED wake: alice's send_message returned -> Codex model request: p50 "
        f"{p50:.3f} s, min {min(wakes):.3f}, max {max(wakes):.3f} (n={len(wakes)})\n"
        f"MEASURED wrapper: {wrapper} characters of bridge's own lines around a one-message "
        f"post:\n{wrapped}")
    assert p50 < 3.0, wakes
