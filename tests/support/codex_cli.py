"""The real Codex CLI for tests: the pinned npm package, installed once into <repo>/.cache/codex,
as tests/support/claude_code.py does for Claude Code. tests/support/codex_driver.py runs it
offline against tests/support/fake_openai.py; docs/codex-facts.md says what was measured with it.

The npm package is a small Node launcher (``bin/codex.js``) plus one optional dependency per
platform that holds the native binary (``@openai/codex-linux-x64`` is the alias of
``@openai/codex@VERSION-linux-x64``); no install script is needed, any Node >= 16 runs it.
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

CODEX_VERSION = "0.171.0"  # the newest on npm when docs/codex-facts.md was measured
CODEX_PACKAGE = "@openai/codex"

REPO = Path(__file__).resolve().parents[2]  # (tests/support/ -> the repository)
CACHE = REPO / ".cache" / "codex"

NPM_INSTALL_TIMEOUT = 600
CODEX_CMD_TIMEOUT = 60


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def installed_version(prefix: Path) -> str | None:
    manifest = prefix / "node_modules" / "@openai" / "codex" / "package.json"
    if not (prefix / "node_modules" / ".bin" / "codex").exists():
        return None
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def codex_path(version: str = CODEX_VERSION) -> Path:
    """Where ensure_codex installs ``version`` (the launcher; it may not be there yet)."""
    cache = CACHE if version == CODEX_VERSION else CACHE.with_name(f"codex-{version}")
    return cache / "node_modules" / ".bin" / "codex"


def install(version: str = CODEX_VERSION) -> Path:
    """Install ``version`` into <repo>/.cache/codex (or .cache/codex-VERSION) unless it is
    there; check that the native binary runs. Raises RuntimeError on failure."""
    launcher = codex_path(version)
    cache = launcher.parents[2]
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not installed: cannot install the real Codex CLI")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".install.lock", "w") as lock:  # other pytest sessions may install too
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = installed_version(cache)
        if have != version:
            print(f"\ninstalling {CODEX_PACKAGE}@{version} into {cache} "
                  f"(found {have or 'nothing'}) ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            cmd = [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund",
                   "--save-exact", f"{CODEX_PACKAGE}@{version}"]
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
    try:
        return install(version)
    except FileNotFoundError as e:
        print(f"\nSKIP (real Codex): {e}", file=sys.stderr)
        pytest.skip(str(e))
    except RuntimeError as e:
        pytest.fail(str(e))


def main() -> None:
    """``python3 -m tests.support.codex_cli [VERSION]``: install, then print the launcher's path."""
    print(install(sys.argv[1] if len(sys.argv) > 1 else CODEX_VERSION))


if __name__ == "__main__":
    main()
