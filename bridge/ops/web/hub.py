"""One room, live, for every page that watches it: what wakes the pages' streams.

The log is the source of truth. Each page's stream reads the log after the last id it sent
(XRANGE), so a page that reconnects, a `bridge web` that restarts and a Redis that restarts
lose and repeat nothing. The hub only says when to read again: one XREAD BLOCK per room on
the log's end wakes every stream of that room. Besides, it keeps what is not in the log: the
joined / left / status events (pub/sub; those published while Redis is unreachable are not
seen, as for `bridge tail`), the board events (passed on as ``board`` frames, on which a page
reads the board again; and one such frame after each (re)subscription, for what was missed),
the roster (re-read after each event and every few seconds, so "last seen" moves), and
whether Redis answers.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, RedisError

from bridge.ops.commands import MARKERS
from bridge.ops.human import event_record
from bridge.ops.tail import refusal
from bridge.redis.paging import PAGE
from bridge.redis.subscriber import Backoff, close_quietly, published, subscribe_confirmed
from bridge.room.envelope import Event, decode_event
from bridge.room.keys import Keys
from bridge.room.presence_records import Participant
from bridge.room.roster import read_roster
from bridge.room.signing import Signer

log = structlog.get_logger("bridge.web")

BLOCK_MS = 2000
ROSTER_EVERY = 3.0  # seconds between roster reads when no event asks for one
KEPT_FRAMES = 500  # events kept for streams that have not taken them yet
SUBSCRIBE_TIMEOUT = 5.0
BOARD = "board"  # the event kind of a task or claim change (bridge.room.board_news)


def frame(kind: str, data: Any, entry_id: str = "") -> bytes:
    """One server-sent event. Only log entries carry an ``id``: it is what the browser sends
    back as Last-Event-ID, so it must be a log id (an event without one leaves it as is)."""
    head = f"id: {entry_id}\n" if entry_id else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def agent_record(person: Participant) -> dict[str, Any]:
    return {"name": person.name, "role": person.role, "host": person.host,
            "delivery": person.delivery or "-", "client": person.client or "-",
            "status": person.status,
            "joined_at": person.joined_at, "last_seen": person.last_seen,
            "problem": person.problem, "marker": MARKERS.get(person.problem, "")}


class Hub:
    def __init__(self, room: str, redis: Redis, blocker: Redis, subscriber: Redis,
                 signer: Signer | None, url: str) -> None:
        self.room = room
        self.keys = Keys(room)
        self.redis, self.blocker, self.subscriber = redis, blocker, subscriber
        self.signer = signer
        self.url = url
        self.changed = anyio.Event()  # set and replaced whenever there is something new
        self.frames: deque[tuple[int, bytes]] = deque(maxlen=KEPT_FRAMES)
        self.count = 0  # frames ever added; a stream remembers how many it has taken
        self.roster = frame("agents", {"now": 0, "agents": []})
        self.redis_state = frame("redis", {"ok": True, "error": ""})
        self._roster_due = anyio.Event()
        self._roster_key = ""
        self.problem = ""  # a lasting refusal, shown on the page

    # ------------------------------------------------------------ for the streams
    def wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    def add(self, data: bytes) -> None:
        self.count += 1
        self.frames.append((self.count, data))
        self.wake()

    def since(self, taken: int) -> list[bytes]:
        return [data for number, data in self.frames if number > taken]

    def set_redis(self, ok: bool, error: str = "") -> None:
        state = frame("redis", {"ok": ok, "error": error})
        if state != self.redis_state:
            self.redis_state = state
            self.add(state)

    # ------------------------------------------------------------ running
    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_log)
            tg.start_soon(self._watch_events)
            tg.start_soon(self._watch_roster)

    async def _failed(self, error: BaseException, what: str, backoff: Backoff) -> None:
        stop = refusal(error, what, self.room, self.url)
        self.set_redis(False, str(stop) if stop else f"Redis unreachable: {error}")
        log.warning("web_redis_failed", room=self.room, what=what,
                    error=str(error) or type(error).__name__)
        if isinstance(error, NoPermissionError):
            backoff.delay = backoff.cap  # retrying fixes it only once an admin does
        await backoff.wait()

    async def _watch_log(self) -> None:
        backoff, last = Backoff(0.1, 2.0), ""
        while True:
            try:
                if not last:
                    newest: Any = await self.blocker.xrevrange(self.keys.log, "+", "-", count=1)
                    last = newest[0][0].decode() if newest else "0-0"
                reply: Any = await self.blocker.xread({self.keys.log: last}, count=PAGE,
                                                      block=BLOCK_MS)
            except (RedisError, OSError) as e:
                await self._failed(e, f"XREAD on room {self.room}'s log", backoff)
                continue
            backoff.reset()
            self.set_redis(True)
            for _stream, entries in reply or []:
                if entries:
                    last = entries[-1][0].decode()
                    self.wake()

    async def _watch_events(self) -> None:
        backoff = Backoff(0.1, 2.0)
        while True:
            pubsub = self.subscriber.pubsub()
            try:
                early = await subscribe_confirmed(pubsub, [self.keys.events], SUBSCRIBE_TIMEOUT)
                backoff.reset()
                self._roster_due.set()  # what changed while we were not listening
                self.add(frame("board", {"kind": "resync"}))  # board events missed, likewise
                async for message in published(pubsub, early):
                    self._event(message["data"])
            except (RedisError, OSError, TimeoutError) as e:
                await self._failed(e, f"SUBSCRIBE to room {self.room}'s events", backoff)
            finally:
                await close_quietly(pubsub)

    def _event(self, raw: bytes) -> None:
        try:
            event = decode_event(raw)
        except ValueError:  # anyone may PUBLISH here: what is not an event is not shown
            return
        problem = self.signer.event_problem(event, int(time.time() * 1000)) \
            if self.signer else None
        if event.kind == BOARD:  # a task or claim changed: the pages read the board again
            self.add(frame("board", self.event_record(event, problem)))
            return
        self.add(frame("presence", self.event_record(event, problem)))
        self._roster_due.set()

    @staticmethod
    def event_record(event: Event, problem: str | None) -> dict[str, Any]:
        record = event_record(event.cleaned())
        record["problem"] = problem or ""
        record["marker"] = MARKERS.get(problem or "", "")
        return record

    async def _watch_roster(self) -> None:
        while True:
            with anyio.move_on_after(ROSTER_EVERY):
                await self._roster_due.wait()
            self._roster_due = anyio.Event()
            try:
                now, people = await read_roster(self.redis, self.room, self.signer)
            except (RedisError, OSError) as e:
                await self._failed(e, f"reading room {self.room}'s agents", Backoff(1.0, 1.0))
                continue
            agents = [agent_record(person) for person in people]
            key = json.dumps(agents)
            self.roster = frame("agents", {"now": now, "agents": agents})
            if key != self._roster_key:  # "last seen" moved, someone came, went, or changed
                self._roster_key = key
                self.add(self.roster)
