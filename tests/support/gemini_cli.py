"""The real Gemini CLI for tests: the pinned npm package, installed once into
<repo>/.cache/gemini, as tests/support/codex_cli.py does for Codex. tests/test_gemini.py runs it
offline against tests/support/fake_gemini.py; docs/gemini.md says what was measured with it.

The npm package is plain JavaScript (``bundle/gemini.js`` and its dependencies; Node >= 20),
with no native binary to fetch.
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

GEMINI_VERSION = "0.61.0"  # the newest on npm when docs/gemini.md was measured
GEMINI_PACKAGE = "@google/gemini-cli"

REPO = Path(__file__).resolve().parents[2]  # (tests/support/ -> the repository)
CACHE = REPO / ".cache" / "gemini"

NPM_INSTALL_TIMEOUT = 600
GEMINI_CMD_TIMEOUT = 60


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def installed_version(prefix: Path) -> str | None:
    manifest = prefix / "node_modules" / "@google" / "gemini-cli" / "package.json"
    if not (prefix / "node_modules" / ".bin" / "gemini").exists():
        return None
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def gemini_path(version: str = GEMINI_VERSION) -> Path:
    """Where ``install`` puts ``version`` (the launcher; it may not be there yet)."""
    cache = CACHE if version == GEMINI_VERSION else CACHE.with_name(f"gemini-{version}")
    return cache / "node_modules" / ".bin" / "gemini"


def install(version: str = GEMINI_VERSION) -> Path:
    """Install ``version`` into <repo>/.cache/gemini (or .cache/gemini-VERSION) unless it is
    there; check that it runs. FileNotFoundError without npm, RuntimeError on a failure."""
    launcher = gemini_path(version)
    cache = launcher.parents[2]
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not installed: cannot install the real Gemini CLI")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".install.lock", "w") as lock:  # other pytest sessions may install too
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = installed_version(cache)
        if have != version:
            print(f"\ninstalling {GEMINI_PACKAGE}@{version} into {cache} "
                  f"(found {have or 'nothing'}) ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            cmd = [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund",
                   "--save-exact", f"{GEMINI_PACKAGE}@{version}"]
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
    try:
        return install(version)
    except FileNotFoundError as e:
        print(f"\nSKIP (real Gemini CLI): {e}", file=sys.stderr)
        pytest.skip(str(e))
    except RuntimeError as e:
        pytest.fail(str(e))


def main() -> None:
    """``python3 -m tests.support.gemini_cli [VERSION]``: install, then print the launcher."""
    print(install(sys.argv[1] if len(sys.argv) > 1 else GEMINI_VERSION))


if __name__ == "__main__":
    main()
