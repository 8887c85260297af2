"""The cursor: which log entry an agent has been given last, kept in Redis.

It moves only over what the agent has acknowledged: a push once it is in the pipe, a
`read_messages` answer once the agent asks again (pull mode). It is written right after each
push, so a restarted agent resumes exactly where the last one stopped.

The key holds ``"<id> <seq> <epoch> <mac>"``: the epoch names the life of the room log it
points into (a new, empty Redis has another), and with a room secret the MAC shows that this
agent wrote it, so a cursor set back by hand is noticed instead of replaying old messages.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import deque
from dataclasses import dataclass

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge.redis.lane import Lane
from bridge.room.envelope import parse_id

log = structlog.get_logger("bridge.cursor")

CURSOR_FLUSH_SECONDS = 0.5
CURSOR_WRITE_TIMEOUT = 5.0
MAC_HEX = 32


@dataclass(frozen=True)
class Position:
    """A place in the room log: the entry id, and its sequence number (0 if unknown)."""

    id: str = "0-0"
    seq: int = 0

    @property
    def order(self) -> tuple[int, int]:
        return parse_id(self.id)

    @classmethod
    def parse(cls, cursor: str) -> Position:
        """The leading ``"<id> <seq>"`` of a cursor."""
        entry_id, _, rest = cursor.partition(" ")
        parse_id(entry_id)
        seq = rest.partition(" ")[0]
        return cls(entry_id, int(seq) if seq.isdigit() and len(seq) <= 20 else 0)

    def __str__(self) -> str:
        return f"{self.id} {self.seq}"


@dataclass(frozen=True)
class StoredCursor:
    position: Position
    epoch: str  # "" for a cursor written before epochs existed
    sealed: bool  # the MAC is ours (always True without a room secret)


class CursorSeal:
    """Formats and reads the cursor key's value; with a room secret, MACs it."""

    def __init__(self, room: str, name: str, secret: str) -> None:
        self.context = f"cursor\0{room}\0{name}\0"
        self.secret = secret.encode("utf-8") if secret else b""

    def _mac(self, position: Position, epoch: str) -> str:
        text = f"{self.context}{position.id}\0{position.seq}\0{epoch}".encode()
        return hmac.new(self.secret, text, hashlib.sha256).hexdigest()[:MAC_HEX]

    def text(self, position: Position, epoch: str) -> str:
        value = f"{position} {epoch}"
        return f"{value} {self._mac(position, epoch)}" if self.secret else value

    def read(self, value: str) -> StoredCursor:
        """Raises ValueError for a value that is not a cursor at all."""
        position = Position.parse(value)
        parts = value.split(" ")
        epoch = parts[2] if len(parts) > 2 else ""
        if not self.secret:
            return StoredCursor(position, epoch, True)
        mac = parts[3] if len(parts) > 3 else ""
        sealed = len(parts) == 4 and hmac.compare_digest(
            mac.encode("ascii", "replace"), self._mac(position, epoch).encode())
        return StoredCursor(position, epoch, sealed)


