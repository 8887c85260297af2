"""OpenCode (the ``opencode-ai`` npm package), as `bridge serve` meets it: recognising it, the
HTTP server of the OpenCode that started us, the session it runs, a prompt posted into it,
and the session's messages read back as evidence.

Measured with OpenCode 1.18.33 (docs/opencode.md):
- ``initialize`` says ``clientInfo.name == "opencode"``. The MCP server is a child of the
  OpenCode process and gets ``OPENCODE=1`` and ``OPENCODE_PID`` (that process), not a port nor
  a session id. One MCP server serves every session of that process.
- Started with ``--port N``, the TUI's HTTP server listens on 127.0.0.1:N before it starts its
  MCP servers; without ``--port`` (and under ``opencode run``) it listens nowhere. Its port is
  found from the process's listening sockets (``/proc/PID/net/tcp`` and the socket inodes of
  ``/proc/PID/fd``), and told from other listeners by ``GET /global/health``.
- ``POST /session/ID/prompt_async {"parts": [{"type": "text", "text": …}]}`` answers 204 and
  starts a model turn with the text as a user message (~0.2 s) in an idle session; in a busy
  one the TUI shows it QUEUED and the next step of the running turn takes it.
- ``GET /session`` lists the sessions of every OpenCode process that shares the storage (two
  TUIs in one folder see each other's), but ``GET /event`` (server-sent events) carries only
  this process's: ``session.status`` (busy, retry, idle) tells which session runs here.
- ``GET /session/ID/message?limit=N`` has the newest N messages; a prompt shows as a user
  message at once, and an assistant message created after it with a ``step-start`` part means
  a model answered a request that held it (message ids sort by creation). A failed model
  request leaves an assistant message without one, and the session retrying.

Used by `bridge serve` (bridge.mcp.opencode_delivery).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from bridge.transcript import Sighting

CLIENT_NAME = "opencode"
PID_VAR = "OPENCODE_PID"
PASSWORD_VAR, USERNAME_VAR = "OPENCODE_SERVER_PASSWORD", "OPENCODE_SERVER_USERNAME"
SESSION_PATTERN = re.compile(r"^ses_[A-Za-z0-9]{1,64}\Z")
TIMEOUT = 5.0  # one HTTP exchange with the local server (they take milliseconds)
STREAM_SILENCE = 60.0  # the event stream sends a heartbeat every 10 s: silent longer, it died
MAX_BODY = 16 * 1024 * 1024
WINDOW = 20  # the newest messages read back for evidence
LISTEN = "0A"  # a listening socket's state in /proc/net/tcp


def is_opencode(client_info: Any) -> bool:
    return isinstance(client_info, dict) and client_info.get("name") == CLIENT_NAME


class HttpError(Exception):
    pass


# what a failed exchange with the server raises (refused, reset, cut short, timed out)
BROKEN = (OSError, ValueError, anyio.IncompleteRead, anyio.BrokenResourceError,
          anyio.EndOfStream)


@dataclass(frozen=True)
class Door:
    """The HTTP server of the OpenCode process that started us."""
    host: str
    port: int
    pid: int
    auth: str = ""  # an Authorization header value, where OPENCODE_SERVER_PASSWORD is set

    def head(self, method: str, path: str, body: bytes | None) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{self.port}",
                 "Accept: application/json, text/event-stream", "Connection: close"]
        if self.auth:
            lines.append(f"Authorization: {self.auth}")
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def call(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        """One request; (status, the JSON answer or None). Raises HttpError."""
        body = None if payload is None else json.dumps(payload).encode()
        try:
            with anyio.fail_after(TIMEOUT):
                async with await anyio.connect_tcp(self.host, self.port) as stream:
                    await stream.send(self.head(method, path, body) + (body or b""))
                    reader = BufferedByteReceiveStream(stream)
                    status, headers = await _head(reader)
                    data = b"".join([chunk async for chunk in _body(reader, headers)])
        except BROKEN as e:
            raise HttpError(f"{method} {path}: {str(e) or type(e).__name__}") from e
        try:
            return status, json.loads(data) if data.strip() else None
        except ValueError:
            return status, None

    async def follow(self, path: str, seen: Callable[[dict[str, Any]], None]) -> None:
        """Read a server-sent event stream, handing each event's JSON to ``seen``, until the
        server ends it. Raises HttpError (also when it is silent too long)."""
        try:
            await self._follow(path, seen)
        except BROKEN as e:
            raise HttpError(f"GET {path}: {str(e) or type(e).__name__}") from e

    async def _follow(self, path: str, seen: Callable[[dict[str, Any]], None]) -> None:
        with anyio.fail_after(TIMEOUT):
            stream = await anyio.connect_tcp(self.host, self.port)
        async with stream:
            await stream.send(self.head("GET", path, None))
            reader = BufferedByteReceiveStream(stream)
            with anyio.fail_after(TIMEOUT):
                status, headers = await _head(reader)
            if status != 200:
                raise HttpError(f"GET {path} answered {status}")
            pending = b""
            chunks = _body(reader, headers, unbounded=True).__aiter__()
            while True:
                with anyio.fail_after(STREAM_SILENCE):
                    try:
                        chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        return
                *events, pending = (pending + chunk.replace(b"\r\n", b"\n")).split(b"\n\n")
                if len(pending) > MAX_BODY:
                    raise HttpError(f"an event of over {MAX_BODY} bytes")
                for event in events:
                    data = b"\n".join(line[5:].strip() for line in event.split(b"\n")
                                      if line.startswith(b"data:"))
                    try:
                        parsed = json.loads(data) if data else None
                    except ValueError:
                        continue
                    if isinstance(parsed, dict):
                        seen(parsed)


async def _head(reader: BufferedByteReceiveStream) -> tuple[int, dict[str, str]]:
    raw = await reader.receive_until(b"\r\n\r\n", 65536)
    status_line, *lines = raw.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise HttpError(f"not an HTTP answer: {status_line[:80]!r}")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _body(reader: BufferedByteReceiveStream, headers: dict[str, str], *,
                unbounded: bool = False) -> AsyncIterator[bytes]:
    """The body's bytes, chunk by chunk (chunked, a Content-Length, or up to the end)."""
    total = 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.receive_until(b"\r\n", 1024)).split(b";")[0], 16)
            if size == 0:
                return
            total += size
            if total > MAX_BODY and not unbounded:
                raise HttpError(f"an answer of over {MAX_BODY} bytes")
            yield await reader.receive_exactly(size)
            await reader.receive_exactly(2)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_BODY:
            raise HttpError(f"an answer of {length} bytes")
        if length:
            yield await reader.receive_exactly(length)
    else:
        while total <= MAX_BODY:
            try:
                chunk = await reader.receive()
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return
            total += len(chunk)
            yield chunk


def listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of each TCP socket the process ``pid`` listens on (Linux' /proc)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return []
    found = []
    for table, any_address in (("tcp", "127.0.0.1"), ("tcp6", "::1")):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[3] != LISTEN or fields[9] not in inodes:
                continue
            address, _, port = fields[1].partition(":")
            found.append((_address(address) or any_address, int(port, 16)))
    return found


def _address(hex_address: str) -> str:
    """A /proc/net/tcp address (little-endian words) as text; "" for the any-address."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if not words.strip(b"\0"):
        return ""
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    if words[:12] == b"\0" * 10 + b"\xff\xff":  # an IPv4-mapped address
        return ".".join(str(b) for b in words[12:])
    return ":".join(words[i:i + 2].hex() for i in range(0, 16, 2))


async def find_door(env: Mapping[str, str] | None = None) -> Door | str:
    """The HTTP server of the OpenCode that started us, or why there is none."""
    env = os.environ if env is None else env
    pid = env.get(PID_VAR, "")
    if not pid.isdigit() or not os.path.isdir(f"/proc/{pid}"):
        return (f"{PID_VAR} is {pid or 'not set'}: no OpenCode process to look for a server "
                f"in (bridge finds it through Linux' /proc)")
    password = env.get(PASSWORD_VAR, "")
    auth = ""
    if password:
        user = env.get(USERNAME_VAR) or "opencode"
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    sockets = listening(int(pid))
    for host, port in sockets:
        door = Door(host, port, int(pid), auth)
        try:
            status, health = await door.call("GET", "/global/health")
        except HttpError:
            continue
        if status == 401:
            return (f"OpenCode's server on port {port} asks for a password: set "
                    f"{PASSWORD_VAR} for bridge too (its MCP entry's environment)")
        if status == 200 and isinstance(health, dict) and health.get("healthy") is True:
            return door
    if not sockets:
        return (f"OpenCode (pid {pid}) listens on no port: start it with --port (e.g. "
                f"`opencode --port 4096`) for messages to be pushed into its session; "
                f"`opencode run` has no server to push into")
    return f"none of the ports OpenCode (pid {pid}) listens on answers as its server"


def _text(message: dict[str, Any]) -> str:
    parts = message.get("parts")
    return "\n".join(p["text"] for p in parts if isinstance(p, dict) and p.get("type") == "text"
                     and isinstance(p.get("text"), str)) if isinstance(parts, list) else ""


def _started(message: dict[str, Any]) -> bool:
    """An assistant message whose model stream has begun."""
    parts = message.get("parts")
    return isinstance(parts, list) and any(isinstance(p, dict) and p.get("type") ==
                                           "step-start" for p in parts)


class SessionMessages:
    """The messages of the session posts went into, read back: a witness for
    bridge.mcp.acks. A post shows as ``queued`` once it is a user message of the session, and
    ``taken`` once an assistant message created after it has begun its model stream.
    ``refresh`` reads (a request to the server); ``look`` hands out what it found."""

    def __init__(self, door: Door, status_of: Callable[[str | None], tuple[str, float]]
                 ) -> None:
        self.door, self.status_of = door, status_of  # (idle/busy, for how long) of a session
        self.session: str | None = None
        self._found: list[Sighting] = []
        self._waiting: dict[str, str] = {}  # user message id -> its text, not yet taken
        self._known: set[str] = set()
        self._read: str | None = None  # the session the two above are about

    def problem(self) -> str | None:
        return None

    def status(self) -> tuple[str, float]:
        return self.status_of(self.session)

    def look(self) -> list[Sighting]:
        found, self._found = self._found, []
        return found

    async def refresh(self) -> None:
        if self.session is None:
            return
        if self._read != self.session:
            self._read, self._waiting, self._known = self.session, {}, set()
        path = f"/session/{self.session}/message?limit={WINDOW}"
        status, messages = await self.door.call("GET", path)
        if status != 200 or not isinstance(messages, list):
            raise HttpError(f"GET {path} answered {status}")
        for message in messages:
            info = message.get("info") if isinstance(message, dict) else None
            if not isinstance(info, dict):
                continue
            mid = str(info.get("id", ""))
            if info.get("role") == "user" and mid not in self._known:
                self._known.add(mid)
                self._waiting[mid] = _text(message)
                self._found.append(Sighting("queued", self._waiting[mid]))
            elif info.get("role") == "assistant" and _started(message):
                for earlier in [m for m in self._waiting if m < mid]:
                    self._found.append(Sighting("taken", self._waiting.pop(earlier)))
