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

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

OPENCODE_VERSION = "1.18.33"  # the newest on npm when docs/opencode.md was measured
OPENCODE_PACKAGE = "opencode-ai"

REPO = Path(__file__).resolve().parents[2]  # (tests/support/ -> the repository)
CACHE = REPO / ".cache" / "opencode"

NPM_INSTALL_TIMEOUT = 600
CMD_TIMEOUT = 60


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def installed_version(prefix: Path) -> str | None:
    manifest = prefix / "node_modules" / OPENCODE_PACKAGE / "package.json"
    if not (prefix / "node_modules" / ".bin" / "opencode").exists():
        return None
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def opencode_path(version: str = OPENCODE_VERSION) -> Path:
    """Where install puts ``version`` (the binary; it may not be there yet)."""
    cache = CACHE if version == OPENCODE_VERSION else CACHE.with_name(f"opencode-{version}")
    return cache / "node_modules" / ".bin" / "opencode"


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
    cache = binary.parents[2]
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not installed: cannot install the real OpenCode")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".install.lock", "w") as lock:  # other pytest sessions may install too
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = installed_version(cache)
        if have != version:
            print(f"\ninstalling {OPENCODE_PACKAGE}@{version} into {cache} "
                  f"(found {have or 'nothing'}) ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            cmd = [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund",
                   "--save-exact", f"{OPENCODE_PACKAGE}@{version}"]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=NPM_INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired as e:
                raise RuntimeError(f"`{' '.join(cmd)}` timed out after {NPM_INSTALL_TIMEOUT}s:"
                                   f"\n{tail(str(e.stdout or '') + str(e.stderr or ''))}") from e
            if done.returncode != 0 or installed_version(cache) != version:
                raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {done.returncode}; "
                                   f"installed version now {installed_version(cache)}):\n"
                                   f"{tail(done.stdout + done.stderr)}")
            print(f"installed in {time.monotonic() - started:.0f}s", file=sys.stderr)
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
    try:
        return install(version)
    except FileNotFoundError as e:
        print(f"\nSKIP (real OpenCode): {e}", file=sys.stderr)
        pytest.skip(str(e))
    except RuntimeError as e:
        pytest.fail(str(e))


def main() -> None:
    """``python3 -m tests.support.opencode_cli [VERSION]``: install, then print the path."""
    print(install(sys.argv[1] if len(sys.argv) > 1 else OPENCODE_VERSION))


if __name__ == "__main__":
    main()
