"""The real Codex CLI for tests: the pinned npm package, installed once into <repo>/.cache/codex,
as tests/support/claude_code.py does for Claude Code. tests/support/codex_driver.py runs it
offline against tests/support/fake_openai.py; docs/codex-facts.md says what was measured with it.

The npm package is a small Node launcher (``bin/codex.js``) plus one optional dependency per
platform that holds the native binary (``@openai/codex-linux-x64`` is the alias of
``@openai/codex@VERSION-linux-x64``); no install script is needed, any Node >= 16 runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import npm_cli
from tests.support.npm_cli import NPM_INSTALL_TIMEOUT

__all__ = ["CODEX_VERSION", "NPM_INSTALL_TIMEOUT", "codex_path", "ensure_codex", "install"]

CODEX_VERSION = "0.171.0"  # the newest on npm when docs/codex-facts.md was measured
CODEX_PACKAGE = "@openai/codex"
CODEX_CMD_TIMEOUT = 60


def codex_path(version: str = CODEX_VERSION) -> Path:
    """Where ensure_codex installs ``version`` (the launcher; it may not be there yet)."""
    return npm_cli.launcher("codex", CODEX_VERSION, version, "codex")


def install(version: str = CODEX_VERSION) -> Path:
    """Install ``version`` into <repo>/.cache/codex (or .cache/codex-VERSION) unless it is
    there; check that the native binary runs. Raises RuntimeError on failure."""
    launcher = codex_path(version)
    npm_cli.install(launcher, CODEX_PACKAGE, version, "Codex CLI")
    with tempfile.TemporaryDirectory(prefix="codex-version-") as home:
        shown = subprocess.run([str(launcher), "--version"], capture_output=True, text=True,
                               timeout=CODEX_CMD_TIMEOUT, stdin=subprocess.DEVNULL,
                               env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                    "HOME": home, "LANG": "C.UTF-8"})
    if f"codex-cli {version}" not in shown.stdout:
        raise RuntimeError(f"{launcher} --version: exit {shown.returncode}\n"
                           f"{shown.stdout}{shown.stderr}\n(the native binary comes from the "
                           f"optional dependency @openai/codex-<platform>: did npm skip it?)")
    return launcher


def ensure_codex(version: str = CODEX_VERSION) -> Path:
    """The pinned Codex CLI (or ``version``), installed unless already there: for a
    session-scoped fixture. Skips the test when npm is missing, fails it when the install
    does."""
    return npm_cli.ensure(install, version, "Codex")


def main() -> None:
    """``python3 -m tests.support.codex_cli [VERSION]``: install, then print the launcher's path."""
    print(install(sys.argv[1] if len(sys.argv) > 1 else CODEX_VERSION))


if __name__ == "__main__":
    main()
