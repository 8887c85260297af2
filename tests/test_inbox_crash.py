"""Nothing lost between the room log and the model, with the real Claude Code: bob's model is
busy, alice sends M1..M5, bridge posts them into bob's session inbox, where Claude Code queues
them; then Claude Code ends before its model saw them (SIGKILL, or `/exit` typed while busy).
The next Claude Code for bob (a new session, or the same one resumed) must get each of them,
once; and with no crash (the control) they arrive once in the first session and never again.

tests/support/inbox_crash.py runs each case (in a private network namespace, as root); before the
cursor waited for evidence (bridge/mcp/acks.py), the crash cases lost 5 of 5.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.claude_code import (
    BRIDGE,
    CLAUDE_CODE_NEWEST,
    CLAUDE_CODE_VERSION,
    NPM_INSTALL_TIMEOUT,
    ensure_claude,
)

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).parent / "support" / "inbox_crash.py"
BRIDGE_PATH = str(BRIDGE)
CASES = [  # (Claude Code, how the first session ends, how the next one starts)
    (CLAUDE_CODE_VERSION, "kill", "new"),
    (CLAUDE_CODE_VERSION, "exit", "resume"),
    (CLAUDE_CODE_VERSION, "none", "new"),
    (CLAUDE_CODE_NEWEST, "kill", "resume"),
    (CLAUDE_CODE_NEWEST, "exit", "new"),
]


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 400)
@pytest.mark.parametrize(("version", "end", "next_session"), CASES)
def test_every_queued_message_reaches_a_model_once(
        version: str, end: str, next_session: str, tmux: str,
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    claude = ensure_claude(tmp_path_factory, version)
    facts_file = tmp_path / "facts.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--claude", str(claude), "--bridge", BRIDGE_PATH,
         "--end", end, "--next", next_session, "--run-dir", str(tmp_path / "run"),
         "--json", str(facts_file)],
        capture_output=True, text=True, timeout=360, stdin=subprocess.DEVNULL)
    where = f"(logs in {tmp_path / 'run'})\n{done.stdout[-3000:]}{done.stderr[-2000:]}"
    assert done.returncode != 2, f"the driver failed {where}"
    facts = json.loads(facts_file.read_text())
    print(f"\nClaude Code {version}, end {end}, then {next_session}: queued after "
          f"{facts.get('queued_after_s')} s; first session {facts['first_counts']}, "
          f"second {facts['second_counts']}", file=sys.stderr)
    assert not any(facts["first_saw_before_end"].values()), (
        f"the first session's model saw a message before it ended: no crash case {where}")
    assert facts["total"] == {f"CRASH-M{i}": 1 for i in range(1, 7)}, where
    if end == "none":  # the control: delivered in the first session, not again
        assert all(facts["first_counts"][f"CRASH-M{i}"] == 1 for i in range(1, 6)), where

