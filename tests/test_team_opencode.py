"""`bridge team` with an OpenCode agent (NAME:ROLE:opencode), the real OpenCode in the team's
tmux: it starts with its role prompt on the model of the user's OpenCode configuration (here
the folder's opencode.json, pointing at the tests' fake Chat Completions API), and a teammate's
message then wakes it with no keystroke, through its TUI's port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.claude_driver import load_log
from tests.support.fake_chat import brought, message_text
from tests.support.mcp_client import BRIDGE
from tests.support.opencode_cli import ensure_opencode
from tests.support.opencode_driver import FAKE_CHAT, QUIET_ENV, descendants

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOM = "octeam"


@pytest.fixture
def fake_api(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The fake model: its port and its request log."""
    (tmp_path / "turns.json").write_text(json.dumps({"default_reply": "OK"}))
    log, port_file = tmp_path / "requests.jsonl", tmp_path / "api.port"
    api = subprocess.Popen([sys.executable, FAKE_CHAT, "--port", "0", "--port-file",
                            str(port_file), "--log", str(log), "--script",
                            str(tmp_path / "turns.json")], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            assert api.poll() is None and time.monotonic() < deadline, "no fake API"
            time.sleep(0.05)
        yield int(port_file.read_text()), log
    finally:
        api.kill()
        api.wait()


def user_texts(log: Path) -> list[str]:
    """What each main request brought the model (the messages after its last answer)."""
    return ["\n".join(message_text(m) for m in brought(record["body"].get("messages", [])))
            for record in load_log(str(log)) if record.get("kind") == "main"]


async def until(what: str, check: Any, timeout: float, log: Path) -> Any:
    """``check()``'s first true answer; the fake API's log is a file, read again until then."""
    with anyio.move_on_after(timeout):
        while not (found := check()):
            await anyio.sleep(0.1)
        return found
    raise AssertionError(f"no {what} within {timeout:g} s; the model was brought: "
                         f"{[t[:200] for t in user_texts(log)]}")


@pytest.mark.timeout(600)
async def test_an_opencode_agent_of_a_team_starts_with_its_role_and_wakes_on_a_message(
        agents, redis_server, fake_api, tmp_path: Path) -> None:
    opencode = ensure_opencode()
    port, log = fake_api
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    model = {"name": "fake", "tool_call": True, "limit": {"context": 128000, "output": 4096}}
    (work / "opencode.json").write_text(json.dumps({  # the user's own: the model, its login
        "$schema": "https://opencode.ai/config.json",
        "provider": {"fake": {"npm": "@ai-sdk/openai-compatible", "name": "fake",
                              "options": {"baseURL": f"http://127.0.0.1:{port}/v1",
                                          "apiKey": "fake-key"},
                              "models": {"fake-model": model}}},
        "model": "fake/fake-model", "small_model": "fake/fake-model", "autoupdate": False,
        "share": "disabled"}))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".data"),
           "XDG_CACHE_HOME": str(home / ".cache"), "XDG_STATE_HOME": str(home / ".state"),
           "TERM": "xterm-256color", "LANG": "C.UTF-8", **QUIET_ENV,
           "BRIDGE_REDIS_URL": redis_server.url, "BRIDGE_DATA_DIR": str(tmp_path / "data")}
    session = f"octeam{os.getpid()}"
    started = subprocess.run([*BRIDGE, "team", "alice:developer:opencode", "--room", ROOM,
                              "--workdir", str(work), "--session", session, "--opencode",
                              str(opencode), "--no-attach"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    assert "Each OpenCode starts with its role prompt" in started.stdout
    try:
        # its role prompt, as the first prompt, with the team's identity line
        first = await until("the first prompt", lambda: [
            t for t in user_texts(log) if "You are alice, the developer" in t], 120, log)
        assert "bridge_send_message" in first[0] and "# Your role: developer" in first[0]
        # then idle; a teammate's message wakes it through its port
        bob = await agents.start("bob", env={"BRIDGE_ROOM": ROOM})
        await until("alice's bridge in the room", lambda: "alice" in (
            subprocess.run([*BRIDGE, "who", "--room", ROOM, "--redis", redis_server.url],
                           capture_output=True, text=True, timeout=30).stdout), 60, log)
        await bob.tool("send_message", to="alice", text="WAKE-FROM-BOB please start")
        woken = await until("the pushed message", lambda: [
            t for t in user_texts(log) if "WAKE-FROM-BOB" in t], 120, log)
        assert "(Sent to you through bridge" in woken[0] and "bob" in woken[0]
    finally:
        panes = subprocess.run(["tmux", "-L", session, "list-panes", "-a", "-F",
                                "#{pane_pid}"], capture_output=True, text=True, timeout=30)
        pids = [int(pid) for pid in panes.stdout.split()]
        doomed = [p for pid in pids for p in [pid, *descendants(pid)]]
        subprocess.run(["tmux", "-L", session, "kill-server"], capture_output=True,
                       timeout=30, check=False)
        for pid in doomed:  # OpenCode outlives its pane's hangup
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
