"""Claude Code's session transcript, read as evidence that an inbox post reached the model.

Claude Code writes nothing back on its session inbox, and a post it has queued dies with it
(killed, or ``/exit`` while its model is busy; ``--resume`` does not replay it). What a
``bridge serve`` that Claude Code started can see instead (measured with Claude Code 2.1.328
and 2.1.337, docs/guarantees.md) is the session's transcript,
``<config>/projects/<project>/<session id>.jsonl``, one JSON object per line:

- ``{"type": "queue-operation", "operation": "enqueue", "content": TEXT}`` about 0.1 s after
  a post was read off the socket: queued, not yet seen by the model;
- ``{"type": "user", "message": {"content": "Another Claude session sent a message:\\nTEXT…"},
  "origin": {"kind": "peer", "verifiedPeerPid": PID}}`` written just *after* the model
  request that carries it was sent (a post absorbed while a tool runs is an ``attachment``
  line with the same ``origin`` and the text as ``prompt``): the model has it.

PID is the posting process, so a line is ours only if it names our pid: an old session's lines
(``--resume``) and other senders' never match. The session id is in
``<config>/sessions/<claude pid>.json`` (kept current on ``/clear``, which starts a new
transcript without restarting us) and, at our start, in ``CLAUDE_CODE_SESSION_ID``.

The format is Claude Code's internal one: where it cannot be found or read, bridge says so
and the inbox path falls back to moving the cursor once a post is written (bridge.mcp.acks).
Used by `bridge serve` (bridge.mcp) and `bridge doctor` (bridge.ops).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SESSION_VAR = "CLAUDE_CODE_SESSION_ID"
CONFIG_VAR = "CLAUDE_CONFIG_DIR"
MAX_ANCESTORS = 6  # bridge serve may run under a wrapper (sh -c, uvx, npx) below Claude Code
MAX_READ = 8 * 1024 * 1024  # bytes read in one look (a huge resumed transcript: in steps)
MAX_LINE = 4 * 1024 * 1024  # a longer line is skipped: no post of ours is that long


@dataclass(frozen=True)
class Sighting:
    """A post of ours seen in the transcript: ``queued`` (read off the socket) or ``taken``
    (in a model request). ``content`` holds the post's text, perhaps inside a wrapper."""

    stage: str
    content: str


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    configured = env.get(CONFIG_VAR, "")
    return Path(configured) if configured else Path(env.get("HOME") or Path.home()) / ".claude"


def ancestors(pid: int) -> list[int]:
    """``pid`` and its parents (Linux: /proc; elsewhere ``pid`` alone)."""
    found = [pid]
    for _ in range(MAX_ANCESTORS):
        try:
            stat = Path(f"/proc/{found[-1]}/stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if parent <= 1:
            break
        found.append(parent)
    return found


def _ours(line: dict[str, object], pid: int) -> bool:
    for holder in (line, line.get("attachment")):
        origin = holder.get("origin") if isinstance(holder, dict) else None
        if isinstance(origin, dict) and origin.get("verifiedPeerPid") == pid:
            return True
    return False


def _text(value: object) -> str:
    """A message's content as text: a string, or the text of its blocks."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(str(block.get("text", "")) for block in value
                         if isinstance(block, dict))
    return ""


def sighting(line: dict[str, object], pid: int) -> Sighting | None:
    """What one transcript line says about our posts, if anything."""
    kind = line.get("type")
    if kind == "queue-operation" and line.get("operation") == "enqueue":
        return Sighting("queued", _text(line.get("content")))
    if not _ours(line, pid):
        return None
    if kind == "user":
        message = line.get("message")
        return Sighting("taken", _text(message.get("content") if isinstance(message, dict)
                                       else None))
    attachment = line.get("attachment")
    if kind == "attachment" and isinstance(attachment, dict):
        return Sighting("taken", _text(attachment.get("prompt")))
    return None


class Transcript:
    """The transcript(s) of the Claude Code session that started this process, read as they
    grow. ``look()`` is cheap when nothing changed (a few stat calls)."""

    def __init__(self, env: Mapping[str, str] | None = None, pid: int | None = None) -> None:
        env = os.environ if env is None else env
        self.pid = os.getpid() if pid is None else pid
        self.config = config_dir(env)
        self.env_session = env.get(SESSION_VAR, "")
        self.session_file = self._find_session_file()
        self._session_stamp: tuple[float, int] | None = None
        self._session = self.env_session
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        self.started = time.time()
        for path in self._paths():  # what is there now is from before us: read on from its end
            self._offsets[path] = path.stat().st_size

    def _find_session_file(self) -> Path | None:
        for pid in ancestors(os.getppid()):
            candidate = self.config / "sessions" / f"{pid}.json"
            if candidate.is_file():
                return candidate
        return None

    def problem(self) -> str | None:
        """None if transcripts can be found, else why not."""
        if not self.config.is_dir():
            return f"no Claude Code configuration folder at {self.config}"
        if self.session_file is None and not self.env_session:
            return (f"no session record of the Claude Code that started bridge in "
                    f"{self.config / 'sessions'}, and {SESSION_VAR} is not set")
        return None

    def session_id(self) -> str:
        """The session's id now (it changes on /clear)."""
        if self.session_file is not None:
            try:
                stat = self.session_file.stat()
                stamp = (stat.st_mtime, stat.st_size)
                if stamp != self._session_stamp:
                    self._session_stamp = stamp
                    record = json.loads(self.session_file.read_text())
                    self._session = str(record.get("sessionId") or self._session)
            except (OSError, ValueError, AttributeError):
                pass
        return self._session

    def status(self) -> tuple[str, float]:
        """("idle" | "busy" | "", seconds since it last changed) from the session record."""
        if self.session_file is None:
            return "", 0.0
        try:
            record = json.loads(self.session_file.read_text())
            changed = float(record.get("statusUpdatedAt") or 0) / 1000
            return str(record.get("status") or ""), max(0.0, time.time() - changed)
        except (OSError, ValueError, AttributeError, TypeError):
            return "", 0.0

    def _paths(self) -> list[Path]:
        session = self.session_id()
        if not session or "/" in session or session.startswith("."):
            return []
        return sorted((self.config / "projects").glob(f"*/{session}.jsonl"))

    def look(self) -> list[Sighting]:
        """What the transcripts say about our posts since the last look."""
        seen: list[Sighting] = []
        for path in self._paths():
            offset = self._offsets.setdefault(path, 0)  # new since we started: all of it
            try:
                size = path.stat().st_size
                if size < offset:  # rewritten: read it again
                    offset, self._partial[path] = 0, b""
                if size == offset:
                    continue
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read(min(size - offset, MAX_READ))
            except OSError:
                continue
            self._offsets[path] = offset + len(chunk)
            data = self._partial.pop(path, b"") + chunk
            lines = data.split(b"\n")
            if len(lines[-1]) <= MAX_LINE:
                self._partial[path] = lines[-1]  # not ended yet
            for raw in lines[:-1]:
                found = self._read(raw)
                if found is not None:
                    seen.append(found)
        return seen

    def _read(self, raw: bytes) -> Sighting | None:
        # most lines are not about posts: skip them without parsing
        if b'"enqueue"' not in raw and b'"verifiedPeerPid"' not in raw:
            return None
        try:
            line = json.loads(raw)
        except ValueError:
            return None
        return sighting(line, self.pid) if isinstance(line, dict) else None
