"""The tools bridge offers an agent: their MCP definitions (JSON Schema inputs), and what
answers them (ToolCalls). The task board's two are bridge.mcp.task_tools, the file claims'
one bridge.mcp.claim_tools."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.errors import BridgeError
from bridge.mcp.channel import describe_event
from bridge.mcp.claim_tools import CLAIM_TOOL_NAMES, CLAIM_TOOLS, answer_claims
from bridge.mcp.loops import Holds
from bridge.mcp.task_tools import TASK_TOOL_NAMES, TASK_TOOLS, answer_task
from bridge.room.connection import Incoming, Room
from bridge.room.envelope import Envelope, Notice
from bridge.room.presence_records import Participant
from bridge.settings import Settings

log = structlog.get_logger("bridge.server")  # the name logs have always carried

MAX_WAIT_SECONDS = 300.0


def seconds_argument(arguments: dict[str, Any], name: str, maximum: float) -> float:
    """A number of seconds from 0 to ``maximum``; absent means 0. Anything else (a string,
    a boolean, NaN, an infinity, a negative number) is refused: NaN once made a long-poll
    spin without ever yielding."""
    value = arguments.get(name, 0)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value) or not 0 <= value <= maximum:
        raise BridgeError(f"{name} must be a number of seconds from 0 to {maximum:g}, not "
                          f"{value!r:.40}; e.g. {name}=30")
    return float(value)

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
    *TASK_TOOLS,
    *CLAIM_TOOLS,
]


BOARD_TOOL_NAMES = TASK_TOOL_NAMES | CLAIM_TOOL_NAMES


def listed(settings: Settings) -> list[dict[str, Any]]:
    """The tools of `tools/list`: the board's only with BRIDGE_BOARD_TOOLS (the default)."""
    if settings.board_tools:
        return TOOLS
    return [tool for tool in TOOLS if tool["name"] not in BOARD_TOOL_NAMES]


def render(item: Incoming) -> str:
    if isinstance(item, Envelope):
        reply = f" reply_to={item.reply_to}" if item.reply_to else ""
        return f"[{item.id}] from {item.sender} to {item.to_text()}{reply}:\n{item.text}"
    if isinstance(item, Notice):
        return f"[notice] {item.text}"
    return f"[event] {describe_event(item)}"


def redis_failure(error: RedisError | OSError) -> str:
    """A tool's answer to a failed Redis command. "Unreachable" only when Redis did not
    answer (no connection, a timeout); otherwise what Redis answered."""
    reason = str(error) or type(error).__name__
    if isinstance(error, AuthenticationError):
        return (f"Redis refused our login ({reason}); nothing was done. Check the user and "
                f"password in the Redis URL (--redis / BRIDGE_REDIS_URL).")
    if isinstance(error, BusyLoadingError):
        return (f"Redis is still loading its data after a restart ({reason}); nothing was "
                f"done, try again shortly.")
    if isinstance(error, ResponseError):
        return f"Redis refused the command ({reason}); nothing was done."
    if isinstance(error, RedisConnectionError | RedisTimeoutError | TimeoutError | OSError):
        return (f"Redis is unreachable ({reason}); nothing was done. bridge keeps "
                f"reconnecting; try again shortly.")
    return (f"Redis answered something bridge did not expect ({type(error).__name__}: "
            f"{reason}); nothing was done.")


