"""docs/clients.md's matrix names the client versions the tests pin, and test files that
exist: the page cannot drift from what is run."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.claude_code import CLAUDE_CODE_NEWEST, CLAUDE_CODE_VERSION
from tests.support.codex_cli import CODEX_VERSION
from tests.support.gemini_cli import GEMINI_VERSION
from tests.support.opencode_cli import OPENCODE_VERSION

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "clients.md"


def rows() -> dict[str, list[str]]:
    """The matrix: client -> its cells."""
    found = {}
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 7 and cells[0] not in ("client", "---"):
            found[cells[0]] = cells
    return found


def test_the_matrix_names_the_pinned_versions() -> None:
    matrix = rows()
    pinned = {"Claude Code": [CLAUDE_CODE_VERSION, CLAUDE_CODE_NEWEST], "Codex CLI": [
        CODEX_VERSION], "Gemini CLI": [GEMINI_VERSION], "OpenCode": [OPENCODE_VERSION]}
    for client, versions in pinned.items():
        named = re.findall(r"\d+\.\d+\.\d+", matrix[client][1])
        assert set(versions) <= set(named), (client, versions, named)
        # and no other version (2.1.224 is named as the oldest with the inbox, not as tested)
        assert set(named) - set(versions) <= {"2.1.224"}, (client, named)


def test_every_test_the_matrix_names_exists() -> None:
    for client, cells in rows().items():
        named = re.findall(r"`(test_\w+\.py)`", cells[6])
        assert named, client
        for test in named:
            assert (ROOT / "tests" / test).is_file(), (client, test)
