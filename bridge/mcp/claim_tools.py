"""The file claims' tool, ``claims``: claim paths or globs of the repository before editing
them (exclusive unless shared), release them, or list who holds what. The rules are the room
layer's (``bridge.room.claims``); a refusal there (another agent's claim over a path, a bad
path, a limit) is a BridgeError and so a tool error with its message.

Paths are relative to the repository's root, so that agents on other hosts, with their own
checkouts, mean the same files. An absolute path inside the repository this server runs in
(found from its working directory) is made relative to its root first: agents often give the
path their editor shows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError
from bridge.room.claim_records import DEFAULT_TTL, MAX_PER_AGENT, MAX_TTL, MIN_TTL, FileClaim
from bridge.room.claims import ClaimBook, normalise
from bridge.room.connection import Room
from bridge.room.untrusted import clean

ACTIONS = ("claim", "release", "list")
MAX_LISTED = 100  # claims one `list` answer shows; the rest are counted

CLAIM_TOOLS: list[dict[str, Any]] = [
    {
        "name": "claims",
        "description": (
            "Claim files before editing them, so others do not: paths or globs relative to "
            "the repo root, exclusive unless shared, kept while you are here. release: "
            "paths, or all. list: who holds what."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "action": {"enum": list(ACTIONS)},
                "paths": {"type": "array", "items": {"type": "string"},
                          "maxItems": MAX_PER_AGENT},
                "shared": {"type": "boolean"},
                "reason": {"type": "string"},
                "ttl": {"type": "number", "description": "s kept if you vanish; 3600"},
            },
            "required": ["action"],
        },
    },
]
CLAIM_TOOL_NAMES = frozenset(tool["name"] for tool in CLAIM_TOOLS)


def repository_root(start: Path) -> Path | None:
    """The closest directory at or above ``start`` with a ``.git`` (a directory, or the file
    of a worktree), or None."""
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return None


def relative(path: str, root: Path | None) -> str:
    """``path`` relative to the repository's root when it is an absolute path inside it;
    anything else as given (the room layer refuses what is not relative)."""
    if root is None or not os.path.isabs(path):
        return path
    try:
        return Path(os.path.normpath(path)).relative_to(root).as_posix() or path
    except ValueError:
        return path


def _paths(arguments: dict[str, Any], root: Path | None) -> list[str]:
    paths = arguments.get("paths") or []
    if not isinstance(paths, list) or not all(isinstance(path, str) for path in paths):
        raise BridgeError("`paths` must be a list of paths or globs, like [\"src/api/**\"]")
    return [relative(path, root) for path in paths]


def _ttl(arguments: dict[str, Any]) -> float:
    value = arguments.get("ttl")
    if value is None:
        return DEFAULT_TTL
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not MIN_TTL <= value <= MAX_TTL:  # NaN fails both comparisons
        raise BridgeError(f"`ttl` must be a number of seconds from {MIN_TTL:g} to "
                          f"{MAX_TTL:g}, not {value!r:.40}")
    return float(value)


def line(claim: FileClaim, now: int) -> str:
    """One claim as one line: agent, path, mode, since when, why."""
    minutes = max(0, (now - claim.since) // 60_000) if claim.since else 0
    marked = f" [{claim.problem}: blocks nobody]" if claim.problem else ""
    why = f": {clean(claim.reason)}" if claim.reason else ""
    return f"{claim.agent} {clean(claim.pattern)} ({claim.mode}, {minutes} min){marked}{why}"


async def answer(book: ClaimBook, me: str, arguments: dict[str, Any],
                 root: Path | None, min_ttl: float = MIN_TTL) -> str:
    """Answer ``claims`` as agent ``me``; a claim's TTL is at least ``min_ttl`` (the
    presence TTL, so that it outlives the time between two heartbeats that renew it)."""
    action = arguments.get("action")
    if action not in ACTIONS:
        raise BridgeError(f"`action` must be one of {', '.join(ACTIONS)}, not {action!r:.40}")
    paths = _paths(arguments, root)
    if action == "list":
        now, live = await book.claims()
        if paths:  # only the claims that touch these paths
            live = [claim for claim in live if any(claim.covers(path) for path in paths)]
        if not live:
            return "No file claims" + (" on those paths." if paths else " in the room.")
        lines = [line(claim, now) for claim in live[:MAX_LISTED]]
        if len(live) > MAX_LISTED:
            lines.append(f"… and {len(live) - MAX_LISTED} more: give paths to narrow it")
        return "\n".join(lines)
    if action == "release":
        released = await book.release(me, paths) if paths else await book.release_all(me)
        return f"released {released} claim{'s' * (released != 1)}" if released else \
            "you held no claim on " + ("those paths" if paths else "anything")
    reason = arguments.get("reason") or ""
    shared = arguments.get("shared") or False
    if not isinstance(reason, str) or not isinstance(shared, bool):
        raise BridgeError("`reason` must be a string and `shared` true or false")
    count = await book.claim(me, paths, exclusive=not shared,
                             ttl=max(_ttl(arguments), min_ttl), reason=reason)
    mode = "shared" if shared else "exclusive"
    shown = ", ".join(dict.fromkeys(normalise(path) for path in paths))
    return (f"claimed {count} ({mode}): {shown}. Kept while "
            f"you are in the room; release them when done")


async def answer_claims(room: Room, arguments: dict[str, Any]) -> str:
    """``claims`` for the agent of ``room``, on the room's own book (its heartbeat renews
    what this claims)."""
    return await answer(room.claims, room.name, arguments, repository_root(Path.cwd()),
                        min(room.settings.ttl, MAX_TTL))
