"""Installing a pinned agent CLI from npm into <repo>/.cache, once, for the tests that run the
real binary (tests/support/codex_cli.py, gemini_cli.py, opencode_cli.py): what they share.
Each keeps its own check that what it installed runs."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]  # (tests/support/ -> the repository)
NPM_INSTALL_TIMEOUT = 600


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def installed_version(prefix: Path, package: str, binary: str) -> str | None:
    """The version of ``package`` installed under ``prefix`` with its ``binary``, or None."""
    manifest = prefix / "node_modules" / package / "package.json"
    if not (prefix / "node_modules" / ".bin" / binary).exists():
        return None
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def launcher(name: str, pinned: str, version: str, binary: str) -> Path:
    """Where ``version`` is installed: .cache/NAME for the pinned one, else .cache/NAME-VERSION
    (the launcher; it may not be there yet)."""
    cache = REPO / ".cache" / (name if version == pinned else f"{name}-{version}")
    return cache / "node_modules" / ".bin" / binary


def install(path: Path, package: str, version: str, what: str) -> None:
    """``npm install PACKAGE@VERSION`` into the prefix of ``path`` (a launcher path), unless
    that version is there; under a file lock, as other pytest sessions may install too.
    FileNotFoundError without npm, RuntimeError on a failure."""
    cache, binary = path.parents[2], path.name
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(f"npm is not installed: cannot install the real {what}")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = installed_version(cache, package, binary)
        if have == version:
            return
        print(f"\ninstalling {package}@{version} into {cache} (found {have or 'nothing'}) ...",
              file=sys.stderr, flush=True)
        started = time.monotonic()
        cmd = [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund",
               "--save-exact", f"{package}@{version}"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=NPM_INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"`{' '.join(cmd)}` timed out after {NPM_INSTALL_TIMEOUT}s:"
                               f"\n{tail(str(e.stdout or '') + str(e.stderr or ''))}") from e
        now = installed_version(cache, package, binary)
        if done.returncode != 0 or now != version:
            raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {done.returncode}; installed "
                               f"version now {now}):\n{tail(done.stdout + done.stderr)}")
        print(f"installed in {time.monotonic() - started:.0f}s", file=sys.stderr)


def ensure(installer: Callable[[str], Path], version: str, what: str) -> Path:
    """``installer(version)`` for a session-scoped fixture: skips the test when npm is missing
    (and says so on stderr), fails it when the install does."""
    try:
        return installer(version)
    except FileNotFoundError as e:
        print(f"\nSKIP (real {what}): {e}", file=sys.stderr)
        pytest.skip(str(e))
    except RuntimeError as e:
        pytest.fail(str(e))
