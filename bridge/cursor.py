"""The cursor: which log entry an agent has been given last, kept in Redis.

It is written right after each push reaches the pipe (and after each read_messages), so a
restarted agent resumes exactly where the last one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge.envelope import parse_id

log = structlog.get_logger("bridge.cursor")

CURSOR_FLUSH_SECONDS = 0.5
CURSOR_WRITE_TIMEOUT = 5.0


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
        """The cursor key holds ``"<id> <seq>"``."""
        entry_id, _, seq = cursor.partition(" ")
        parse_id(entry_id)
        return cls(entry_id, int(seq) if seq.isdigit() else 0)

    def __str__(self) -> str:
        return f"{self.id} {self.seq}"


class CursorWriter:
    """Owns one agent's cursor key and a connection of its own.

    The connection has no socket timeout: redis-py wraps a write in asyncio.wait_for when
    one is set, and that yields to the event loop before the bytes go out.
    """

    def __init__(self, client: Redis, key: str, ttl_seconds: float) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.acked = Position()  # the last message delivered to the agent
        self.flushed = Position()  # what the cursor key holds
        self._writing = False

    def start_at(self, position: Position) -> None:
        """The position read from Redis at claim time."""
        if position.order > self.acked.order:
            self.acked = self.flushed = position

    def ack(self, position: Position) -> None:
        """The agent has been given this message."""
        if position.order > self.acked.order:
            self.acked = position

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
        try:
            while self.acked != self.flushed:
                acked = self.acked
                connection = self.client.connection
                with anyio.fail_after(CURSOR_WRITE_TIMEOUT):  # the client has no timeout
                    if connection is not None and connection.is_connected:
                        try:
                            await connection.send_packed_command(connection.pack_command(
                                "SET", self.key, str(acked), "PX", self.ttl_ms),
                                check_health=False)
                            await connection.read_response()
                        except BaseException:
                            await connection.disconnect(nowait=True)
                            raise
                    else:  # (re)connects, then writes
                        await self.client.set(self.key, str(acked), px=self.ttl_ms)
                self.flushed = acked
        finally:
            self._writing = False

    async def rescue_forever(self) -> None:
        """A safety net for cursor writes that failed: pushes and reads flush for themselves,
        so this writes only a position that has stayed unwritten for a whole period (and
        never races the write that follows a push)."""
        previous = self.acked
        while True:
            await anyio.sleep(CURSOR_FLUSH_SECONDS)
            stale, previous = self.acked == previous, self.acked
            if not stale:
                continue
            try:
                await self.flush()
            except (RedisError, OSError) as e:
                log.warning("cursor_flush_failed", error=str(e))
