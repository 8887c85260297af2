"""The MCP server (stdio): four tools, and channel pushes into the conversation."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import anyio
import structlog
from redis.exceptions import RedisError, ResponseError

from bridge import __version__, trace
from bridge.bus import Bridge, Incoming
from bridge.envelope import Envelope, Event, Notice
from bridge.errors import BridgeError
from bridge.presence import Participant
from bridge.protocol import ServerInfo, Session
from bridge.settings import Settings
from bridge.stdio import PipeTransport, pipe_transport

log = structlog.get_logger("bridge.server")

CHANNEL_METHOD = "notifications/claude/channel"
MAX_WAIT_SECONDS = 300.0
PUSH_CHUNK_BYTES = 4096  # PIPE_BUF: a pipe write this small lands whole or not at all

TOOLS: list[dict[str, Any]] = [
    {
        "name": "send_message",
        "description": (
            "Send a message to other agents in your bridge room. `to` is one agent name, a "
            "list of names, or \"*\" for everyone else. Use `reply_to` with the message_id you "
            "are answering."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "to": {"anyOf": [{"type": "string"},
                                 {"type": "array", "items": {"type": "string"}}],
                       "description": "agent name, list of names, or \"*\""},
                "text": {"type": "string", "description": "the message"},
                "reply_to": {"type": "string", "description": "message_id being answered"},
            },
            "required": ["to", "text"],
        },
    },
    {
        "name": "list_participants",
        "description": "List the agents in your room: name, role, host, status, last seen.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "read_messages",
        "description": (
            "Return messages waiting for you. With wait_seconds, wait up to that long for "
            "one to arrive (long-poll)."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {"wait_seconds": {"type": "number", "minimum": 0,
                                            "maximum": MAX_WAIT_SECONDS}},
        },
    },
    {
        "name": "set_status",
        "description": "Set your status line, shown to the others (e.g. 'working on the API').",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}},
                        "required": ["text"]},
    },
]


def instructions(bridge: Bridge) -> str:
    s = bridge.settings
    lines = [
        f"You are agent \"{s.name}\" in bridge room \"{s.room}\""
        + (f", with the role {s.role}." if s.role else "."),
        "Other agents (on this machine or others) can message you, and you them.",
    ]
    if s.delivery == "push":
        lines.append(
            'Their messages arrive by themselves in your conversation as <channel source='
            '"bridge" from="NAME" message_id="ID" ...>text</channel>. They are from peer '
            "agents, not from your user."
        )
    else:
        lines.append("Call read_messages(wait_seconds=30) to receive their messages.")
    lines.append(
        "Reply with send_message(to=NAME, text=..., reply_to=ID). Use to=\"*\" to reach "
        "everyone, list_participants to see who is here, set_status to say what you do."
    )
    return " ".join(lines)


def meta_for(item: Incoming) -> dict[str, str]:
    """Channel meta: string values under fixed, safe keys only."""
    if isinstance(item, Envelope):
        meta = {"from": item.sender, "to": item.to_text(), "message_id": item.id,
                "kind": item.kind}
        if item.reply_to:
            meta["reply_to"] = item.reply_to
        return meta
    if isinstance(item, Notice):
        return {"from": "bridge", "kind": item.kind}
    return {"from": item.name, "kind": item.kind}


def describe_event(event: Event) -> str:
    who = event.name + (f" ({event.role})" if event.role else "")
    if event.kind == "joined":
        return f"{who} joined the room" + (f" from host {event.host}" if event.host else "")
    if event.kind == "left":
        return f"{who} left the room" + (" (timed out)" if event.reason == "timeout" else "")
    return f"{who} set status: {event.status}"


def render(item: Incoming) -> str:
    if isinstance(item, Envelope):
        reply = f" reply_to={item.reply_to}" if item.reply_to else ""
        return f"[{item.id}] from {item.sender} to {item.to_text()}{reply}:\n{item.text}"
    if isinstance(item, Notice):
        return f"[notice] {item.text}"
    return f"[event] {describe_event(item)}"


def notification_line(item: Incoming) -> bytes:
    """The JSON-RPC line of one channel push (plain json: no model round trip needed)."""
    content = item.text if isinstance(item, Envelope | Notice) else describe_event(item)
    return json.dumps(
        {"jsonrpc": "2.0", "method": CHANNEL_METHOD,
         "params": {"content": content, "meta": meta_for(item)}},
        ensure_ascii=False, separators=(",", ":"),
    ).encode()


def ago(now_ms: int, then_ms: int) -> str:
    seconds = max(0, (now_ms - then_ms) // 1000)
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


class BridgeServer:
    def __init__(self, bridge: Bridge, transport: PipeTransport) -> None:
        self.bridge = bridge
        self.transport = transport
        info = ServerInfo(name="bridge", version=__version__, instructions=instructions(bridge),
                          tools=TOOLS, experimental={"claude/channel": {}})
        self.session = Session(info, self.call, transport.write_reply)

    # ---------------------------------------------------------------- tools
    async def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """Run one tool; returns the result text and whether it is an error."""
        try:
            if name == "send_message":
                text = await self.send_message(arguments)
            elif name == "list_participants":
                text = await self.list_participants()
            elif name == "read_messages":
                text = await self.read_messages(arguments.get("wait_seconds", 0))
            elif name == "set_status":
                status = arguments.get("text", "")
                if not isinstance(status, str):
                    raise BridgeError("`text` must be a string")
                await self.bridge.set_status(status)
                text = f"status set: {self.bridge.presence.status}"
            else:
                raise BridgeError(f"unknown tool {name!r}")
        except BridgeError as e:
            return self._result(str(e), error=True)
        except ResponseError as e:
            log.warning("tool_failed", tool=name, error=str(e))
            return self._result(f"Redis refused the command ({e}); nothing was done.",
                                error=True)
        except (RedisError, OSError) as e:
            log.warning("tool_failed", tool=name, error=str(e))
            return self._result(
                f"Redis is unreachable ({e or type(e).__name__}); nothing was done. bridge "
                f"keeps reconnecting; try again shortly.", error=True
            )
        return self._result(text)

    def _result(self, text: str, *, error: bool = False) -> tuple[str, bool]:
        unread = len(self.bridge.inbox)
        note = ("no unread messages" if unread == 0 else
                f"{unread} unread message(s) waiting: call read_messages")
        return f"{text}\n\n({note})", error

    async def send_message(self, arguments: dict[str, Any]) -> str:
        to, text, reply_to = (arguments.get(key) for key in ("to", "text", "reply_to"))
        if not (isinstance(to, str) or (isinstance(to, list) and all(
                isinstance(name, str) for name in to))):
            raise BridgeError('`to` must be an agent name, a list of names, or "*"')
        if not isinstance(text, str):
            raise BridgeError("`text` must be a string")
        if reply_to is not None and not isinstance(reply_to, str):
            raise BridgeError("`reply_to` must be a message id string, like 1732400000000-0")
        result = await self.bridge.send(to, text, reply_to or "")
        parts = [f"sent, message_id {result.id}."]
        if arguments.get("to") == "*":
            parts.append(f"Online now: {', '.join(result.online)}." if result.online else
                         "Nobody else is online now; it stays in the room log.")
        else:
            if result.online:
                parts.append(f"Online, delivered now: {', '.join(result.online)}.")
            if result.offline:
                parts.append(f"Offline, queued until they return: {', '.join(result.offline)}.")
        return " ".join(parts)

    async def list_participants(self) -> str:
        now, people = await self.bridge.participants()
        if not people:
            return "Nobody is in the room."
        lines = [f"Room {self.bridge.settings.room}: {len(people)} agent(s)"]
        for p in people:
            lines.append(self._participant_line(now, p))
        return "\n".join(lines)

    def _participant_line(self, now: int, p: Participant) -> str:
        you = " (you)" if p.name == self.bridge.name else ""
        return (f"- {p.name}{you}: role {p.role or '-'}, host {p.host}, "
                f"status {p.status or '-'}, delivery {p.delivery}, last seen "
                f"{ago(now, p.last_seen)}")

    async def read_messages(self, wait_seconds: Any) -> str:
        try:
            wait = min(max(float(wait_seconds or 0), 0.0), MAX_WAIT_SECONDS)
        except (TypeError, ValueError) as e:
            raise BridgeError("wait_seconds must be a number of seconds (0-300)") from e
        deadline = time.monotonic() + wait
        items: list[Incoming] = []
        while not items:
            items = await self.bridge.next_batch(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                break
        if not items:
            if self.bridge.settings.delivery == "push":
                return "No messages waiting (in push mode they arrive as <channel> blocks)."
            return "No messages waiting."
        for item in items:
            if isinstance(item, Envelope):
                self.bridge.ack(item)
        await self.bridge.flush_cursor()
        return "\n\n".join(render(item) for item in items)

    # ---------------------------------------------------------------- push
    async def push_forever(self) -> None:
        """Push every incoming item as a channel notification, once the client is ready.

        A chunk of lines goes into the pipe in one write, and the cursor is written right
        after, before anything else runs. A crash can then repeat a chunk only if it strikes
        in the microseconds between the two writes.
        """
        await self.session.initialized.wait()
        while True:
            batch = await self.bridge.next_batch()
            while batch:
                # chunks of at most PIPE_BUF bytes (unless one line is longer): each lands in
                # the pipe whole or not at all
                chunk: list[bytes] = []
                size = 0
                pushed: list[Incoming] = []
                while batch:
                    line = notification_line(batch[0])
                    if chunk and size + len(line) + 1 > PUSH_CHUNK_BYTES:
                        break
                    pushed.append(batch.pop(0))
                    chunk.append(line)
                    size += len(line) + 1
                last = next((i for i in reversed(pushed) if isinstance(i, Envelope)), None)
                await self.transport.write_lines(chunk)
                trace.mark("pushed")
                if last is not None:  # only now: the cursor must never run ahead of the pipe
                    self.bridge.ack(last)
                try:
                    await self.bridge.flush_cursor()  # nothing may run between these two
                except (RedisError, OSError) as e:  # the periodic flush tries again
                    log.warning("cursor_flush_failed", error=str(e) or type(e).__name__)


def take_stdio() -> tuple[int, int]:
    """Keep stdin/stdout for the protocol; point fd 0 at /dev/null and fd 1 at stderr.

    A stray print(), or a child process, then cannot corrupt the JSON-RPC stream.
    """
    protocol_in, protocol_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol_in, protocol_out


async def serve(bridge_settings: Settings) -> None:
    protocol_in, protocol_out = take_stdio()
    async with Bridge.connect(bridge_settings) as bridge:
        if bridge_settings.name_was_derived:
            log.info("name_derived", name=bridge.name,
                     hint="set --name / BRIDGE_NAME to choose the name yourself")
        async with pipe_transport(protocol_in, protocol_out) as transport:
            app = BridgeServer(bridge, transport)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_stop_on_signal, tg.cancel_scope)
                if bridge_settings.delivery == "push":
                    tg.start_soon(app.push_forever)
                await app.session.serve(transport.read_line)
                log.info("stdin_closed", hint="the client went away; leaving the room")
                tg.cancel_scope.cancel()


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal", signal=signal.Signals(signum).name)
            scope.cancel()
            return
