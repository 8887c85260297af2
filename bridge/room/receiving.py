"""Receiving: what was read from the room log and not yet taken, and how it gets there.

Subscribe first, then claim presence, then catch up from the log (docs/design.md). A live
pub/sub message is a wake-up: what is delivered is read back from the log, after what we
have read, unless the payload proves to be the next entry (bridge.room.wakeup: with a room
secret only). So a forged payload on our channels can never be delivered, a message missed
on pub/sub is picked up by the next read, and nothing is delivered twice. Reading
ahead stops once ``received`` holds read_ahead_bytes: the rest waits in the log.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any

import anyio
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from bridge import trace
from bridge.errors import NameTaken
from bridge.redis import feed
from bridge.redis.paging import PAGE
from bridge.redis.subscriber import Backoff, close_quietly, open_subscription
from bridge.room.cursor import CursorWriter, Position
from bridge.room.envelope import (
    Envelope,
    Event,
    Notice,
    decode_entry,
    decode_event,
    parse_id,
    wake_id,
)
from bridge.room.keys import Keys
from bridge.room.signing import Gate
from bridge.room.wakeup import from_wake
from bridge.settings import Settings

log = structlog.get_logger("bridge.bus")  # the name logs have always carried

MAX_WANTED = 1000  # wake-ups remembered between two reads of the log (more are only read)
BACKOFF_FIRST, BACKOFF_CAP = 0.1, 5.0
SUBSCRIBE_TIMEOUT = 5.0

Incoming = Envelope | Event | Notice


class Receiver:
    """One agent's receiving side. ``reclaim`` claims our name again after a reconnect and
    decides where to read on from (the Room's)."""

    def __init__(self, settings: Settings, redis: Redis, subscriber: Redis,
                 cursor: CursorWriter, gate: Gate,
                 reclaim: Callable[[], Awaitable[None]]) -> None:
        self.settings = settings
        self.name = settings.name
        self.keys = Keys(settings.room)
        self._events_channel = self.keys.events.encode()  # as channels arrive: bytes
        self.redis = redis
        self.subscriber = subscriber
        self.cursor = cursor
        self.gate = gate
        self._reclaim = reclaim
        # what was read and not yet taken, each with the generation of the log it came from
        # (a new one after a reset of the room's log)
        self.received: deque[tuple[Incoming, int]] = deque()
        self._generation = 0
        self._queued_bytes = 0  # about how much `received` holds (read_ahead_bytes bounds it)
        self._behind = False  # stopped reading the log because `received` was full
        # a wake-up, or the client emptied a full `received`: read on. (asyncio's events here:
        # anyio's looks up the event loop library on each creation, ~1 us, one per message)
        self._to_read = asyncio.Event()
        self._wanted: list[str] = []  # ids that wake-ups claimed, not yet read
        self.reading = anyio.Lock()  # one reader of the log at a time
        self._events_dropped = 0
        self._early: list[dict[str, Any]] = []  # pub/sub messages seen while subscribing
        self._arrived = asyncio.Event()
        self.last_seen = Position()  # the last log entry read (and, if ours, put in `received`)
        # every wake-up so far is covered by a log read or was delivered: the next one may be
        # delivered from its payload (bridge.room.wakeup), if it proves to be next
        self._synced = False
        self.ordered_wakes = True  # see bridge.room.wakeup
        self._wakes_distrusted_until = 0.0  # (monotonic) see distrust_wakes
        self._gap_unchecked = False  # read on after being behind: the log may have lost some

    def start_over(self, position: Position) -> None:
        """The log we read is gone (reset, or lost its end): read on from ``position`` of the
        new one; what was read of the old one is a past generation (no cursor moves for it)."""
        self._generation += 1
        self._wanted = []
        self.last_seen = position
        self._synced = False
        self.distrust_wakes()

    def distrust_wakes(self) -> None:
        """The log lost entries we had not read (or was reset): a copy of one of them, with a
        made-up id, is no duplicate of anything we saw, so no wake-up is delivered from its
        payload until they are all outside the replay window (bridge.room.wakeup)."""
        self._wakes_distrusted_until = time.monotonic() + 2 * self.settings.replay_window

    async def next_batch(self, timeout: float | None = None) -> list[Incoming]:
        """Wait (up to ``timeout`` s) for incoming items, then take them all from `received`.

        The messages taken are handed out: the cursor passes them only once each is
        acknowledged (``ack``)."""
        if timeout != 0:
            # asyncio's timeout: with None it sets no timer and opens no cancel scope, which
            # anyio's would (~10 us on a push's path)
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while not self.received:  # another taker may have emptied it first
                        await self._arrived.wait()
        items = []
        for item, generation in self.received:
            if isinstance(item, Envelope) and generation == self._generation:
                self.cursor.hand(item, Position(item.id, item.seq))
            items.append(item)
        self.received.clear()
        self._queued_bytes = 0
        if self._behind:  # the log is the buffer: read on from it
            self._behind = False
            self._gap_unchecked = True  # (it may have been trimmed meanwhile)
            self._to_read.set()
        return items

    def ack(self, *items: Incoming) -> None:
        """The agent has been given these: the cursor moves over them (written in batches)."""
        for item in items:
            if isinstance(item, Envelope):
                self.cursor.ack(item)

    def give_back(self, items: Sequence[Incoming]) -> None:
        """These were taken but did not reach the agent (a failed post): back to the front of
        `received`, in order, for the next taker; the cursor stays before them."""
        for item in reversed(items):
            self.cursor.unhand(item)
            self.received.appendleft((item, self._generation))
            self._queued_bytes += len(item.text if isinstance(item, Envelope | Notice) else
                                      item.status) + 256
        if items:
            self._wake()

    @property
    def unread(self) -> int:
        return len(self.received)

    @property
    def _full(self) -> bool:
        return bool(self.received) and self._queued_bytes >= self.settings.read_ahead_bytes

    def accept(self, item: Incoming) -> None:
        self.received.append((item, self._generation))
        # about its size in memory: the text, and the rest of the envelope
        self._queued_bytes += len(item.text if isinstance(item, Envelope | Notice) else
                                  item.status) + 256
        self._wake()

    def _wake(self) -> None:
        """Wake every taker waiting now; later ones wait on a new event. (Each taker must
        wake: replacing the event when one takes would strand another, such as the pusher
        while read_messages takes.)"""
        self._arrived.set()
        self._arrived = asyncio.Event()

    async def subscribe(self) -> PubSub:
        channels = [self.keys.direct(self.name), self.keys.broadcast, self.keys.events]
        # Confirmed before the log is read: anything published after that is either in the
        # log we are about to read or still in the socket. Messages that arrive meanwhile
        # are kept for the feed (bridge.redis.feed), handed over first.
        self._early.clear()
        pubsub, early = await open_subscription(self.subscriber, channels, SUBSCRIBE_TIMEOUT)
        self._early += early
        return pubsub

    async def receive_forever(self, pubsub: PubSub | None) -> None:
        backoff = Backoff(BACKOFF_FIRST, BACKOFF_CAP)
        while True:
            try:
                reconnecting = pubsub is None
                if pubsub is None:
                    pubsub = await self.subscribe()
                async with self.reading:
                    if reconnecting:
                        await self._reclaim()
                        log.info("reconnected", name=self.name)
                    await self._report_gap()
                    await self._read_log()
                if reconnecting:
                    await self.cursor.flush()  # a write lost with the connection
                backoff.reset()
                # each message handled in the event loop's read callback (bridge.redis.feed)
                await feed.listen(pubsub, self._on_message, self._early)
            except (RedisError, OSError, TimeoutError) as e:
                log.warning("redis_connection_lost", error=str(e) or type(e).__name__,
                            retry_in=round(backoff.delay, 2))
            except NameTaken as e:
                log.error("name_lost", error=str(e))
            finally:
                if pubsub is not None:
                    await close_quietly(pubsub)
                    pubsub = None
            await backoff.wait()

    def _on_message(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        try:
            if channel == self._events_channel:
                self._on_event(message["data"])
            else:
                self._on_wake(message["data"])
        except (RedisError, OSError):
            raise
        except Exception as e:  # one bad payload must never stop the loop
            log.warning("payload_dropped", channel=bytes(channel).decode(errors="replace"),
                        reason=str(e)[:200],
                        payload=bytes(message["data"][:200]).decode(errors="replace"))

    def _on_event(self, raw: bytes) -> None:
        """Anyone may PUBLISH here: with a room secret only a signed, fresh event is believed
        (Gate.admits_event), and what is shown is cut to one bounded line per field."""
        event = decode_event(raw)
        if event.name == self.name or not self.gate.admits_event(event):
            return
        if self._full:  # events are not logged: one the client has no room for is dropped
            if not self._events_dropped:
                log.warning("events_dropped", reason="inbox full",
                            hint="the client is not taking what it is sent; joined/left/status "
                                 "events are dropped until it catches up")
            self._events_dropped += 1
            return
        self._events_dropped = 0
        self.accept(event.cleaned())

    def _on_wake(self, raw: bytes) -> None:
        """A live message arrived: have the log read after our cursor (by _read_forever, so
        that this loop keeps listening, and pinging: a read stuck on a dead link must not
        keep the dead link from being noticed)."""
        trace.mark("woken")
        if (self._synced and not self._full and not self.reading.locked()
                and time.monotonic() >= self._wakes_distrusted_until):
            envelope = from_wake(raw, self.last_seen, self.gate, self.name)
            if envelope is not None:  # send→push p50 -29% (1.17 -> 0.84 ms, bench.ab)
                self.last_seen = Position(envelope.id, envelope.seq)
                self.accept(envelope)
                trace.mark("taken")
                return
        claimed_id = wake_id(raw)
        wanted = parse_id(claimed_id)
        if wanted <= self.last_seen.order or self._behind:
            return  # already read from the log, or to be read once the client catches up
        self._synced = False  # a doubt: from here on, wake-ups wait for the log read
        if len(self._wanted) < MAX_WANTED:  # (each is checked, and a forgery logged, once)
            self._wanted.append(claimed_id)
        self._to_read.set()

    async def _report_gap(self) -> None:
        """If entries after our cursor were trimmed from the log, say so, once."""
        first: list[tuple[bytes, dict[bytes, bytes]]] = await self.redis.xrange(
            self.keys.log, "-", "+", count=1
        )  # type: ignore[assignment]
        if not first or parse_id(first[0][0].decode()) <= self.last_seen.order:
            return
        first_seq = first[0][1].get(b"seq", b"0")
        missing = int(first_seq) - 1 - self.last_seen.seq if first_seq.isdigit() else 0
        if missing <= 0:
            return
        limits = (f"BRIDGE_LOG_MAXLEN={self.settings.log_maxlen}, BRIDGE_LOG_HARD_MAXLEN="
                  f"{self.settings.log_hard_maxlen}, "
                  f"BRIDGE_AWAY_HOLD={self.settings.away_hold:g} s")
        if self.settings.log_max_age:
            limits += f", BRIDGE_LOG_MAX_AGE={self.settings.log_max_age:g} s"
        log.warning("messages_expired", missing=missing, cursor=str(self.last_seen))
        self.distrust_wakes()
        self.accept(Notice(
            f"{missing} message(s) of room {self.settings.room} expired from the log ({limits}) "
            f"before they could be delivered to you, and were not delivered. Some may have "
            f"been for you: ask the others to repeat what matters."
        ))

    async def _read_log(self) -> None:
        """Read the log after what we have read, into `received`, until it is full."""
        while True:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await self.redis.xrange(
                self.keys.log, f"({self.last_seen.id}", "+", count=PAGE
            )  # type: ignore[assignment]
            for entry_id, fields in entries:
                if self._full:
                    self._synced = False
                    if not self._behind:
                        log.info("read_ahead_paused", queued_bytes=self._queued_bytes,
                                 hint="the client is behind; the rest waits in the log")
                    self._behind = True
                    return
                try:
                    envelope = decode_entry(entry_id, fields)
                except ValueError as e:
                    self.last_seen = Position(entry_id.decode(), self.last_seen.seq)
                    self.gate.dropped(self.last_seen.id, "malformed", detail=str(e)[:200])
                    continue
                self.last_seen = Position(envelope.id, envelope.seq)
                if self.gate.admits(envelope):
                    self.accept(envelope)
            if len(entries) < PAGE:
                # synced if no wake-up came while we read (it would have set _to_read)
                self._synced = self.ordered_wakes and not self._to_read.is_set()
                return

    async def read_forever(self) -> None:
        """Read the log when woken: by a live message, or by the client taking a full `received`
        (the wake-ups that came while we were full were not followed)."""
        while True:
            await self._to_read.wait()
            try:
                async with self.reading:
                    # taken under the lock: a catch-up read that held it must not count
                    # these as covered (it may have read before they were logged)
                    self._to_read = asyncio.Event()
                    wanted, self._wanted = self._wanted, []
                    if self._gap_unchecked:  # found by review: a trim while behind was silent
                        self._gap_unchecked = False
                        await self._report_gap()
                    await self._read_log()
            except (RedisError, OSError, TimeoutError) as e:  # a reconnect catches up too
                log.warning("log_read_failed", error=str(e) or type(e).__name__)
                continue
            trace.mark("taken")
            for claimed in wanted:
                if parse_id(claimed) > self.last_seen.order and not self._behind:
                    log.warning("payload_dropped", id=claimed[:40],
                                reason="forged id: no such message in the log")
