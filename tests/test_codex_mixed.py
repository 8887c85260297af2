"""A mixed team: a real Claude Code (session inbox) and a real Codex (`codex queue`) in one
room settle a question, each woken by the other's message with no keystroke. Both run in one
private network namespace, with the room's redis-server and their fake model APIs."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import claude_driver
from tests.support.claude_code import (
    BRIDGE,
    CLAUDE_CODE_VERSION,
    NPM_INSTALL_TIMEOUT,
    ensure_claude,
)
from tests.support.codex_driver import Codex, NetNs, turn_metadata
from tests.test_codex_push import Room, bridge_server, call, codex_bin, room  # noqa: F401

pytestmark = pytest.mark.slow


class NsRun(claude_driver.Run):
    """claude_driver's Run, with everything it starts inside ``ns``."""

    def __init__(self, ns: NetNs, *args: Any) -> None:
        self.ns = ns
        super().__init__(*args)

    def tmux(self, *args: str) -> str:
        done = subprocess.run([*self.ns.prefix, "tmux", "-L", self.tmux_socket, *args],
                              capture_output=True, text=True, check=False)
        return done.stdout if done.returncode == 0 else ""

    def start(self, name: str, command: list[str], out: str,
              **kw: Any) -> subprocess.Popen[bytes]:
        return super().start(name, [*self.ns.prefix, *command], out, **kw)


def wait(what: str, check: Any, timeout: float, step: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if step is not None:
            step()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)
    return value


@pytest.mark.timeout(2 * NPM_INSTALL_TIMEOUT + 300)
def test_a_claude_code_and_a_codex_settle_a_question(
        codex_bin: Path, room: Room, tmp_path: Path,  # noqa: F811
        tmp_path_factory: pytest.TempPathFactory) -> None:
    claude = ensure_claude(tmp_path_factory, CLAUDE_CODE_VERSION)
    codex_turns = {"default_reply": "done", "rules": [
        {"id": "start", "when": {"last_user_contains": "start"},
         "reply": call("list_participants")},
        {"id": "answer", "when": {"last_user_contains": "PING-FROM-CLAUDE"},
         "reply": call("send_message", to="carol", text="PONG-FROM-CODEX: port 8080")}]}
    run = NsRun(room.ns, str(claude), str(tmp_path / "claude"),
                {"services": [], "negotiation": "legacy"})
    with Codex(str(codex_bin), str(tmp_path), name="dave", turns=codex_turns, netns=room.ns,
               mcp_servers={"bridge": bridge_server("dave", room)}) as cx:
        cx.launch()
        cx.wait_ready(90, ready=lambda _: room.present("dave"))
        cx.type("start")
        cx.wait_idle(60)
        carol = run.add_instance({
            "name": "carol", "channels": [], "prompt": "ask dave which port",
            "mcp_servers": {"bridge": {
                "command": str(BRIDGE), "args": ["serve", "--name", "carol"],
                "env": {"BRIDGE_REDIS_URL": room.url, "BRIDGE_LOG_LEVEL": "DEBUG"}}},
            "turns": {"default_reply": "OK", "rules": [
                {"id": "ask", "when": {"last_user_contains": "ask dave"}, "reply": [
                    {"type": "tool_use", "name": "mcp__bridge__send_message",
                     "input": {"to": "dave", "text": "PING-FROM-CLAUDE: which port?"}}]},
                {"id": "thanks", "when": {"last_user_contains": "PONG-FROM-CODEX"},
                 "reply": "port 8080, thanks"}]}})
        try:
            run.launch(carol)
            # Codex is woken by carol's question, with no keystroke ...
            request = wait("dave woken by carol's question",
                           lambda: next((r for r in cx.requests("main")
                                         if "PING-FROM-CLAUDE" in json.dumps(r)), None),
                           120, step=lambda: run.step(carol))
            assert turn_metadata(request)["turn_trigger"] == "queue"
            # ... and its answer wakes Claude Code through its session inbox
            wait("carol woken by dave's answer",
                 lambda: "PONG-FROM-CODEX" in "".join(
                     json.dumps(r.get("body", {})) for r in claude_driver.load_log(carol.log)
                     if r.get("kind") == "main"), 60, step=lambda: run.step(carol))
            turns = [r for r in claude_driver.load_log(carol.log) if r.get("kind") == "main"]
            last = json.dumps(turns[-1]["body"])
            assert "[bridge] message from dave" in last and "port 8080" in last
        finally:
            run.shutdown()
