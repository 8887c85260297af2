"""`bridge guard`: a git pre-commit hook that refuses a commit touching another agent's
exclusive file claim (bridge.room.claims).

``install`` writes ``.git/hooks/pre-commit`` (where ``git rev-parse --git-path hooks`` says
hooks live): a shell script that hands the staged paths (``git diff --cached --name-only -z``)
to ``bridge guard check`` by the absolute path of the bridge that installed it, so it runs from
git's environment whatever its PATH. A hook that is not bridge's is left alone unless
``--force``.

``check`` reads the room's live claims and refuses (exit 1) when a staged path is covered by
another agent's genuine exclusive claim, saying whose, since when and why. The committer is
BRIDGE_NAME (or ``--as``); the room and Redis come from the usual settings. When Redis cannot
be reached it says so in one line and lets the commit through (exit 0): the claims are
advisory, and an offline laptop must still commit.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

import anyio
from redis.exceptions import RedisError

from bridge.errors import BridgeError, RedisRefused, RedisUnavailable
from bridge.ops.commands import redis_client
from bridge.ops.human import ago
from bridge.room.claims import ClaimBook, check_agent
from bridge.room.untrusted import clean
from bridge.settings import Settings

MARK = "# bridge guard:"  # the line that tells bridge's hook from someone else's
CHECK_TIMEOUT = 10.0  # seconds: a Redis that does not answer by then counts as unreachable


def bridge_command() -> list[str]:
    """How the hook runs this bridge: the absolute path of the executable that runs now (the
    console script), or this Python with ``-m bridge``."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "bridge" and argv0.is_file() and os.access(argv0, os.X_OK):
        return [str(argv0.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "bridge"]


def hook_text(command: list[str]) -> str:
    run = " ".join(shlex.quote(word) for word in command)
    return (f"#!/bin/sh\n{MARK} refuses a commit that touches another agent's exclusive file "
            f"claim\n# (installed by `bridge guard install`; `git commit --no-verify` skips "
            f"it once)\ngit diff --cached --name-only -z | {run} guard check --null\n")


def hooks_dir(repo: Path) -> Path:
    try:
        found = subprocess.run(["git", "-C", str(repo), "rev-parse", "--git-path", "hooks"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BridgeError(f"cannot run git ({e}): install git, or check --repo") from e
    if found.returncode != 0:
        raise BridgeError(f"{str(repo)!r} is not a git repository ({found.stderr.strip()[:200]})"
                          f": give one with --repo PATH")
    path = Path(found.stdout.strip())
    return path if path.is_absolute() else repo / path


def install(repo: str | None, *, force: bool, out: TextIO = sys.stdout) -> int:
    """`bridge guard install [--repo PATH] [--force]`."""
    hooks = hooks_dir(Path(repo or ".").absolute())
    hook = hooks / "pre-commit"
    if hook.exists() and not force:
        text = hook.read_text(errors="replace")
        if MARK not in text:
            raise BridgeError(f"{hook} exists and is not bridge's: add the line `git diff "
                              f"--cached --name-only -z | bridge guard check --null` to it, "
                              f"or replace it with --force")
    hooks.mkdir(parents=True, exist_ok=True)
    hook.write_text(hook_text(bridge_command()))
    hook.chmod(0o755)
    print(f"installed {hook}: a commit touching another agent's exclusive claim is refused "
          f"(the committer is BRIDGE_NAME; room and Redis from BRIDGE_ROOM, BRIDGE_REDIS_URL)",
          file=out)
    return 0


def read_paths(words: list[str], null: bool) -> list[str]:
    """The paths to check: the words, and with ``null`` stdin's NUL-separated ones."""
    paths = list(words)
    if null:
        paths += [p for p in sys.stdin.buffer.read().decode(errors="replace").split("\0") if p]
    return paths


async def check(settings: Settings, paths: list[str], *, name: str | None,
                err: TextIO = sys.stderr) -> int:
    """`bridge guard check`: 1 when a path is covered by another agent's exclusive claim."""
    committer = check_agent(name) if name else ""
    if not paths:
        return 0
    try:
        with anyio.fail_after(CHECK_TIMEOUT):
            async with redis_client(settings, retries=0) as redis:
                book = ClaimBook.of(redis, settings)
                blocked = await book.blocking(paths, committer)
                now = await book.now_ms()
    except (RedisUnavailable, RedisRefused, RedisError, OSError, TimeoutError) as e:
        print(f"bridge guard: cannot reach Redis to check file claims ({clean(str(e))[:200]}); "
              f"the commit goes through unchecked", file=err)
        return 0
    if not blocked:
        return 0
    holders = sorted({claim.agent for _, claim in blocked})
    for path, claim in blocked:
        since = time.strftime("%H:%M UTC", time.gmtime(claim.since / 1000))
        why = f": {clean(claim.reason)!r}" if claim.reason else " (no reason given)"
        print(f"bridge guard: {clean(path)} is claimed exclusively by {claim.agent} "
              f"({clean(claim.pattern)}) since {since}, {ago(claim.since, now)}{why}",
              file=err)
    print(f"bridge guard: commit refused. Ask {', '.join(holders)} to release the claim, or "
          f"wait for it to end (`bridge claims` lists them); unstage those paths, or "
          f"`git commit --no-verify` to commit anyway", file=err)
    return 1
