"""The real Gemini CLI for tests: the pinned npm package, installed once into
<repo>/.cache/gemini, as tests/support/codex_cli.py does for Codex. tests/test_gemini.py runs it
offline against tests/support/fake_gemini.py; docs/gemini.md says what was measured with it.

The npm package is plain JavaScript (``bundle/gemini.js`` and its dependencies; Node >= 20),
with no native binary to fetch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import npm_cli
from tests.support.npm_cli import NPM_INSTALL_TIMEOUT

__all__ = ["GEMINI_VERSION", "NPM_INSTALL_TIMEOUT", "ensure_gemini", "gemini_path", "install"]

GEMINI_VERSION = "0.61.0"  # the newest on npm when docs/gemini.md was measured
GEMINI_PACKAGE = "@google/gemini-cli"
GEMINI_CMD_TIMEOUT = 60


def gemini_path(version: str = GEMINI_VERSION) -> Path:
    """Where ``install`` puts ``version`` (the launcher; it may not be there yet)."""
    return npm_cli.launcher("gemini", GEMINI_VERSION, version, "gemini")


def install(version: str = GEMINI_VERSION) -> Path:
    """Install ``version`` into <repo>/.cache/gemini (or .cache/gemini-VERSION) unless it is
    there; check that it runs. FileNotFoundError without npm, RuntimeError on a failure."""
    launcher = gemini_path(version)
    npm_cli.install(launcher, GEMINI_PACKAGE, version, "Gemini CLI")
    with tempfile.TemporaryDirectory(prefix="gemini-version-") as home:
        shown = subprocess.run([str(launcher), "--version"], capture_output=True, text=True,
                               timeout=GEMINI_CMD_TIMEOUT, stdin=subprocess.DEVNULL,
                               env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                    "HOME": home, "LANG": "C.UTF-8",
                                    "GEMINI_CLI_NO_RELAUNCH": "true"})
    if shown.stdout.strip() != version:
        raise RuntimeError(f"{launcher} --version: exit {shown.returncode}\n"
                           f"{shown.stdout}{shown.stderr}")
    return launcher


def ensure_gemini(version: str = GEMINI_VERSION) -> Path:
    """The pinned Gemini CLI (or ``version``), installed unless already there: for a
    session-scoped fixture. Skips the test when npm is missing (and says so on stderr), fails
    it when the install does."""
    return npm_cli.ensure(install, version, "Gemini CLI")


def main() -> None:
    """``python3 -m tests.support.gemini_cli [VERSION]``: install, then print the launcher."""
    print(install(sys.argv[1] if len(sys.argv) > 1 else GEMINI_VERSION))


if __name__ == "__main__":
    main()
