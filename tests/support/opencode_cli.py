"""The real OpenCode for tests: the pinned npm package ``opencode-ai``, installed once into
<repo>/.cache/opencode, as tests/support/codex_cli.py does for Codex. The driver
(tests/support/opencode_driver.py) runs it offline against tests/support/fake_chat.py;
docs/opencode.md has what was measured.

The npm package holds a launcher (``bin/opencode.exe``; its postinstall script links the
native binary of the platform's optional dependency, e.g. ``opencode-linux-x64``, over it),
so ``node_modules/.bin/opencode`` is the native binary itself: the OpenCode process whose pid
its MCP servers get in ``OPENCODE_PID``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import npm_cli
from tests.support.npm_cli import NPM_INSTALL_TIMEOUT

__all__ = ["NPM_INSTALL_TIMEOUT", "OPENCODE_VERSION", "ensure_opencode", "install",
           "opencode_path"]

OPENCODE_VERSION = "1.18.33"  # the newest on npm when docs/opencode.md was measured
OPENCODE_PACKAGE = "opencode-ai"
CMD_TIMEOUT = 60


def opencode_path(version: str = OPENCODE_VERSION) -> Path:
    """Where install puts ``version`` (the binary; it may not be there yet)."""
    return npm_cli.launcher("opencode", OPENCODE_VERSION, version, "opencode")


def version_of(binary: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="opencode-version-") as home:
        shown = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                               timeout=CMD_TIMEOUT, stdin=subprocess.DEVNULL,
                               env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                    "HOME": home, "LANG": "C.UTF-8"})
    return shown.stdout.strip() or f"(exit {shown.returncode}) {shown.stderr.strip()[-500:]}"


def install(version: str = OPENCODE_VERSION) -> Path:
    """Install ``version`` into <repo>/.cache/opencode (or .cache/opencode-VERSION) unless it
    is there; check that the binary runs. Raises RuntimeError on failure, FileNotFoundError
    without npm."""
    binary = opencode_path(version)
    npm_cli.install(binary, OPENCODE_PACKAGE, version, "OpenCode")
    shown = version_of(binary)
    if shown != version:
        raise RuntimeError(f"{binary} --version: {shown!r}, not {version} (the native binary "
                           f"comes from the optional dependency opencode-<platform>, linked "
                           f"by the package's postinstall script: did npm skip either?)")
    return binary


def ensure_opencode(version: str = OPENCODE_VERSION) -> Path:
    """The pinned OpenCode (or ``version``), installed unless already there: for a
    session-scoped fixture. Skips the test when npm is missing, fails it when the install
    does."""
    return npm_cli.ensure(install, version, "OpenCode")


def main() -> None:
    """``python3 -m tests.support.opencode_cli [VERSION]``: install, then print the path."""
    print(install(sys.argv[1] if len(sys.argv) > 1 else OPENCODE_VERSION))


if __name__ == "__main__":
    main()
