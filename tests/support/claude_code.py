"""The real Claude Code CLI for tests: the pinned npm package, installed once into
<repo>/.cache/claude, and the throwaway HOME and environment that
tests/support/claude_driver.py gives it. Used by test_real_client.py, test_team.py and
test_deploy.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support import claude_driver

T = TypeVar("T")

CLAUDE_CODE_VERSION = "2.1.328"
# the newest on npm when the inbox's delivery evidence was checked (tests/test_inbox_crash.py)
CLAUDE_CODE_NEWEST = "2.1.337"
CLAUDE_CODE_PACKAGE = "@anthropic-ai/claude-code"

REPO = Path(__file__).resolve().parents[2]  # (tests/support/ -> the repository)
FAKE_API = Path(claude_driver.FAKE_API)  # the scripted model (tests/support/fake_api.py)
CLAUDE_DRIVER = Path(claude_driver.__file__)  # runs scenarios of Claude Code sessions
CACHE = REPO / ".cache" / "claude"
# The venv's own `bridge` script; no resolve(): the venv's bin is the python's sibling.
BRIDGE = Path(sys.executable).with_name("bridge")

# What every Claude Code of the tests gets: no telemetry, no auto-update, no marketplace
# downloads, no error reports, no nonessential traffic; a fake key.
QUIET_ENV = claude_driver.QUIET_ENV
FAKE_API_KEY = claude_driver.FAKE_API_KEY

NPM_INSTALL_TIMEOUT = 600
CLAUDE_CMD_TIMEOUT = 90


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def read_tail(path: Path, lines: int = 60) -> str:
    try:
        return tail(path.read_text(errors="replace"), lines)
    except OSError as e:
        return f"<cannot read {path}: {e}>"


# --------------------------------------------------------------------------- the CLI


def installed_version(prefix: Path) -> str | None:
    manifest = prefix / "node_modules" / "@anthropic-ai" / "claude-code" / "package.json"
    if not (prefix / "node_modules" / ".bin" / "claude").exists():
        return None
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def ensure_claude(tmp_path_factory: pytest.TempPathFactory,
                  version: str = CLAUDE_CODE_VERSION) -> Path:
    """The pinned Claude Code CLI (or ``version``), installed into <repo>/.cache/claude (or
    .cache/claude-VERSION) unless already there.

    For a session-scoped fixture; skips the test when npm is missing.
    """
    cache = CACHE if version == CLAUDE_CODE_VERSION else CACHE.with_name(f"claude-{version}")
    npm = shutil.which("npm")
    if npm is None:
        reason = "npm is not installed: cannot install the real Claude Code CLI"
        print(f"\nSKIP (real Claude Code): {reason}", file=sys.stderr)
        pytest.skip(reason)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".install.lock", "w") as lock:  # other pytest sessions may install too
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = installed_version(cache)
        if have != version:
            print(f"\ninstalling {CLAUDE_CODE_PACKAGE}@{version} into {cache} "
                  f"(found {have or 'nothing'}) ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            cmd = [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund",
                   "--save-exact", f"{CLAUDE_CODE_PACKAGE}@{version}"]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=NPM_INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired as e:
                pytest.fail(f"`{' '.join(cmd)}` timed out after {NPM_INSTALL_TIMEOUT}s:\n"
                            f"{tail(str(e.stdout or '') + str(e.stderr or ''))}")
            if done.returncode != 0 or installed_version(cache) != version:
                pytest.fail(f"`{' '.join(cmd)}` failed (exit {done.returncode}; installed "
                            f"version now {installed_version(cache)}):\n"
                            f"{tail(done.stdout + done.stderr)}")
            print(f"installed in {time.monotonic() - started:.0f}s", file=sys.stderr)
    claude = cache / "node_modules" / ".bin" / "claude"
    shown = subprocess.run([str(claude), "--version"], capture_output=True, text=True,
                             timeout=CLAUDE_CMD_TIMEOUT,
                             env=minimal_env(tmp_path_factory.mktemp("claude-home")),
                             stdin=subprocess.DEVNULL)
    assert version in shown.stdout, (
        f"{claude} --version: exit {shown.returncode}\n{shown.stdout}{shown.stderr}")
    return claude


def require_tmux() -> str:
    found = shutil.which("tmux")
    if found is None:
        pytest.fail("tmux is not installed; the real Claude Code must run interactively for "
                    "channels, and the tests drive it in tmux (apt-get install -y tmux)")
    return found


def minimal_env(home: Path) -> dict[str, str]:
    """What the driver gives Claude Code: a throwaway HOME, PATH, and the quiet switches.

    ANTHROPIC_BASE_URL points at the discard port, so nothing can reach a real API.
    """
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TERM": "dumb",
        "LANG": "C.UTF-8",
        "USER": os.environ.get("USER", "root"),
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        **QUIET_ENV,
    }


def seed_home(home: Path, work: Path, *, channels: bool = False) -> None:
    """A ~/.claude.json that skips onboarding and trusts the work dir, like the driver's.

    ``channels``: also cache the GrowthBook flag that gates channels (``tengu_harbor``); with
    telemetry off, Claude Code reads it from there only with
    CLAUDE_CODE_GB_DISK_CACHE_WHEN_TELEMETRY_OFF=1 (in QUIET_ENV).
    """
    home.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    config = claude_driver.claude_config(str(work), {"tengu_harbor": True} if channels else None)
    (home / ".claude.json").write_text(json.dumps(config, indent=1))


def wait_until(what: str, check: Callable[[], T | None], timeout: float,
               diagnose: Callable[[], str] = lambda: "") -> T:
    """Poll `check` until it returns something truthy; fail with `diagnose()` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{diagnose()}")
        time.sleep(0.25)
