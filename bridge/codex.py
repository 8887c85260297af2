"""OpenAI's Codex CLI, as `bridge serve` meets it: recognising it, the thread it serves, the
`codex queue` command that wakes that thread, and its session file read as evidence.

Measured with Codex 0.171.0 (docs/codex-facts.md):
- `initialize` says ``clientInfo.name == "codex-mcp-client"``; nothing says the thread until
  the first ``tools/call``, whose ``_meta["x-codex-turn-metadata"]`` carries ``thread_id`` and
  ``turn_trigger`` (``user``, ``queue``, or ``exec`` under ``codex exec``).
- ``codex queue --thread T --message TEXT`` wakes an idle interactive session in ~0.13 s, and
  a busy one after its turn; the text reaches the model verbatim, as if the user typed it.
  Under ``codex exec`` a queued message is started and aborted: lost, so never queue there.
- The command must see the session's Codex home: ``CODEX_HOME``, else ``$HOME/.codex``. The
  server's environment has no ``CODEX_HOME`` unless its config entry passes it.
- ``codex`` is not on the server's PATH; the daemon's copy is
  ``$CODEX_HOME/packages/app-server-daemon/current/bin/codex``.
- The thread's rollout (``$CODEX_HOME/sessions/Y/M/D/rollout-…-THREAD.jsonl``) records a
  queued message as a user ``response_item`` with ``metadata.history_sequence`` N when its
  turn starts (before the model is asked, and also under exec, where it never is), and the
  model's reply as a ``response_item`` with ``metadata.sampled_through_sequence`` >= N: only
  that proves the model had it.

Used by `bridge serve` (bridge.mcp) and `bridge doctor` (bridge.ops).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.transcript import Sighting

CLIENT_NAME = "codex-mcp-client"
HOME_VAR = "CODEX_HOME"
TURN_META = "x-codex-turn-metadata"
DAEMON_BINARY = ("packages", "app-server-daemon", "current", "bin", "codex")
THREAD_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")
MAX_READ = 8 * 1024 * 1024


def is_codex(client_info: Any) -> bool:
    return isinstance(client_info, dict) and client_info.get("name") == CLIENT_NAME


def home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    configured = env.get(HOME_VAR, "")
    return Path(configured) if configured else Path(env.get("HOME") or Path.home()) / ".codex"


def find_binary(env: Mapping[str, str] | None = None, configured: str = "") -> Path | None:
    """The codex to queue with: the configured one, else PATH's, else the daemon's copy."""
    env = os.environ if env is None else env
    if configured:
        return Path(configured) if os.access(configured, os.X_OK) else None
    found = shutil.which("codex", path=env.get("PATH"))
    if found:
        return Path(found)
    daemon = home(env).joinpath(*DAEMON_BINARY)
    return daemon if os.access(daemon, os.X_OK) else None


@dataclass(frozen=True)
class Turn:
    thread: str
    trigger: str  # user, queue, exec, …


def turn_of(meta: Any) -> Turn | None:
    """The thread and trigger a ``tools/call``'s ``_meta`` names, if it names them sanely."""
    if not isinstance(meta, dict):
        return None
    turn = meta.get(TURN_META)
    if not isinstance(turn, dict):
        return None
    thread, trigger = turn.get("thread_id"), turn.get("turn_trigger")
    if not isinstance(thread, str) or not THREAD_PATTERN.match(thread):
        return None
    return Turn(thread, trigger if isinstance(trigger, str) else "")


def rollout_paths(codex_home: Path, thread: str) -> list[Path]:
    if not THREAD_PATTERN.match(thread):
        return []
    return sorted((codex_home / "sessions").glob(f"*/*/*/rollout-*{thread}.jsonl"))


MESSAGE_ID = re.compile(r"^(?:\[bridge\] message )?from .*, id (\d{1,20}-\d{1,20})(?:, reply to "
                        r"\S+)?:$", re.M)


def message_ids(post: str) -> set[str]:
    """The ids of the messages a post of bridge's carries (bridge.mcp.posts' header lines)."""
    return set(MESSAGE_ID.findall(post)) if "[bridge]" in post else set()


