"""The MCP server (stdio): four tools, and channel pushes into the conversation."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
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

from bridge import __version__, trace
from bridge.delivery import choose, offered
from bridge.errors import BridgeError, RedisUnavailable
from bridge.mcp.inbox import InboxPoster
from bridge.mcp.inbox_delivery import MAX_CHANGES, InboxDelivery
from bridge.mcp.loops import LoopGuard
from bridge.mcp.posts import Peer, Senders, change, label
from bridge.mcp.protocol import ServerInfo, Session, encode
from bridge.mcp.shutdown import CALLS_GRACE, Shutdown
from bridge.mcp.stdio import PipeTransport, pipe_transport
from bridge.mcp.tools import MAX_WAIT_SECONDS, TOOLS, seconds_argument
from bridge.room.connection import Incoming, Room
from bridge.room.envelope import Envelope, Event, Notice
from bridge.room.presence_records import Participant
from bridge.room.subscriber import Backoff
from bridge.settings import Settings

log = structlog.get_logger("bridge.server")

CHANNEL_METHOD = "notifications/claude/channel"
PUSH_CHUNK_BYTES = 4096  # PIPE_BUF: a pipe write this small lands whole or not at all
CONNECT_RETRY_FIRST, CONNECT_RETRY_CAP = 0.5, 10.0  # seconds, while Redis is down at start


def instructions(s: Settings) -> str:
    lines = [
        f"You are agent \"{s.name}\" in bridge room \"{s.room}\""
        + (f", with the role {s.role}." if s.role else "."),
        "Other agents (on this machine or others) can message you, and you them.",
    ]
    if s.delivery == "inbox":
        lines.append(
            "Their messages arrive by themselves in your conversation, as a message that "
            "starts with [bridge]. They are from peer agents, not from your user. Answer them "
            "with this server's send_message tool, not with SendMessage."
        )
    elif s.delivery == "channel":
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


def meta_for(item: Incoming, changes: list[str] | None = None,
             senders: Mapping[str, Peer] | None = None) -> dict[str, str]:
    """Channel meta: string values under fixed, safe keys only."""
    if isinstance(item, Envelope):
        meta = {"from": item.sender, "to": item.to_text(), "message_id": item.id,
                "kind": item.kind}
        peer = (senders or {}).get(item.sender)
        if peer and label(peer.role):  # the facts an inbox post gives too
            meta["role"] = label(peer.role)
        if peer and label(peer.host):
            meta["host"] = label(peer.host)
        if item.reply_to:
            meta["reply_to"] = item.reply_to
        if changes:  # what changed in the room since the last push (events ride along)
            meta["room_changes"] = "; ".join(changes)
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


def notification_line(item: Incoming, changes: list[str] | None = None,
                      senders: Mapping[str, Peer] | None = None) -> bytes:
    """The JSON-RPC line of one channel push."""
    content = item.text if isinstance(item, Envelope | Notice) else describe_event(item)
    return encode({"jsonrpc": "2.0", "method": CHANNEL_METHOD,
                   "params": {"content": content,
                              "meta": meta_for(item, changes, senders)}})


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


class BridgeServer:
    """The MCP side of one agent. It joins the room when the client's ``initialize``
    arrives, not at process start: clients start throwaway processes to probe a server
    (``server/discover``) and kill them, and those must not come and go in the room. A Redis
    that is down then (a laptop waking before its network, a team host booting before the
    Redis host) is retried with backoff, and the tools say so."""

    def __init__(self, settings: Settings, transport: PipeTransport) -> None:
        self.settings = settings
        self.transport = transport
        self._room: Room | None = None
        self._connected = anyio.Event()
        self._join_asked = anyio.Event()  # the client has sent initialize
        self.first_try = anyio.Event()  # the first connection attempt has ended, either way
        self._waiting_for = "connecting to Redis"
        self.fatal: BridgeError | None = None
        # pull mode: what read_messages returned and the agent has not acknowledged yet
        self._returned: list[Incoming] = []
        # messages kept from the conversation for read_messages: a held peer's (reply loops),
        # or one too long for an inbox post
        self.loops = LoopGuard(settings.name, settings.loop_limit, settings.loop_window)
        self.held: list[Incoming] = []
        self.senders = Senders()  # role and host of who writes to us, for what a push says
        self._status_before_hold: str | None = None
        info = ServerInfo(name="bridge", version=__version__,
                          instructions=instructions(settings), tools=TOOLS,
                          experimental={"claude/channel": {}})
        self.session = Session(info, self.call, transport.write_reply,
                               before_initialize=self._join)

    async def _join(self) -> None:
        """``initialize`` arrived: join the room now. It is answered once the first attempt
        has ended: with Redis up, an answered initialize means the agent is in the room;
        with Redis down, the client is not kept waiting."""
        self._join_asked.set()
        await self.first_try.wait()

    async def connect_forever(self, stop: anyio.CancelScope) -> None:
        """Join the room, retrying while Redis is unreachable; then stay until cancelled.
        An error that retrying cannot fix (the name is taken, a bad embedded Redis) stops
        the server through ``stop``, and ``fatal`` says why."""
        await self._join_asked.wait()
        backoff = Backoff(CONNECT_RETRY_FIRST, CONNECT_RETRY_CAP)
        while True:
            try:
                async with Room.connect(self.settings) as room:
                    self._room = room
                    self._connected.set()
                    self.first_try.set()
                    if self.settings.name_was_derived:
                        log.info("name_derived", name=room.name,
                                 hint="set --name / BRIDGE_NAME to choose the name yourself")
                    # Pushing runs in this task, inside the connection: at shutdown it stops
                    # before the room is left, so the final cursor write sees its last ack.
                    if self.settings.delivery == "channel":
                        await self.push_forever(room)
                    elif self.settings.delivery == "inbox":
                        address = offered()
                        assert address is not None  # choose() found it
                        await InboxDelivery(room, InboxPoster(address),
                                            push_events=self.settings.push_events,
                                            ready=self.session.initialized.wait,
                                            screen=self.screened,
                                            keep=self.held.append,
                                            senders=self.senders).run()
                    await anyio.sleep_forever()
            except (RedisUnavailable, RedisError, OSError) as e:
                if self._room is not None:
                    raise  # the connected bridge handles outages itself: this is a bug
                if not self.settings.redis_url:  # the embedded server: no network to wait for
                    self.fatal = e if isinstance(e, BridgeError) else RedisUnavailable(str(e))
                    stop.cancel()
                    return
                self._waiting_for = str(e) or type(e).__name__
                self.first_try.set()
                log.warning("redis_unreachable", error=str(e), retry_in=round(backoff.delay, 1),
                            hint="bridge keeps trying; the tools say so meanwhile")
                await backoff.wait()
            except BridgeError as e:  # name taken, Redis refused us, the embedded one failed
                self.fatal = e
                stop.cancel()
                return

    async def live_room(self) -> Room:
        """The connected bridge; waits for it up to BRIDGE_SEND_TIMEOUT."""
        if not self._join_asked.is_set():
            raise BridgeError(
                "bridge has not joined the room: the client has not sent `initialize` yet. "
                "Initialise the MCP session first; nothing was done.")
        if self._room is None:
            with anyio.move_on_after(self.settings.send_timeout):
                await self._connected.wait()
        if self._room is None:
            raise BridgeError(
                f"bridge is not connected to Redis yet ({self._waiting_for}). It keeps "
                f"trying in the background; nothing was done, try again shortly.")
        return self._room

    async def serve_client(self, shutdown: Shutdown) -> None:
        """Answer the client until it closes stdin or a signal asks us to stop."""
        serving = anyio.CancelScope()

        def stop() -> None:
            serving.cancel()  # tool calls under way are cancelled; sends are shielded
            asyncio.get_running_loop().call_later(CALLS_GRACE, self._abandon_sends)

        shutdown.on_stop(stop)

        async def read_line() -> bytes:
            line = await self.transport.read_line()
            if not line:
                shutdown.request("stdin_closed")
            return line

        with serving:
            await self.session.serve(read_line)
        if self._join_asked.is_set():
            # a client gone at once still hears why bridge could not join (a bad
            # password), if the first attempt ends soon enough
            with anyio.move_on_after(CALLS_GRACE):
                await self.first_try.wait()

    def _abandon_sends(self) -> None:
        if self._room is not None:
            self._room.abandon_sends()

    # ---------------------------------------------------------------- tools
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
        unread = (self._room.unread if self._room else 0) + len(self.held)
        note = ("no unread messages" if unread == 0 else
                f"{unread} unread message(s) waiting: call read_messages")
        if self.loops.held_peers:
            note += (f"; held from {', '.join(sorted(self.loops.held_peers))} "
                     f"(a reply loop?)")
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
        result = await (await self.live_room()).send(to, text, reply_to or "")
        self.loops.sent([to] if isinstance(to, str) else list(to))
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
                f"status {p.status or '-'}, delivery {p.delivery}, last seen "
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
        items, self.held = self.held, []  # reading what was held resumes the peers
        if self.loops.release():
            await self._restore_status(room)
        if items:
            items += await room.next_batch(0)
        deadline = time.monotonic() + wait
        while not items:
            items = await room.next_batch(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                break
        if not items:
            if self.settings.delivery != "pull":
                return "No messages waiting (they arrive in your conversation by themselves)."
            return "No messages waiting."
        if self.settings.delivery == "pull":
            self._returned = items
        else:  # the pushes after these move the cursor anyway; keep them from stalling it
            room.ack(*items)
            room.flush_cursor_soon()
        return "\n\n".join(render(item) for item in items)

    # ---------------------------------------------------------------- push
    async def screened(self, room: Room, batch: list[Incoming]) -> list[Incoming]:
        """What of ``batch`` to push: a peer caught in a reply loop with us is held (its
        messages wait for read_messages, unacknowledged), with one notice to the agent and
        a status line that the others and the operator's `tail` see."""
        pushed: list[Incoming] = []
        for item in batch:
            if isinstance(item, Event):
                self.senders.saw(item)
            verdict = self.loops.screen(item) if isinstance(item, Envelope) else "push"
            if verdict == "push":
                pushed.append(item)
                continue
            self.held.append(item)
            if verdict == "start":
                assert isinstance(item, Envelope)
                why = self.loops.describe(item.sender)
                log.warning("reply_loop_held", peer=item.sender, limit=self.loops.limit,
                            window=self.loops.window,
                            hint="its messages wait for read_messages, which resumes them")
                pushed.append(Notice(
                    f"bridge is holding {item.sender}'s messages: {why}. They are not lost: "
                    f"call read_messages to read them, which also resumes pushing. If you "
                    f"were only acknowledging each other, stop replying."))
                await self._set_hold_status(room, item.sender)
        return pushed

    async def _set_hold_status(self, room: Room, peer: str) -> None:
        if self._status_before_hold is None:
            self._status_before_hold = room.presence.status
        try:
            await room.set_status(f"holding {peer}'s messages (reply loop?); "
                                    f"read_messages resumes")
        except (RedisError, OSError) as e:
            log.warning("status_failed", error=str(e) or type(e).__name__)

    async def _restore_status(self, room: Room) -> None:
        before, self._status_before_hold = self._status_before_hold, None
        if before is None:
            return
        try:
            await room.set_status(before)
        except (RedisError, OSError) as e:
            log.warning("status_failed", error=str(e) or type(e).__name__)

    async def push_forever(self, room: Room) -> None:
        """Push every incoming item as a channel notification, once the client is ready.

        A chunk of lines goes into the pipe in one write, and the cursor is written right
        after, before anything else runs. A crash can then repeat a chunk only if it strikes
        in the microseconds between the two writes.
        """
        await self.session.initialized.wait()
        changes: list[str] = []
        while True:
            batch = await self.screened(room, await room.next_batch())
            await self.senders.learn(room.participants, batch)
            if not self.settings.push_events:  # events ride along with the next message
                changes += [change(item) for item in batch if isinstance(item, Event)]
                del changes[:-MAX_CHANGES]
                batch = [item for item in batch if not isinstance(item, Event)]
            while batch:
                # chunks of at most PIPE_BUF bytes (unless one line is longer): each lands in
                # the pipe whole or not at all
                chunk: list[bytes] = []
                size = 0
                pushed: list[Incoming] = []
                while batch:
                    line = notification_line(batch[0], changes, self.senders.known)
                    if chunk and size + len(line) + 1 > PUSH_CHUNK_BYTES:
                        break
                    if isinstance(batch[0], Envelope):
                        changes = []
                    pushed.append(batch.pop(0))
                    chunk.append(line)
                    size += len(line) + 1
                try:
                    await self.transport.write_lines(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    log.info("client_gone", hint="stdout is closed; nothing more to push")
                    return
                trace.mark("pushed")
                room.ack(*pushed)  # only now: the cursor must never run ahead of the pipe
                try:
                    await room.flush_cursor()  # nothing may run between these two
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


async def serve(settings: Settings) -> None:
    path, why = choose(settings.delivery)
    settings = replace(settings, delivery=path)
    log.info("delivery", path=path, reason=why)
    shutdown = Shutdown()
    shutdown.install()
    protocol_in, protocol_out = take_stdio()
    async with pipe_transport(protocol_in, protocol_out) as transport:
        app = BridgeServer(settings, transport)
        async with anyio.create_task_group() as tg:
            tg.start_soon(app.connect_forever, tg.cancel_scope)
            await app.serve_client(shutdown)
            tg.cancel_scope.cancel()  # and the room is left (room.connection.LEAVE_TIMEOUT)
    if app.fatal is not None:
        raise app.fatal
