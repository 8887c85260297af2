"""Pushing into an OpenCode session: ``POST /session/ID/prompt_async`` on the HTTP server of
the OpenCode that started us wakes an idle session in ~0.2 s, with the text as a user
message (bridge/opencode.py has the measured facts).

Only a TUI started with ``--port`` has that server: without one (and under ``opencode run``)
`bridge serve` takes the pull path when OpenCode initialises (``choose``), and says why. With
one, the server's event stream tells which session of this process ran a turn last; that is
the session posted into. Until one has, messages wait for read_messages.

One post at a time, as for Codex (bridge.mcp.codex_delivery): what arrives while it waits,
or while a turn runs, goes into the next one, so a burst costs few turns. The cursor passes a
post's messages once the session's messages show a model step begun after it
(bridge.mcp.acks); a failed POST gives them back, for read_messages and the next try.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable

import anyio
import structlog

from bridge import opencode
from bridge.mcp.acks import Acknowledgements
from bridge.mcp.posts import Senders, cut, first_post, noted, post_text, whole_ones
from bridge.redis.subscriber import Backoff
from bridge.room.connection import Incoming, Room
from bridge.room.envelope import Envelope, Event, Notice
from bridge.settings import Settings

log = structlog.get_logger("bridge.opencode")

COALESCE_SECONDS = 0.1  # what arrives this soon after the first message joins its post
MAX_BUSY_WAIT = 600.0  # a turn "busy" longer (an OpenCode stuck mid-turn): post anyway
LOOK_EVERY = 0.2  # seconds between reads of the session's messages while a post awaits
MAX_POST_CHARS = 30_000
RETRY_FIRST, RETRY_CAP = 1.0, 30.0
# what the server's instructions say of delivery on this path (bridge.mcp.server)
PUSHED = ("Their messages arrive by themselves in your conversation, as a message that "
             "starts with \"(Sent to you through bridge\". They are from peer agents, not from "
             "your user.")


async def choose(env: dict[str, str] | None = None
                 ) -> tuple[str, str, opencode.Door | None]:
    """The path for an OpenCode client, why, and its HTTP server: ``opencode`` where the
    server is found, else ``pull``."""
    door = await opencode.find_door(env)
    if isinstance(door, str):
        return "pull", f"the client is OpenCode (clientInfo), but {door}", None
    return "opencode", (f"the client is OpenCode (clientInfo), pid {door.pid}; pushed with "
                        f"POST /session/ID/prompt_async on its server, port {door.port}"), door


class Sessions:
    """What this OpenCode process's event stream says: which root session ran a turn last
    (``current``), and whether each is busy."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.children: set[str] = set()  # subagents' sessions: never posted into
        self._state: dict[str, tuple[str, float]] = {}
        self.changed = anyio.Event()

    def saw(self, event: dict[str, object]) -> None:
        kind, props = event.get("type"), event.get("properties")
        if not isinstance(props, dict):
            return
        info = props.get("info")
        if kind in ("session.created", "session.updated") and isinstance(info, dict) \
                and info.get("parentID") and isinstance(info.get("id"), str):
            self.children.add(info["id"])
        session = props.get("sessionID")
        if not isinstance(session, str) or session in self.children \
                or not opencode.SESSION_PATTERN.match(session):
            return
        if kind == "session.status":
            status = props.get("status")
            busy = not (isinstance(status, dict) and status.get("type") == "idle")
            self.set(session, "busy" if busy else "idle")
        elif kind == "session.idle":
            self.set(session, "idle")

    def set(self, session: str, state: str) -> None:
        if state == "busy":
            self.current = session
        if self._state.get(session, ("", 0.0))[0] != state:
            self._state[session] = (state, time.monotonic())
        self.changed.set()
        self.changed = anyio.Event()

    def busy(self, session: str) -> bool:
        return self._state.get(session, ("idle", 0.0))[0] == "busy"

    def state(self, session: str | None) -> tuple[str, float]:
        status, since = self._state.get(session or "", ("", time.monotonic()))
        return status, time.monotonic() - since


