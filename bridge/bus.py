"""The Bridge: one agent's connection to its room. Sends, receives, presence, cursor.

Receive path (DESIGN.md): subscribe first, then claim presence, then catch up from the log.
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

from bridge import scripts, trace
from bridge.batcher import ScriptBatcher
from bridge.connection import check_reachable, make_client, redact, resolve_url
from bridge.cursor import CursorWriter, Position
from bridge.envelope import (
    Envelope,
    Event,
    Notice,
    decode_entry,
    decode_event,
    parse_id,
    wake_id,
)
from bridge.errors import BridgeError, MessageRejected, NameTaken
from bridge.keys import Keys
from bridge.outgoing import (
    SendResult,
    check_message,
    future_log,
    rate_limited,
    send_arguments,
)
from bridge.presence import Participant, Presence
from bridge.settings import Settings
from bridge.signing import Gate
from bridge.subscriber import Backoff, close_quietly, published

log = structlog.get_logger("bridge.bus")

CATCH_UP_PAGE = 500
BACKOFF_FIRST, BACKOFF_CAP = 0.1, 5.0
SUBSCRIBE_TIMEOUT = 5.0
LEAVE_TIMEOUT = 0.75  # seconds for the leave at a stop (a live Redis takes milliseconds)

Incoming = Envelope | Event | Notice


class Bridge:
    def __init__(self, settings: Settings, redis: Redis, subscriber: Redis,
                 cursor_client: Redis) -> None:
        self.settings = settings
        self.name = settings.name
        self.keys = Keys(settings.room)
        self.redis = redis
        self.subscriber = subscriber
        self.cursor = CursorWriter(cursor_client, self.keys.cursor(settings.name),
                                   settings.cursor_ttl)
        self.presence = Presence(redis, settings)
        self.inbox: deque[Incoming] = deque()
        self._early: list[dict[str, Any]] = []  # pub/sub messages seen while subscribing
        self._arrived = anyio.Event()
        self._sends = ScriptBatcher(redis, scripts.SEND, settings.send_timeout)
        self._last_seen = Position()  # the last log entry read (and, if ours, put in the inbox)
        self.gate = Gate(settings)  # what of the log we deliver: size, signature, replays
        self._primed = False

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: Settings, *,
                      warn_unverified: bool = True) -> AsyncIterator[Bridge]:
        """Join the room; leave it (and flush the cursor) on exit."""
        url = await resolve_url(settings)
        redis, subscriber = make_client(url), make_client(url, retries=0)
        # its own connection, so a cursor write goes out at once, not after a pool checkout
        cursor_client = make_client(url, single_connection=True)
        try:
            await check_reachable(redis, url)
            bridge = cls(settings, redis, subscriber, cursor_client)
            pubsub = await bridge._subscribe()
            try:
                await bridge._claim()
            except BaseException:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            log.info("joined", name=settings.name, room=settings.room, redis=redact(url),
                     delivery=settings.delivery, derived_name=settings.name_was_derived,
                     signed=bridge.gate.signer is not None)
            if warn_unverified:
                bridge.gate.warn_if_unsigned()
            async with anyio.create_task_group() as tg:
                tg.start_soon(bridge._receive_forever, pubsub)
                tg.start_soon(bridge._heartbeat_forever)
                tg.start_soon(bridge.cursor.rescue_forever)
                try:
                    yield bridge
                finally:
                    tg.cancel_scope.cancel()
                    with anyio.CancelScope(shield=True), anyio.move_on_after(LEAVE_TIMEOUT):
                        await bridge._leave()
        finally:
            with anyio.CancelScope(shield=True):
                for client in (redis, subscriber, cursor_client):
                    await client.aclose()

    async def _leave(self) -> None:
        try:
            await self.flush_cursor()
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
        keys, args = send_arguments(self.settings, envelope)
        # One agent's sends reach Redis in the order its calls arrived (see batcher.py).
        reply = await self._sends.call(keys, args)
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
        cursor_text, fresh = await self.presence.claim()
        cursor = Position.parse(cursor_text)
        if cursor.order > self._last_seen.order:
            self._last_seen = cursor
            self.cursor.start_at(cursor)
        if not self._primed:
            await self.gate.remember_before(self.redis, self.keys.log, cursor)
            self._primed = True
        if fresh:
            log.info("presence_claimed", name=self.name, session=self.presence.session)

    async def _heartbeat_forever(self) -> None:
        interval = self.settings.ttl / 3
        while True:
            await anyio.sleep(interval)
            try:
                if not await self.presence.heartbeat():
                    log.warning("presence_lost", name=self.name,
                                hint="our record expired or was taken; claiming it again")
                    await self._claim()
            except NameTaken as e:
                log.error("name_lost", error=str(e))
            except (RedisError, OSError) as e:
                log.warning("heartbeat_failed", error=str(e))

    # ---------------------------------------------------------------- receiving
    async def next_batch(self, timeout: float | None = None) -> list[Incoming]:
        """Wait (up to ``timeout`` s) for incoming items, then take them all from the inbox."""
        if not self.inbox and timeout != 0:
            with anyio.move_on_after(timeout):
                await self._arrived.wait()
        items = list(self.inbox)
        self.inbox.clear()
        self._arrived = anyio.Event()
        return items

    def ack(self, envelope: Envelope) -> None:
        """The agent has been given this message: move the cursor (written in batches)."""
        self.cursor.ack(Position(envelope.id, envelope.seq))

    async def flush_cursor(self) -> None:
        """Write the cursor now, if it moved (see CursorWriter.flush)."""
        await self.cursor.flush()

    def _accept(self, item: Incoming) -> None:
        self.inbox.append(item)
        self._arrived.set()

    async def _subscribe(self) -> PubSub:
        pubsub = self.subscriber.pubsub()
        channels = [self.keys.inbox(self.name), self.keys.broadcast, self.keys.events]
        await pubsub.subscribe(*channels)
        # Wait until Redis confirms every subscription before reading the log: anything
        # published after that is either in the log we are about to read or still in the
        # socket. Messages that arrive meanwhile are kept for _listen.
        confirmed = 0
        self._early.clear()
        with anyio.fail_after(SUBSCRIBE_TIMEOUT):
            while confirmed < len(channels):
                message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT)
                if message and message["type"] == "subscribe":
                    confirmed += 1
                elif message and message["type"] == "message":
                    self._early.append(message)
        return pubsub

    async def _receive_forever(self, pubsub: PubSub | None) -> None:
        backoff = Backoff(BACKOFF_FIRST, BACKOFF_CAP)
        while True:
            try:
                if pubsub is None:
                    pubsub = await self._subscribe()
                    await self._claim()
                    log.info("reconnected", name=self.name)
                    await self.flush_cursor()  # a write lost with the connection
                await self._report_gap()
                await self._catch_up()
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
                    await self._on_wake(message["data"])
            except (RedisError, OSError):
                raise
            except Exception as e:  # one bad payload must never stop the loop
                log.warning("payload_dropped", channel=channel, reason=str(e)[:200],
                            payload=bytes(message["data"][:200]).decode(errors="replace"))

    def _on_event(self, raw: bytes) -> None:
        event = decode_event(raw)
        if event.name != self.name:
            self._accept(event)

    async def _on_wake(self, raw: bytes) -> None:
        """A live message arrived: read the log after our cursor and deliver what is ours."""
        trace.mark("woken")
        claimed_id = wake_id(raw)
        wanted = parse_id(claimed_id)
        if wanted <= self._last_seen.order:
            return  # already read from the log (catch-up, or an earlier wake-up)
        await self._catch_up()
        trace.mark("log_read")
        if wanted > self._last_seen.order:
            log.warning("payload_dropped", reason="forged id: no such message in the log",
                        id=claimed_id[:40])

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
        while True:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await self.redis.xrange(
                self.keys.log, f"({self._last_seen.id}", "+", count=CATCH_UP_PAGE
            )  # type: ignore[assignment]
            for entry_id, fields in entries:
                try:
                    envelope = decode_entry(entry_id, fields)
                except ValueError as e:
                    self._last_seen = Position(entry_id.decode(), self._last_seen.seq)
                    self.gate.dropped(self._last_seen.id, "malformed", detail=str(e)[:200])
                    continue
                self._last_seen = Position(envelope.id, envelope.seq)
                if self.gate.admits(envelope):
                    self._accept(envelope)
            if len(entries) < CATCH_UP_PAGE:
                return

    # ---------------------------------------------------------------- cursor
__all__ = ["Bridge", "BridgeError", "Incoming", "SendResult"]