class CursorWriter:
    """Owns one agent's cursor key and a connection of its own.

    Items are handed out (pushed, or returned by read_messages) in log order and acknowledged
    later, possibly out of order; the cursor moves over the acknowledged front only, so it
    never passes a message the agent may not have.

    The connection has no socket timeout: redis-py wraps a write in asyncio.wait_for when
    one is set, and that yields to the event loop before the bytes go out.
    """

    def __init__(self, client: Redis, key: str, ttl_seconds: float, seal: CursorSeal) -> None:
        self.client = client
        self._lane = Lane(client) if Lane.usable(client) else None  # the SET: 54 -> 15 us
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.seal = seal
        self.epoch = ""
        self.acked = Position()  # everything up to here has reached the agent
        self.flushed: Position | None = Position()  # what the key holds (None: must write)
        # [item, its Position, acknowledged], in log order
        self._handed: deque[list[object]] = deque()
        self._writing = False
        self._resets = 0
        self._written = asyncio.Event()  # set when a write ends
        self._nudge = asyncio.Event()

    def start_at(self, position: Position, epoch: str, *, write: bool = False) -> None:
        """The position read from Redis at claim time (never backwards within one log)."""
        if epoch != self.epoch:
            self.reset(position, epoch)
        elif position.order > self.acked.order:
            self.acked = self.flushed = position
        if write:
            self.flushed = None

    def adopt(self, epoch: str) -> None:
        """The same log under a new epoch (its key was lost): write the cursor with it."""
        self.epoch = epoch
        self.flushed = None
        self._resets += 1

    def reset(self, position: Position, epoch: str) -> None:
        """Start over at ``position`` of a new log: what was handed out of the old one no
        longer moves the cursor, and the key is written anew."""
        self.epoch = epoch
        self.acked = position
        self.flushed = None
        self._resets += 1
        self._handed.clear()

    def hand(self, item: object, position: Position) -> None:
        """``item`` (at ``position`` of the log) is on its way to the agent: pushed, or
        returned by a read. Kept in log order: one given back after a failed post is handed
        again after others were."""
        at = len(self._handed)
        while at and position.order < self._handed[at - 1][1].order:  # type: ignore[attr-defined]
            at -= 1
        self._handed.insert(at, [item, position, False])

    def unhand(self, item: object) -> None:
        """``item`` did not reach the agent after all: it will be handed out again."""
        for entry in self._handed:
            if entry[0] is item:
                self._handed.remove(entry)
                return

    def ack(self, item: object) -> None:
        """The agent has ``item``. Items not handed out since the last reset of the log (the
        old log's, whose ids may even equal the new log's) are ignored."""
        for index, entry in enumerate(self._handed):
            if entry[0] is item:
                entry[2] = True
                # of acknowledged neighbours only the later one counts: keep one, so an
                # entry never acknowledged (a held message) does not pile up the rest
                if index and self._handed[index - 1][2]:
                    del self._handed[index - 1]
                    index -= 1
                if index + 1 < len(self._handed) and self._handed[index + 1][2]:
                    del self._handed[index]
                break
        while self._handed and self._handed[0][2]:
            done = self._handed.popleft()[1]
            assert isinstance(done, Position)
            if done.order > self.acked.order:
                self.acked = done

    @property
    def unwritten(self) -> bool:
        return self.flushed is None or self.acked != self.flushed

    def flush_soon(self) -> None:
        """Ask the background writer to write now, without waiting for Redis."""
        self._nudge.set()

    async def flush(self) -> None:
        """Write the cursor now, if it moved.

        Called right after a push reached the pipe. The SET's bytes must leave before
        anything else runs (a crash in between repeats the push), so on a live connection
        the command is packed and written directly: redis-py's full command path takes tens
        of microseconds and may yield to the event loop first.
        """
        # One write at a time, so the cursor never goes back. No lock: acquiring one
        # would yield to the event loop between the push and this write.
        if self._writing:
            return  # the writer under way loops until the newest position is written
        self._writing = True
        self._written = asyncio.Event()
        try:
            while self.unwritten:
                acked, resets = self.acked, self._resets
                value = self.seal.text(acked, self.epoch)
                async with asyncio.timeout(CURSOR_WRITE_TIMEOUT):  # the client has none
                    if self._lane is not None:
                        reply = (await self._lane.run(
                            [("SET", self.key, value, "PX", self.ttl_ms)]))[0]
                        if isinstance(reply, Exception):
                            raise reply
                    else:  # a cluster client routes the command itself
                        await self.client.set(self.key, value, px=self.ttl_ms)
                if self._resets == resets:  # else a reset came meanwhile: write again
                    self.flushed = acked
        finally:
            self._writing = False
            self._written.set()

    async def flush_last(self) -> None:
        """The final write, when leaving: after a write under way (perhaps in a task being
        cancelled, which then did not finish its loop), write whatever is still unwritten."""
        while self._writing:
            await self._written.wait()
        await self.flush()

    async def rescue_forever(self) -> None:
        """Writes what acknowledgements left unwritten: at once when nudged (pull mode's
        acks, which must not wait for Redis), else a position that stayed unwritten for a
        whole period (a failed write; never racing the write that follows a push)."""
        previous = self.acked
        while True:
            with anyio.move_on_after(CURSOR_FLUSH_SECONDS):
                await self._nudge.wait()
            nudged = self._nudge.is_set()
            self._nudge = asyncio.Event()
            stale, previous = self.acked == previous, self.acked
            if not (nudged or stale) or not self.unwritten:
                continue
            try:
                await self.flush()
            except (RedisError, OSError, TimeoutError) as e:
                log.warning("cursor_flush_failed", error=str(e) or type(e).__name__)
