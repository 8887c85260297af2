"""The Room: one agent's connection to its room, and its lifecycle: join (subscribe, claim
our name, decide where in the log to go on from), heartbeat, leave.

Its parts: ``sender`` (bridge.room.sending), ``receiver`` (bridge.room.receiving: what was
read from the log and not yet taken), ``presence`` (bridge.room.presence), ``cursor``
(bridge.room.cursor).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import MovedError, RedisError

from bridge.errors import BridgeError, NameTaken, SettingsError
from bridge.redis import sentinel
from bridge.redis.clients import check_reachable, make_client, resolve_url, shown
from bridge.redis.cluster import plain_url_hint
from bridge.redis.durability import Durability
from bridge.room.batcher import ScriptBatcher
from bridge.room.claims import ClaimBook
from bridge.room.cursor import CursorSeal, CursorWriter, Position
from bridge.room.envelope import Notice
from bridge.room.keys import Keys
from bridge.room.presence import Claim, Presence
from bridge.room.presence_records import Participant
from bridge.room.receiving import Incoming, Receiver
from bridge.room.sending import SEND, Sender, SendResult
from bridge.room.signing import Gate
from bridge.settings import Settings, redact

log = structlog.get_logger("bridge.bus")  # the name logs have always carried

LEAVE_TIMEOUT = 0.75  # seconds for the leave at a stop (a live Redis takes milliseconds)


class Room:
    def __init__(self, settings: Settings, redis: Redis, subscriber: Redis,
                 cursor_client: Redis) -> None:
        self.settings = settings
        self.name = settings.name
        self.keys = Keys(settings.room)
        self.redis = redis
        self.cursor = CursorWriter(cursor_client, self.keys.cursor(settings.name),
                                   settings.cursor_ttl,
                                   CursorSeal(settings.room, settings.name, settings.secret))
        self.presence = Presence(redis, settings)
        self.claims = ClaimBook.of(redis, settings)  # file claims: renewed, released
        self.gate = Gate(settings)  # what of the log we deliver: size, signature, replays
        self.receiver = Receiver(settings, redis, subscriber, self.cursor, self.gate,
                                 reclaim=self._claim)
        self._sends = ScriptBatcher(redis, SEND, settings.send_timeout,
                                    Durability.of(settings))
        self.sender = Sender(settings, self.gate.signer, self._sends.call, self._who_is_here)
        self._primed = False
        # a newer `bridge serve` of our own client holds our name (presence.sibling): we
        # keep serving, without presence, and claim the name again once it has left
        self.stepped_aside = False

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
            pubsub = await room.receiver.subscribe()
            try:
                await room._claim()
            except BaseException as e:
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
                if isinstance(e, MovedError):  # a cluster node, by a URL of one Redis
                    raise SettingsError(plain_url_hint(shown(url))) from e
                raise
            log.info("joined", name=settings.name, room=settings.room, redis=redact(url),
                     delivery=settings.delivery, derived_name=settings.name_was_derived,
                     signed=room.gate.signer is not None)
            if warn_unverified:
                room.gate.warn_if_unsigned()
            async with anyio.create_task_group() as tg:
                tg.start_soon(room.receiver.receive_forever, pubsub)
                tg.start_soon(room._heartbeat_forever)
                tg.start_soon(room.cursor.rescue_forever)
                tg.start_soon(room.receiver.read_forever)
                tg.start_soon(room._sends.drain_forever)
                if sentinel.is_sentinel_url(url):
                    tg.start_soon(sentinel.follow_failovers, url,
                                  (redis, subscriber, cursor_client))
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
            # an operator's `send --as` keeps the name's claims; one that stepped aside leaves
            # them to the sibling that holds the name
            if self.settings.announce and not self.stepped_aside:
                await self.claims.release_all(self.name)
        except (RedisError, OSError) as e:
            log.warning("leave_failed", error=str(e))

    def abandon_sends(self) -> None:
        """Stopping: sends still queued or retrying fail at once, and later ones too."""
        self._sends.close("bridge is stopping; the message may not have been sent")

    # ---------------------------------------------------------------- presence
    async def participants(self) -> tuple[int, list[Participant]]:
        return await self.presence.participants()

    async def set_status(self, status: str) -> None:
        await self.presence.set_status(status)

    async def _claim(self) -> None:
        """Claim our name, and decide where in the log to go on from (see _resume)."""
        claim = await self.presence.claim()
        first = not self.cursor.epoch
        if not await self._adopt_a_lost_epoch(claim, first):
            self._resume(claim, first)
        if not self._primed:
            await self.gate.remember_before(self.redis, self.keys.log, self.receiver.last_seen)
            self._primed = True
        if claim.fresh:
            log.info("presence_claimed", name=self.name, session=self.presence.session)

    async def _adopt_a_lost_epoch(self, claim: Claim, first: bool) -> bool:
        """A new epoch with our last entry still in the log is no new log: the epoch key
        alone was lost (evicted, deleted by hand). Take the new epoch and go on; starting
        over would deliver the whole log again. True: the first claim has started here."""
        if first:
            try:
                stored = self.cursor.seal.read(claim.cursor)
            except ValueError:
                return False
            if not stored.sealed or not stored.epoch or stored.epoch == claim.epoch:
                return False
            position = stored.position
        else:
            if claim.epoch == self.cursor.epoch:
                return False
            position = self.receiver.last_seen
        if position.order == (0, 0):
            return False
        found: list[Any] = await self.redis.xrange(
            self.keys.log, position.id, position.id, count=1)  # type: ignore[assignment]
        if not found:
            return False
        log.warning("log_epoch_restored", room=self.settings.room, epoch=claim.epoch,
                    hint="the epoch key changed but our last entry is still in the log: "
                         "the same log, going on")
        if not first:  # the re-claim goes on as usual, under the adopted epoch
            self.cursor.adopt(claim.epoch)
            return False
        self._start(position, claim.epoch, write=True)
        return True

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
                self.receiver.accept(Notice(
                    f"Your read position in room {room} was not written by this agent with "
                    f"the room secret (bridge 0.1 wrote it so, before cursors were sealed, or "
                    f"someone changed it in Redis), so bridge does not trust it "
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
        elif self.receiver.last_seen.order > log_end.order:
            self._log_rewound(log_end, claim.epoch)
        elif claim.created:  # the key expired or was deleted meanwhile: write ours again
            self.cursor.start_at(self.cursor.acked, claim.epoch, write=True)
        elif stored is not None and stored.sealed and stored.epoch == claim.epoch:
            # our own cursor moves only forward within one log
            if stored.position.order > self.receiver.last_seen.order:
                self.receiver.last_seen = stored.position
            self.cursor.start_at(stored.position, claim.epoch)

    def _start(self, position: Position, epoch: str, *, write: bool = False) -> None:
        self.receiver.last_seen = position
        self.cursor.start_at(position, epoch, write=write)

    def _log_reset(self, epoch: str, why: str) -> None:
        log.warning("log_reset", room=self.settings.room, reason=why,
                    cursor=str(self.receiver.last_seen),
                    hint="the room's log is new (a new or emptied Redis): starting over on it")
        self.receiver.start_over(Position())
        self.cursor.reset(Position(), epoch)
        self.receiver.accept(Notice(
            f"The log of room {self.settings.room} was reset (Redis was replaced or emptied): "
            f"bridge starts over on the new log. Messages sent before the reset that had not "
            f"reached you are lost: ask the others to repeat what matters."))

    def _log_rewound(self, log_end: Position, epoch: str) -> None:
        log.warning("log_rewound", room=self.settings.room, cursor=str(self.receiver.last_seen),
                    log_end=str(log_end),
                    hint="the log's newest entry is behind what we read: it lost its end")
        self.receiver.start_over(log_end)
        self.cursor.reset(log_end, epoch)
        self.receiver.accept(Notice(
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
                    if await self.presence.held_by_sibling():
                        if not self.stepped_aside:
                            log.warning("stepped_aside", name=self.name, hint="a newer bridge "
                                        "serve of this same client holds the name; this one "
                                        "keeps serving and takes it back once that one left")
                        self.stepped_aside = True
                        continue
                    log.warning("presence_lost", name=self.name,
                                hint="our record expired or was taken; claiming it again")
                    async with self.receiver.reading:
                        await self._claim()
                    self.stepped_aside = False
                if self.claims.may_hold(self.name):  # one call, only while it has claims
                    await self.claims.renew(self.name)
            except NameTaken as e:
                log.error("name_lost", error=str(e))
            except (RedisError, OSError) as e:
                log.warning("heartbeat_failed", error=str(e))

    # ---------------------------------------------------------------- the parts' API
    async def send(self, to: str | list[str], text: str, reply_to: str = "") -> SendResult:
        """See Sender.send."""
        return await self.sender.send(to, text, reply_to)

    async def next_batch(self, timeout: float | None = None) -> list[Incoming]:
        """See Receiver.next_batch."""
        return await self.receiver.next_batch(timeout)

    def ack(self, *items: Incoming) -> None:
        self.receiver.ack(*items)

    def give_back(self, items: Sequence[Incoming]) -> None:
        self.receiver.give_back(items)

    @property
    def unread(self) -> int:
        return self.receiver.unread

    async def flush_cursor(self) -> None:
        """Write the cursor now, if it moved (see CursorWriter.flush)."""
        await self.cursor.flush()

    def flush_cursor_soon(self) -> None:
        """Have the cursor written in the background: for callers that must not wait for
        Redis (read_messages answers from memory while Redis is down)."""
        self.cursor.flush_soon()

    async def _who_is_here(self) -> str:
        _, people = await self.presence.participants()
        others = [p.name for p in people if p.name != self.name]
        if not others:
            return "Nobody else is in the room right now."
        return f"In the room now: {', '.join(others)}."


__all__ = ["BridgeError", "Incoming", "Room", "SendResult"]