def queued_posts(codex_home: Path, thread: str) -> list[str]:
    """The texts waiting in Codex's queue for ``thread`` (queue_1.sqlite, read-only)."""
    path = codex_home / "queue_1.sqlite"
    if not path.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                                timeout=1.0)) as db:
            rows = db.execute("SELECT payload_json FROM queued_items WHERE thread_id = ?",
                              (thread,)).fetchall()
    except sqlite3.Error:
        return []
    texts = []
    for (payload,) in rows:
        try:
            parts = json.loads(payload)["UserInput"]["content"]
        except (ValueError, KeyError, TypeError):
            continue
        texts.append(_texts(parts))
    return texts


def rollout_problem(codex_home: Path, thread: str) -> str | None:
    """None if the thread's session file is there to read, else why not."""
    if not rollout_paths(codex_home, thread):
        return (f"no session file of thread {thread} under {codex_home / 'sessions'}: "
                f"this server does not see the session's Codex home")
    return None


def _texts(content: Any) -> str:
    if not isinstance(content, list):
        return ""
    return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))


class Rollout:
    """A Codex thread's rollout, read as it grows: a witness for bridge.mcp.acks. A queued
    post shows as ``queued`` when its turn starts, and ``taken`` once a model reply was
    sampled through it."""

    def __init__(self, codex_home: Path, thread: str) -> None:
        self.home = codex_home
        self.thread = thread
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        self._started: dict[int, str] = {}  # history_sequence -> the text of a user line
        self._status, self._since = "", time.monotonic()
        self._buffer: list[Sighting] = []  # read by busy(), not yet handed out by look()
        # what is there is from before us: only the message ids a model already answered
        # (a post of an earlier bridge serve, run after it stopped) are kept from it
        self.answered: set[str] = set()
        for _ in range(64):  # MAX_READ at a time: a long session's file in a few steps
            sightings = self.look()
            self.answered.update(*(message_ids(s.content) for s in sightings
                                   if s.stage == "taken"))
            if not sightings and self._read_all():
                break

    def _read_all(self) -> bool:
        try:
            return all(self._offsets.get(path, 0) >= path.stat().st_size
                       for path in rollout_paths(self.home, self.thread))
        except OSError:
            return True

    def problem(self) -> str | None:
        return rollout_problem(self.home, self.thread)

    def status(self) -> tuple[str, float]:
        return self._status, time.monotonic() - self._since

    def busy(self) -> bool:
        """Whether a turn runs now (its task_started without its end)."""
        self._buffer += self._read_new()
        return self._status == "busy"

    def look(self) -> list[Sighting]:
        seen, self._buffer = self._buffer + self._read_new(), []
        return seen

    def _read_new(self) -> list[Sighting]:
        seen: list[Sighting] = []
        for path in rollout_paths(self.home, self.thread):
            offset = self._offsets.setdefault(path, 0)
            try:
                size = path.stat().st_size
                if size <= offset:
                    continue
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read(min(size - offset, MAX_READ))
            except OSError:
                continue
            self._offsets[path] = offset + len(chunk)
            lines = (self._partial.pop(path, b"") + chunk).split(b"\n")
            self._partial[path] = lines[-1]
            for raw in lines[:-1]:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(line, dict):
                    seen += self._read(line)
        return seen

    def _read(self, line: dict[str, Any]) -> list[Sighting]:
        payload, meta = line.get("payload"), line.get("metadata")
        if not isinstance(payload, dict):
            return []
        if line.get("type") == "event_msg":
            kind = payload.get("type")
            if kind == "task_started":
                self._status, self._since = "busy", time.monotonic()
            elif kind in ("task_complete", "turn_aborted"):
                self._status, self._since = "idle", time.monotonic()
            return []
        if line.get("type") != "response_item" or not isinstance(meta, dict):
            return []
        if payload.get("role") == "user":
            position = meta.get("history_sequence")
            text = _texts(payload.get("content"))
            if isinstance(position, int) and text:
                self._started[position] = text
                return [Sighting("queued", text)]
            return []
        sampled = meta.get("sampled_through_sequence")
        if not isinstance(sampled, int):
            return []
        taken = [position for position in self._started if position <= sampled]
        return [Sighting("taken", self._started.pop(position)) for position in sorted(taken)]
