"""The Room: one agent's connection to its room. Sends, receives, presence, cursor.

Receive path (docs/design.md): subscribe first, then claim presence, then catch up from the log.
A live pub/sub message is only a wake-up: what is delivered is always read back from the
log, after our cursor. So a forged payload on our channels can never be delivered, a message
missed on pub/sub is picked up by the next read, and nothing is delivered twice.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from bridge import trace
from bridge.errors import BridgeError, MessageRejected, NameTaken
from bridge.room.batcher import ScriptBatcher
from bridge.room.clients import check_reachable, make_client, resolve_url
from bridge.room.cursor import CursorSeal, CursorWriter, Position
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
from bridge.room.paging import PAGE
from bridge.room.presence import Claim, Presence
from bridge.room.presence_records import Participant
from bridge.room.sending import SEND, SendCall, SendResult, check_message, future_log, rate_limited
from bridge.room.signing import Gate
from bridge.room.subscriber import Backoff, close_quietly, published, subscribe_confirmed
from bridge.settings import Settings, redact

log = structlog.get_logger("bridge.bus")  # the name logs have always carried

MAX_WANTED = 1000  # wake-ups remembered between two reads of the log (more are only read)
BACKOFF_FIRST, BACKOFF_CAP = 0.1, 5.0
SUBSCRIBE_TIMEOUT = 5.0
LEAVE_TIMEOUT = 0.75  # seconds for the leave at a stop (a live Redis takes milliseconds)

Incoming = Envelope | Event | Notice


class Room:
    def __init__(self, settings: Settings, redis: Redis, subscriber: Redis,
                 cursor_client: Redis) -> None:
        self.settings = settings
        self.name = settings.name
        self.keys = Keys(settings.room)
        self.redis = redis
        self.subscriber = subscriber
        self.cursor = CursorWriter(cursor_client, self.keys.cursor(settings.name),
                                   settings.cursor_ttl,
                                   CursorSeal(settings.room, settings.name, settings.secret))
        self.presence = Presence(redis, settings)
        # what was read and not yet taken, each with the generation of the log it came from
        # (a new one after a reset of the room's log)
        self.received: deque[tuple[Incoming, int]] = deque()
        self._generation = 0
        self._queued_bytes = 0  # about how much `received` holds (read_ahead_bytes bounds it)
        self._behind = False  # stopped reading the log because `received` was full
        self._to_read = anyio.Event()  # a wake-up, or the client emptied a full `received`: read on
        self._wanted: list[str] = []  # ids that wake-ups claimed, not yet read
        self._reading = anyio.Lock()  # one reader of the log at a time
        self._events_dropped = 0
        self._early: list[dict[str, Any]] = []  # pub/sub messages seen while subscribing
        self._arrived = anyio.Event()
        self._sends = ScriptBatcher(redis, SEND, settings.send_timeout)
        self._last_seen = Position()  # the last log entry read (and, if ours, put in `received`)
        self.gate = Gate(settings)  # what of the log we deliver: size, signature, replays
        self._primed = False

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: Settings, *,
                      warn_unverified: bool = True) -> AsyncIterator[Room]:
        """Join the room; leave it (and flush the cursor) on exit."""
        url = await resolve_url(settings)
        redis, subscriber = make_client(url), make_client(url, retries=0)
        # its own connection, so a cursor write goes out at once, not after a pool checkout
        cursor_client = make_client(url, single_connection=True)
        try:
            await check_reachable(redis, url)
            room = cls(settings, redis, subscriber, cursor_client)
            pubsub = await room._subscribe()
            try:
                await room._claim()
            except BaseException:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            log.info("joined", name=settings.name, room=settings.room, redis=redact(url),
                     delivery=settings.delivery, derived_name=settings.name_was_derived,
                     signed=room.gate.signer is not None)
            if warn_unverified:
                room.gate.warn_if_unsigned()
            async with anyio.create_task_group() as tg:
                tg.start_soon(room._receive_forever, pubsub)
                tg.start_soon(room._heartbeat_forever)
                tg.start_soon(room.cursor.rescue_forever)
                tg.start_soon(room._read_forever)
                try:
                    yield room
                finally:
                    tg.cancel_scope.cancel()
                    with anyio.CancelScope(shield=True), anyio.move_on_after(LEAVE_TIMEOUT):
                        await room._leave()
        finally:
            with anyio.CancelScope(shield=True):
                for client in (redis, subscriber, cursor_client):
                    await client.aclose()

    async def _leave(self) -> None:
        try:
            await self.cursor.flush_last()
            await self.presence.leave()
            log.info("left", name=self.name, room=self.settings.room)
        except (RedisError, OSError) as e:
            log.warning("leave_failed", error=str(e))

    def abandon_sends(self) -> None:
        """Stopping: sends still queued or retrying fail at once, and later ones too."""
        self._sends.close("bridge is stopping; the message may not have been sent")

    # ---------------------------------------------------------------- sending
    async def send(self, to: str | list[str], text: str, reply_to: str = "") -> SendResult:
        """Log and publish one message. Retries through a Redis outage for up to
        ``send_timeout`` seconds; raises RedisUnavailable if it could not be logged."""
        recipients = check_message(self.settings, to, text, reply_to)
        envelope = Envelope(id="", sender=self.name, to=recipients, text=text,
                            reply_to=reply_to, ts=int(time.time() * 1000))
        if self.gate.signer:
            envelope = self.gate.signer.sign(envelope)
        # One agent's sends reach Redis in the order its calls arrived (see batcher.py).
        reply = await self._sends.call(SendCall.of(self.settings, envelope))
        if reply[0] == b"unknown":
            unknown = [n.decode() for n in reply[1]]
            raise MessageRejected(
                f"unknown recipient(s): {', '.join(unknown)}. Nobody by that name has been in "
                f"room {self.settings.room!r}. {await self._who_is_here()} "
                f"Nothing was sent; check the name with list_participants and send again."
            )
        if reply[0] == b"rate":
            raise rate_limited(self.settings, reply[1])
        if reply[0] == b"future":
            raise future_log(self.settings, reply[1])
        return SendResult(
            id=reply[1].decode(),
            online=sorted(n.decode() for n in reply[2]),
            offline=sorted(n.decode() for n in reply[3]),
        )

    async def _who_is_here(self) -> str:
        _, people = await self.presence.participants()
        others = [p.name for p in people if p.name != self.name]
        if not others:
            return "Nobody else is in the room right now."
        return f"In the room now: {', '.join(others)}."

    # ---------------------------------------------------------------- presence
    async def participants(self) -> tuple[int, list[Participant]]:
        return await self.presence.participants()

    async def set_status(self, status: str) -> None:
        await self.presence.set_status(status)

    async def _claim(self) -> None:
        """Claim our name, and decide where in the log to go on from (see _resume)."""
        claim = await self.presence.claim()
        first = not self.cursor.epoch
        self._resume(claim, first)
        if not self._primed:
            await self.gate.remember_before(self.redis, self.keys.log, self._last_seen)
            self._primed = True
        if claim.fresh:
            log.info("presence_claimed", name=self.name, session=self.presence.session)

    def _resume(self, claim: Claim, first: bool) -> None:
        """Where to read on from: our cursor, unless the log it points into is gone.

        A new epoch means a new log (a new, empty Redis at the same address, a FLUSHALL): its
        ids may even sort before ours, so we start over at its beginning. A log whose newest
        entry is behind what we have read lost its end (restored from an older copy, a
        replica that lagged): we go on from its end. With a room secret, a cursor this agent
        did not write (set back by hand, to replay old messages) is not trusted.
        """
        room = self.settings.room
        log_end = Position.parse(claim.log_end)
        try:
            stored = self.cursor.seal.read(claim.cursor)
        except ValueError:
            stored = None
        if first:
            if claim.created and stored is not None:  # a new name: the end of the log
                self._start(stored.position, claim.epoch, write=True)
            elif stored is None or not stored.sealed:
                log.warning("cursor_unverified", name=self.name, cursor=claim.cursor[:80],
                            hint="our cursor key was written by someone else (or is not a "
                                 "cursor); going on from the end of the log")
                self._start(log_end, claim.epoch, write=True)
                self._accept(Notice(
                    f"Your read position in room {room} was changed in Redis by someone "
                    f"without the room secret (or is unreadable), so bridge does not trust it "
                    f"and goes on from the end of the room's log. Messages sent to you while "
                    f"you were away may be missing: ask the others to repeat what matters."))
            elif stored.epoch and stored.epoch != claim.epoch:
                self._log_reset(claim.epoch, "epoch")
            elif stored.position.order > log_end.order:
                self._log_rewound(log_end, claim.epoch)
            else:
                self._start(stored.position, claim.epoch)
            return
        if claim.epoch != self.cursor.epoch:
            self._log_reset(claim.epoch, "epoch")
        elif self._last_seen.order > log_end.order:
            self._log_rewound(log_end, claim.epoch)
        elif claim.created:  # the key expired or was deleted meanwhile: write ours again
            self.cursor.start_at(self.cursor.acked, claim.epoch, write=True)
        elif stored is not None and stored.sealed and stored.epoch == claim.epoch:
            # our own cursor moves only forward within one log
            if stored.position.order > self._last_seen.order:
                self._last_seen = stored.position
            self.cursor.start_at(stored.position, claim.epoch)

    def _start(self, position: Position, epoch: str, *, write: bool = False) -> None:
        self._last_seen = position
        self.cursor.start_at(position, epoch, write=write)

    def _log_reset(self, epoch: str, why: str) -> None:
        log.warning("log_reset", room=self.settings.room, reason=why, cursor=str(self._last_seen),
                    hint="the room's log is new (a new or emptied Redis): starting over on it")
        self._generation += 1
        self._wanted = []
        self._last_seen = Position()
        self.cursor.reset(Position(), epoch)
        self._accept(Notice(
            f"The log of room {self.settings.room} was reset (Redis was replaced or emptied): "
            f"bridge starts over on the new log. Messages sent before the reset that had not "
            f"reached you are lost: ask the others to repeat what matters."))

    def _log_rewound(self, log_end: Position, epoch: str) -> None:
        log.warning("log_rewound", room=self.settings.room, cursor=str(self._last_seen),
                    log_end=str(log_end),
                    hint="the log's newest entry is behind what we read: it lost its end")
        self._generation += 1
        self._wanted = []
        self._last_seen = log_end
        self.cursor.reset(log_end, epoch)
        self._accept(Notice(
            f"The log of room {self.settings.room} lost its newest entries (Redis was restored "
            f"from an older copy, or failed over to a replica that lagged): bridge goes on "
            f"from the log's end. Messages in the lost part that had not reached you are lost: "
            f"ask the others to repeat what matters."))

    async def _heartbeat_forever(self) -> None:
        interval = self.settings.ttl / 3
        while True:
            await anyio.sleep(interval)
            try:
                if not await self.presence.heartbeat():
                    log.warning("presence_lost", name=self.name,
                                hint="our record expired or was taken; claiming it again")
                    async with self._reading:
                        await self._claim()
            except NameTaken as e:
                log.error("name_lost", error=str(e))
            except (RedisError, OSError) as e:
                log.warning("heartbeat_failed", error=str(e))

    # ---------------------------------------------------------------- receiving
    async def next_batch(self, timeout: float | None = None) -> list[Incoming]:
        """Wait (up to ``timeout`` s) for incoming items, then take them all from `received`.

        The messages taken are handed out: the cursor passes them only once each is
        acknowledged (``ack``)."""
        if timeout != 0:
            with anyio.move_on_after(timeout):
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
            self._to_read.set()
        return items

    def ack(self, *items: Incoming) -> None:
        """The agent has been given these: the cursor moves over them (written in batches)."""
        for item in items:
            if isinstance(item, Envelope):
                self.cursor.ack(item)

    def give_back(self, items: list[Incoming]) -> None:
        """These were taken but did not reach the agent (a failed post): back to the front of
        `received`, in order, for the next taker; the cursor stays before them."""
        for item in reversed(items):
            self.cursor.unhand(item)
            self.received.appendleft((item, self._generation))
            self._queued_bytes += len(item.text if isinstance(item, Envelope | Notice) else
                                      item.status) + 256
        if items:
            self._wake()

    async def flush_cursor(self) -> None:
        """Write the cursor now, if it moved (see CursorWriter.flush)."""
        await self.cursor.flush()

    def flush_cursor_soon(self) -> None:
        """Have the cursor written in the background: for callers that must not wait for
        Redis (read_messages answers from memory while Redis is down)."""
        self.cursor.flush_soon()

    @property
    def unread(self) -> int:
        return len(self.received)

    @property
    def _full(self) -> bool:
        return bool(self.received) and self._queued_bytes >= self.settings.read_ahead_bytes

    def _accept(self, item: Incoming) -> None:
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
        self._arrived = anyio.Event()

    async def _subscribe(self) -> PubSub:
        pubsub = self.subscriber.pubsub()
        channels = [self.keys.direct(self.name), self.keys.broadcast, self.keys.events]
        # Confirmed before the log is read: anything published after that is either in the
        # log we are about to read or still in the socket. Messages that arrive meanwhile
        # are kept for _listen.
        self._early.clear()
        self._early += await subscribe_confirmed(pubsub, channels, SUBSCRIBE_TIMEOUT)
        return pubsub

    async def _receive_forever(self, pubsub: PubSub | None) -> None:
        backoff = Backoff(BACKOFF_FIRST, BACKOFF_CAP)
        while True:
            try:
                reconnecting = pubsub is None
                if pubsub is None:
                    pubsub = await self._subscribe()
                async with self._reading:
                    if reconnecting:
                        await self._claim()
                        log.info("reconnected", name=self.name)
                    await self._report_gap()
                    await self._read_log()
                if reconnecting:
                    await self.flush_cursor()  # a write lost with the connection
                backoff.reset()
                await self._listen(pubsub)
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

    async def _listen(self, pubsub: PubSub) -> None:
        async for message in published(pubsub, self._early):
            channel = message["channel"].decode(errors="replace")
            try:
                if channel == self.keys.events:
                    self._on_event(message["data"])
                else:
                    self._on_wake(message["data"])
            except (RedisError, OSError):
                raise
            except Exception as e:  # one bad payload must never stop the loop
                log.warning("payload_dropped", channel=channel, reason=str(e)[:200],
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
        self._accept(event.cleaned())

    def _on_wake(self, raw: bytes) -> None:
        """A live message arrived: have the log read after our cursor (by _read_forever, so
        that this loop keeps listening, and pinging: a read stuck on a dead link must not
        keep the dead link from being noticed)."""
        trace.mark("woken")
        claimed_id = wake_id(raw)
        wanted = parse_id(claimed_id)
        if wanted <= self._last_seen.order or self._behind:
            return  # already read from the log, or to be read once the client catches up
        if len(self._wanted) < MAX_WANTED:  # (each is checked, and a forgery logged, once)
            self._wanted.append(claimed_id)
        self._to_read.set()

    async def _report_gap(self) -> None:
        """If entries after our cursor were trimmed from the log, say so, once."""
        first: list[tuple[bytes, dict[bytes, bytes]]] = await self.redis.xrange(
            self.keys.log, "-", "+", count=1
        )  # type: ignore[assignment]
        if not first or parse_id(first[0][0].decode()) <= self._last_seen.order:
            return
        first_seq = first[0][1].get(b"seq", b"0")
        missing = int(first_seq) - 1 - self._last_seen.seq if first_seq.isdigit() else 0
        if missing <= 0:
            return
        limits = f"BRIDGE_LOG_MAXLEN={self.settings.log_maxlen}"
        if self.settings.log_max_age:
            limits += f", BRIDGE_LOG_MAX_AGE={self.settings.log_max_age:g} s"
        log.warning("messages_expired", missing=missing, cursor=str(self._last_seen))
        self._accept(Notice(
            f"{missing} message(s) of room {self.settings.room} expired from the log ({limits}) "
            f"before they could be delivered to you, and were not delivered. Some may have "
            f"been for you: ask the others to repeat what matters."
        ))

    async def _catch_up(self) -> None:
        async with self._reading:
            await self._read_log()

    async def _read_log(self) -> None:
        """Read the log after what we have read, into `received`, until it is full."""
        while True:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await self.redis.xrange(
                self.keys.log, f"({self._last_seen.id}", "+", count=PAGE
            )  # type: ignore[assignment]
            for entry_id, fields in entries:
                if self._full:
                    if not self._behind:
                        log.info("read_ahead_paused", queued_bytes=self._queued_bytes,
                                 hint="the client is behind; the rest waits in the log")
                    self._behind = True
                    return
                try:
                    envelope = decode_entry(entry_id, fields)
                except ValueError as e:
                    self._last_seen = Position(entry_id.decode(), self._last_seen.seq)
                    self.gate.dropped(self._last_seen.id, "malformed", detail=str(e)[:200])
                    continue
                self._last_seen = Position(envelope.id, envelope.seq)
                if self.gate.admits(envelope):
                    self._accept(envelope)
            if len(entries) < PAGE:
                return

    async def _read_forever(self) -> None:
        """Read the log when woken: by a live message, or by the client taking a full `received`
        (the wake-ups that came while we were full were not followed)."""
        while True:
            await self._to_read.wait()
            self._to_read = anyio.Event()
            wanted, self._wanted = self._wanted, []
            try:
                await self._catch_up()
            except (RedisError, OSError, TimeoutError) as e:  # a reconnect catches up too
                log.warning("log_read_failed", error=str(e) or type(e).__name__)
                continue
            trace.mark("log_read")
            for claimed in wanted:
                if parse_id(claimed) > self._last_seen.order and not self._behind:
                    log.warning("payload_dropped", id=claimed[:40],
                                reason="forged id: no such message in the log")

    # ---------------------------------------------------------------- cursor
__all__ = ["BridgeError", "Incoming", "Room", "SendResult"]