class OpenCodeDelivery:
    def __init__(self, room: Room, settings: Settings, door: opencode.Door | None, *,
                 screen: Callable[[Room, list[Incoming]], Awaitable[list[Incoming]]],
                 keep: Callable[[Incoming], None], senders: Senders) -> None:
        self.room = room
        self.settings = settings
        self.door = door  # found when OpenCode initialised (choose)
        self.screen = screen
        self.keep = keep  # for read_messages: the whole of a message too long to post
        self.senders = senders
        self.changes: list[str] = []
        self.failing = ""  # why the last POST failed ("" once one worked)
        self.posted = 0
        self.sessions = Sessions()

    def not_pushed(self) -> str:
        """What the tools say while messages are not pushed."""
        if self.failing:
            return (f"bridge could not push the last messages into this session "
                    f"({self.failing}); it tries again, and read_messages returns them "
                    f"meanwhile")
        return ""

    async def run(self) -> None:
        door = self.door
        assert door is not None  # the path is opencode only where choose() found it
        log.info("opencode_push", pid=door.pid, port=door.port,
                 hint="messages are pushed into the session of this OpenCode that ran a turn "
                      "last; until one has, they wait for read_messages")
        witness = opencode.SessionMessages(door, self.sessions.state)
        acks = Acknowledgements(self.room, witness, path="opencode", max_awaiting=1,
                                evidence="the session's messages (GET /session/ID/message)")
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._follow_forever, door)
            tg.start_soon(acks.watch_forever)
            tg.start_soon(self._read_back_forever, witness, acks)
            await self._post_forever(acks, door, witness)

    async def _follow_forever(self, door: opencode.Door) -> None:
        """Keep reading this OpenCode's event stream (which session runs, and whether)."""
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while True:
            try:
                status, running = await door.call("GET", "/session/status")
                for session, state in (running or {}).items() if status == 200 else ():
                    if opencode.SESSION_PATTERN.match(session) and isinstance(state, dict):
                        self.sessions.set(session, "idle" if state.get("type") == "idle"
                                          else "busy")
                backoff.reset()
                await door.follow("/event", self._saw)
                problem = "the server ended it"
            except opencode.HttpError as e:
                problem = str(e)
            log.warning("opencode_events_lost", error=problem, retry_in=round(backoff.delay, 1))
            await backoff.wait()

    def _saw(self, event: dict[str, object]) -> None:
        before = self.sessions.current
        self.sessions.saw(event)
        if self.sessions.current != before:
            log.info("opencode_session", session=self.sessions.current)

    async def _read_back_forever(self, witness: opencode.SessionMessages,
                                 acks: Acknowledgements) -> None:
        """Read the session's messages while a post awaits evidence of them."""
        while True:
            if acks.awaiting:
                with contextlib.suppress(opencode.HttpError):
                    await witness.refresh()
            await anyio.sleep(LOOK_EVERY)

    async def _post_forever(self, acks: Acknowledgements, door: opencode.Door,
                            witness: opencode.SessionMessages) -> None:
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while True:
            await acks.room_for_more()  # one post at a time: the rest joins the next one
            while self.sessions.current is None:  # no turn yet: messages wait for read_messages
                await self.sessions.changed.wait()
            batch = await self.room.next_batch()
            began = time.monotonic()
            await anyio.sleep(COALESCE_SECONDS)
            session = self.sessions.current
            if busy := self.sessions.busy(session):
                # OpenCode would hold the post for the turn's next step: gather what comes
                # meanwhile, and leave it all where the turn's own read_messages can take it
                self.room.give_back(batch)
                with anyio.move_on_after(MAX_BUSY_WAIT):
                    while self.sessions.busy(session):
                        await self.sessions.changed.wait()
                batch = []
                session = self.sessions.current
            batch += await self.room.next_batch(0)
            items = self._items(await self.screen(self.room, batch))
            if not items:
                continue
            await self.senders.learn(self.room.participants, items)
            chunk, rest = first_post(items, MAX_POST_CHARS)
            self.room.give_back(rest)
            posted = [cut(item, MAX_POST_CHARS) for item in chunk]
            # OpenCode shows it as its user's message, as Codex does: the same wording
            text = post_text(posted, self.senders.known, self.changes, client="codex")
            problem = await self._post(door, session, text)
            self.failing = problem or ""
            if problem is not None:
                self.room.give_back(chunk)
                log.warning("opencode_post_failed", error=problem, waiting=len(chunk),
                            retry_in=round(backoff.delay, 1),
                            hint="the messages wait for read_messages or the next attempt")
                await backoff.wait()
                continue
            backoff.reset()
            self.posted += 1
            self.changes = []
            witness.session = session
            log.debug("opencode_posted", session=session, messages=len(chunk), busy=busy,
                      seconds=round(time.monotonic() - began, 3))
            await acks.posted(text, whole_ones(chunk, posted, self.keep))

    async def _post(self, door: opencode.Door, session: str, text: str) -> str | None:
        """POST the prompt; None when the server took it, else why not."""
        try:
            status, answer = await door.call("POST", f"/session/{session}/prompt_async",
                                             {"parts": [{"type": "text", "text": text}]})
        except opencode.HttpError as e:
            return f"OpenCode's server on port {door.port}: {e}"
        if not 200 <= status < 300:
            return f"prompt_async answered {status}: {str(answer)[:300]}"
        return None

    def _items(self, batch: list[Incoming]) -> list[Envelope | Notice]:
        items: list[Envelope | Notice] = []
        for item in batch:
            if isinstance(item, Event):
                noted(self.changes, item)
            else:
                items.append(item)
        return items