def ago(now_ms: int, then_ms: int) -> str:
    seconds = max(0, (now_ms - then_ms) // 1000)
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


class ToolCalls:
    """Answers the tool calls of one agent. ``live_room`` waits for the room (or says why
    there is none), ``current_room`` is the room if joined."""

    def __init__(self, settings: Settings, holds: Holds,
                 live_room: Callable[[], Awaitable[Room]],
                 current_room: Callable[[], Room | None]) -> None:
        self.settings = settings
        self.holds = holds
        self.live_room = live_room
        self.current_room = current_room
        # why nothing is pushed to a client that could be pushed to ("": nothing to say)
        self.not_pushed: Callable[[], str] = lambda: ""
        # pull mode: what read_messages returned and the agent has not acknowledged yet
        self._returned: list[Incoming] = []
        self._long_polls: set[anyio.CancelScope] = set()  # read_messages calls that wait
        self._input_closed = False

    def input_closed(self) -> None:
        """The client closed stdin: long polls (under way, or read before and not yet
        started) answer with what they have."""
        self._input_closed = True
        for waiting in list(self._long_polls):
            waiting.cancel()

    async def call(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """Run one tool; returns the result text and whether it is an error."""
        try:
            if name == "send_message":
                text = await self.send_message(arguments)
            elif name == "list_participants":
                text = await self.list_participants()
            elif name == "read_messages":
                text = await self.read_messages(arguments)
            elif name == "set_status":
                status = arguments.get("text", "")
                if not isinstance(status, str):
                    raise BridgeError("`text` must be a string")
                try:
                    status.encode()
                except UnicodeEncodeError as e:  # it would fail every later re-claim
                    raise BridgeError("the status is not valid Unicode (a lone surrogate); "
                                      "send plain UTF-8 text") from e
                room = await self.live_room()
                await room.set_status(status)
                text = f"status set: {room.presence.status}"
            elif name in TASK_TOOL_NAMES:
                text = await answer_task(await self.live_room(), name, arguments)
            elif name in CLAIM_TOOL_NAMES:
                text = await answer_claims(await self.live_room(), arguments)
            else:
                raise BridgeError(f"unknown tool {name!r}")
        except BridgeError as e:
            return self._result(str(e), error=True)
        except (RedisError, OSError) as e:
            log.warning("tool_failed", tool=name, error=str(e) or type(e).__name__,
                        error_type=type(e).__name__)
            return self._result(redis_failure(e), error=True)
        return self._result(text)

    def _result(self, text: str, *, error: bool = False) -> tuple[str, bool]:
        room = self.current_room()
        unread = (room.unread if room else 0) + len(self.holds.held)
        note = ("no unread messages" if unread == 0 else
                f"{unread} unread message(s) waiting: call read_messages")
        if self.holds.loops.held_peers:
            note += (f"; held from {', '.join(sorted(self.holds.loops.held_peers))} "
                     f"(a reply loop?)")
        if why := self.not_pushed():
            note += f"; {why}"
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
        room = await self.live_room()
        # Shielded: at a stop a send under way gets CALLS_GRACE to be answered, then is
        # abandoned (Room.abandon_sends), rather than cut off with its reply unknown.
        with anyio.CancelScope(shield=True):
            result = await room.sender.send(to, text, reply_to or "")
        self.holds.loops.sent([to] if isinstance(to, str) else list(to))
        parts = [f"sent, message_id {result.id}.",
                 *result.recipients(self.settings.backlog_max, broadcast=to == "*")]
        if result.durability():
            parts.append(result.durability())
        return " ".join(parts)

    async def list_participants(self) -> str:
        now, people = await (await self.live_room()).participants()
        if not people:
            return "Nobody is in the room."
        lines = [f"Room {self.settings.room}: {len(people)} agent(s)"]
        for p in people:
            lines.append(self._participant_line(now, p))
        return "\n".join(lines)

    def _participant_line(self, now: int, p: Participant) -> str:
        you = " (you)" if p.name == self.settings.name else ""
        return (f"- {p.name}{you}: role {p.role or '-'}, host {p.host}, "
                f"status {p.status or '-'}, delivery {p.delivery}"
                f"{f' ({p.client})' if p.client else ''}, last seen "
                f"{ago(now, p.last_seen)}")

    async def read_messages(self, arguments: dict[str, Any]) -> str:
        """What is waiting, after waiting up to ``wait_seconds`` for something to arrive.

        Pull mode is at-least-once: what one call returns is acknowledged by the agent's
        next call (it asks again, so it has the answer), and only then does the cursor move
        past it. A crash, a client gone before the answer reached it, or Redis down in
        between cannot lose it: the next session returns it again. Nothing here waits for
        Redis: the cursor is written in the background."""
        wait = seconds_argument(arguments, "wait_seconds", MAX_WAIT_SECONDS)
        room = await self.live_room()
        answered, self._returned = self._returned, []
        if answered:
            room.ack(*answered)
            room.flush_cursor_soon()
        items = self.holds.take()  # reading what was held resumes the peers
        self.holds.release(room)
        if items:
            items += await room.next_batch(0)
        deadline = time.monotonic() + (0.0 if self._input_closed else wait)
        with anyio.CancelScope() as waiting:
            self._long_polls.add(waiting)  # the client closed stdin: answer now
            try:
                while not items:
                    items = await room.next_batch(max(0.0, deadline - time.monotonic()))
                    if time.monotonic() >= deadline:
                        break
            finally:
                self._long_polls.discard(waiting)
        if not items:
            if self.settings.delivery != "pull":
                return "No messages waiting (they arrive in your conversation by themselves)."
            return "No messages waiting."
        if self.settings.delivery == "pull":
            self._returned += items  # (two calls at once: both answers wait for the next)
        else:  # the pushes after these move the cursor anyway; keep them from stalling it
            room.ack(*items)
            room.flush_cursor_soon()
        return "\n\n".join(render(item) for item in items)
