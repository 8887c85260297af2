"""The real Codex CLI, driven offline (tests/support/codex_driver.py against
tests/support/fake_openai.py), with the logging MCP server tests/support/codex_probe_mcp.py: a
typed prompt leads to one MCP tool call, and a message queued with ``codex queue`` wakes the
idle session (docs/codex-facts.md).

Installs the pinned Codex from npm into .cache/codex on first use (skipped without npm).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.codex_cli import NPM_INSTALL_TIMEOUT, ensure_codex
from tests.support.codex_driver import Codex, tool_calls, turn_metadata

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def codex_bin() -> Path:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed; the tests drive the real Codex in tmux "
                    "(apt-get install -y tmux)")
    return ensure_codex()


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 180)  # the first test pays for the npm install
def test_codex_calls_the_mcp_tool_and_a_queued_message_wakes_it(
        codex_bin: Path, tmp_path: Path) -> None:
    turns = {"rules": [{"id": "call", "when": {"last_user_contains": "say hi to bob"}, "reply": [
        {"type": "function_call", "namespace": "mcp__probe", "name": "send_message",
         "arguments": {"to": "bob", "text": "hi"}}]}], "default_reply": "done"}
    with Codex(str(codex_bin), str(tmp_path), turns=turns, probe=True) as cx:
        cx.launch()
        cx.wait_ready(90)
        cx.type("say hi to bob")
        cx.wait_idle(60)

        calls = tool_calls(cx.requests("main"))
        assert [(c["namespace"], c["name"]) for c in calls] == [("mcp__probe", "send_message")]
        assert "sent to bob" in (calls[0]["output"] or ""), calls
        received = cx.probe_requests("tools/call")
        assert len(received) == 1, received
        meta = received[0]["params"]["_meta"]["x-codex-turn-metadata"]
        thread = cx.thread_id()
        assert meta["thread_id"] == thread and meta["turn_trigger"] == "user", meta

        queued = cx.queue("a queued hello")
        assert queued.returncode == 0, queued.stdout + queued.stderr
        request = cx.wait_request("a queued hello", 30)
        assert turn_metadata(request)["turn_trigger"] == "queue"
        assert request["t"] - queued.started < 10, "the idle session took long to wake"
        cx.wait_idle(30, turns=2)
        assert [t["trigger"] for t in cx.turns()] == ["user", "queue"]
