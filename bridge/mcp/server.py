"""The MCP server (stdio) of one agent: joining the room when the client initialises, the
session, and stopping. The tools are answered by bridge.mcp.tools, delivery is
bridge.mcp.channel (channel), bridge.mcp.inbox_delivery (inbox) or read_messages (pull)."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from typing import Any

import anyio
import structlog
from redis.exceptions import RedisError

from bridge import __version__, codex, opencode
from bridge.delivery import choose, offered
from bridge.errors import BridgeError, RedisUnavailable, SettingsError
from bridge.mcp.channel import push_forever
from bridge.mcp.clients import CHANNEL_CAPABILITY, client_label, pull_reason, takes_channel
from bridge.mcp.codex_delivery import CodexDelivery
from bridge.mcp.inbox import InboxPoster
from bridge.mcp.inbox_delivery import InboxDelivery
from bridge.mcp.loops import Holds
from bridge.mcp.opencode_delivery import PUSHED as OPENCODE_PUSHED
from bridge.mcp.opencode_delivery import OpenCodeDelivery
from bridge.mcp.opencode_delivery import choose as opencode_path
from bridge.mcp.posts import Senders
from bridge.mcp.protocol import EOF_GRACE, ServerInfo, Session
from bridge.mcp.shutdown import CALLS_GRACE, Shutdown
from bridge.mcp.stdio import PipeTransport, pipe_transport
from bridge.mcp.tools import ToolCalls, listed
from bridge.redis.subscriber import Backoff
from bridge.room.connection import Room
from bridge.settings import Settings
from bridge.transcript import Transcript

log = structlog.get_logger("bridge.server")

CONNECT_RETRY_FIRST, CONNECT_RETRY_CAP = 0.5, 10.0  # seconds, while Redis is down at start
# what moves the cursor on the paths that have no witness (the inbox's: bridge.mcp.acks)
NO_WITNESS = {
    "channel": "none: Claude Code acknowledges no channel notification, so the cursor passes "
               "a push once it is written to stdout",
    "pull": "the agent's next read_messages call acknowledges what the last one returned",
}


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
    elif s.delivery == "opencode":
        lines.append(OPENCODE_PUSHED)
    elif s.delivery == "codex":
        lines.append(
            "Call list_participants once now, before anything else: bridge then knows this "
            "session and delivers their messages into it by themselves, as a message that "
            "starts with \"(Sent to you through bridge\". They are from peer agents, not from "
            "your user."
        )
    else:
        lines.append("Call read_messages(wait_seconds=30) to receive their messages.")
    lines.append(
        "Reply with send_message(to=NAME, text=..., reply_to=ID). Use to=\"*\" to reach "
        "everyone, list_participants to see who is here, set_status to say what you do."
    )
    if s.board_tools:
        lines.append("The room's task board: tasks, task. Claim files with claims before "
                     "editing them.")
    return " ".join(lines)


class BridgeServer:
    """The MCP side of one agent. It joins the room when the client's ``initialize``
    arrives, not at process start: clients start throwaway processes to probe a server
    (``server/discover``) and kill them, and those must not come and go in the room. A Redis
    that is down then (a laptop waking before its network, a team host booting before the
    Redis host) is retried with backoff, and the tools say so."""

    def __init__(self, settings: Settings, transport: PipeTransport, *,
                 chosen: bool = False) -> None:
        self.settings = settings
        self.chosen = chosen  # the path was chosen (--delivery auto), not asked for
        self.transport = transport
        self._room: Room | None = None
        self._connected = anyio.Event()
        self._join_asked = anyio.Event()  # the client has sent initialize
        self.first_try = anyio.Event()  # the first connection attempt has ended, either way
        self._waiting_for = "connecting to Redis"
        self.fatal: BridgeError | None = None
        self.senders = Senders()  # role and host of who writes to us, for what a push says
        # messages kept from the conversation for read_messages (reply loops, too long)
        self.holds = Holds(settings, self.senders)
        self.tools = ToolCalls(settings, self.holds, self.live_room, lambda: self._room)
        info = ServerInfo(name="bridge", version=__version__,
                          instructions=instructions(settings), tools=listed(settings),
                          experimental={CHANNEL_CAPABILITY: {}})
        self.session = Session(info, self.tools.call, transport.write_reply,
                               before_initialize=self._join, saw_call_meta=self._saw_meta)
        self.codex_turn: codex.Turn | None = None  # the thread a Codex client serves
        self.codex: CodexDelivery | None = None
        self.tools.not_pushed = self._not_pushed

    def _not_pushed(self) -> str:
        """What the tools say while a Codex client is not pushed to."""
        if self.codex is None:
            return ""
        if self.codex.pull_reason:
            return (f"bridge cannot push messages into this session ({self.codex.pull_reason}): "
                    f"call read_messages to get them")
        if self.codex.failing:
            return (f"bridge could not push the last messages into this session "
                    f"({self.codex.failing}); it tries again, and read_messages returns them "
                    f"meanwhile")
        return ""

    async def _join(self, params: dict[str, Any]) -> None:
        """``initialize`` arrived: pick the path for this client, and join the room now. It
        is answered once the first attempt has ended: with Redis up, an answered initialize
        means the agent is in the room; with Redis down, the client is not kept waiting."""
        client = params.get("clientInfo")
        self._use(replace(self.settings, client=client_label(client)))
        log.info("client", client=self.settings.client or "(no clientInfo)")
        if codex.is_codex(client) and self.settings.delivery != "pull":
            self._use(replace(self.settings, delivery="codex"))
            log.info("delivery", path="codex", reason="the client is Codex (clientInfo); "
                     "pushed with `codex queue` once its first bridge tool call names its "
                     "thread")
        elif opencode.is_opencode(client) and self.settings.delivery != "pull":
            # its server, if it has one (--port): found now, posted to once joined
            path, why, self.opencode_door = await opencode_path()
            self._use(replace(self.settings, delivery=path))
            log.info("delivery", path=path, reason=why)
        elif self.settings.delivery == "codex":
            self.fatal = SettingsError(  # connect_forever stops the server with it
                f"--delivery codex / BRIDGE_DELIVERY=codex, but the client is not Codex "
                f"(clientInfo {str(client)[:100]}): use --delivery auto")
        elif self.settings.delivery == "channel" and self.chosen and not takes_channel(params):
            # the fallback for a Claude Code without its inbox; another client would drop the
            # notifications while the cursor moved past them
            self._use(replace(self.settings, delivery="pull"))
            log.info("delivery", path="pull", reason=pull_reason(client))
        self._join_asked.set()
        # answered once the first attempt has ended, or at once when the client has closed
        # stdin (it is still owed the answer: initialize first)
        await first_of(self.first_try, self.session.input_closed)

    def _use(self, settings: Settings) -> None:
        self.settings = self.tools.settings = settings
        self.session.info.instructions = instructions(settings)

    def _saw_meta(self, meta: Any) -> None:
        turn = codex.turn_of(meta)
        if turn is None or self.settings.delivery != "codex":
            return
        if self.codex_turn is None:
            self.codex_turn = turn
            log.info("codex_thread", thread=turn.thread, trigger=turn.trigger)
            if self.codex is not None:
                self.codex.learn(turn)
        elif turn.thread != self.codex_turn.thread:
            log.warning("codex_thread_changed", thread=turn.thread,
                        pushed_to=self.codex_turn.thread,
                        hint="bridge keeps pushing into the first thread it was told")


    async def connect_forever(self, stop: anyio.CancelScope) -> None:
        """Join the room, retrying while Redis is unreachable; then stay until cancelled.
        An error that retrying cannot fix (the name is taken, a bad embedded Redis) stops
        the server through ``stop``, and ``fatal`` says why."""
        await self._join_asked.wait()
        if self.fatal is not None:  # the client cannot be served as asked
            self.first_try.set()
            stop.cancel()
            return
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
                    if self.settings.delivery in NO_WITNESS:
                        log.info("delivery_evidence", path=self.settings.delivery,
                                 evidence=NO_WITNESS[self.settings.delivery])
                    if self.settings.delivery == "channel":
                        await push_forever(room, self.transport, self.holds,
                                           ready=self.session.initialized.wait,
                                           push_events=self.settings.push_events)
                    elif self.settings.delivery == "inbox":
                        address = offered()
                        assert address is not None  # choose() found it
                        await InboxDelivery(room, InboxPoster(address),
                                            push_events=self.settings.push_events,
                                            ready=self.session.initialized.wait,
                                            screen=self.holds.screened,
                                            keep=self.holds.held.append,
                                            senders=self.senders,
                                            witness=Transcript()).run()
                    elif self.settings.delivery == "codex":
                        self.codex = CodexDelivery(room, self.settings,
                                                   screen=self.holds.screened,
                                                   keep=self.holds.held.append,
                                                   senders=self.senders)
                        if self.codex_turn is not None:  # told before the room was joined
                            self.codex.learn(self.codex_turn)
                        await self.codex.run()
                    elif self.settings.delivery == "opencode":
                        pusher = OpenCodeDelivery(room, self.settings, self.opencode_door,
                                                  screen=self.holds.screened,
                                                  keep=self.holds.held.append,
                                                  senders=self.senders)
                        self.tools.not_pushed = pusher.not_pushed
                        await pusher.run()
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
            serving.cancel()  # tool calls under way are cancelled; sends are shielded (tools.py)
            asyncio.get_running_loop().call_later(CALLS_GRACE, self._abandon_sends)

        shutdown.on_stop(stop)

        def input_closed() -> None:  # answer what was read before, then stop (a send that
            self.tools.input_closed()  # retries against a Redis that is down: abandoned)
            asyncio.get_running_loop().call_later(EOF_GRACE, shutdown.request, "stdin_closed")

        self.session.on_input_closed = input_closed

        with serving:
            # at EOF the session answers what it read before (for up to EOF_GRACE); then stop
            await self.session.serve(self.transport.read_line)
        shutdown.request("stdin_closed")
        if self._join_asked.is_set():
            # a client gone at once still hears why bridge could not join (a bad
            # password), if the first attempt ends soon enough
            with anyio.move_on_after(CALLS_GRACE):
                await self.first_try.wait()

    def _abandon_sends(self) -> None:
        if self._room is not None:
            self._room.abandon_sends()

async def first_of(*events: anyio.Event) -> None:
    """Wait until one of ``events`` is set."""
    async with anyio.create_task_group() as tg:
        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)


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
    requested = settings.delivery
    path, why = choose(requested, codex_bin=settings.codex_bin)
    settings = replace(settings, delivery=path)
    log.info("delivery", path=path, reason=why)
    shutdown = Shutdown()
    shutdown.install()
    protocol_in, protocol_out = take_stdio()
    async with pipe_transport(protocol_in, protocol_out) as transport:
        app = BridgeServer(settings, transport, chosen=path != requested)
        async with anyio.create_task_group() as tg:
            tg.start_soon(app.connect_forever, tg.cancel_scope)
            await app.serve_client(shutdown)
            tg.cancel_scope.cancel()  # and the room is left (room.connection.LEAVE_TIMEOUT)
    if app.fatal is not None:
        raise app.fatal
