"""A connection held for one stream of hot commands (a sender's send function), written and read
without redis-py's per-command layers.

redis-py opens the connection (TLS, AUTH, HELLO, SELECT, a Sentinel's current primary) and we
keep it. A command then costs one write and the parser's read of its reply, not the
client's pool checkout, retry wrapper, timeouts and event hooks: about 200 Python calls. A PING
round trip on this 2-core VM: 54 us through ``Redis.execute_command``, 15 us this way
(``bench.ab`` has the effect on a send).

One caller at a time (the batcher's drain task). A call that fails or is cancelled part-way
drops the connection, so no later call can read a reply meant for an earlier one; the next
call connects again. Not for a Redis Cluster, whose client routes each command itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bridge.redis.cluster import is_cluster
from bridge.redis.quickwrite import hiredis_pack


class Lane:
    def __init__(self, client: Redis) -> None:
        self.client = client
        self._connection: AbstractConnection | None = None

    @staticmethod
    def usable(client: Redis) -> bool:
        """Whether a lane can stand in for ``client``: one Redis (not a cluster), and commands
        packed by hiredis."""
        return (hiredis_pack is not None and not is_cluster(client)
                and hasattr(client, "connection_pool"))

    async def run(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """The replies to ``commands``, written in one write and read in order. An error reply
        comes back as its ResponseError, in its place, as from a pipeline; a lost link (or
        any error that is not a reply's own) raises."""
        assert hiredis_pack is not None  # (usable)
        connection = await self._connected()
        try:
            pack: Callable[[tuple[Any, ...]], bytes] = hiredis_pack
            connection._writer.write(  # type: ignore[union-attr]
                b"".join(pack(command) for command in commands))
            replies = [await connection._parser.read_response()  # type: ignore[attr-defined]
                       for _ in commands]
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        failure = next((reply for reply in replies if isinstance(reply, Exception)
                        and not isinstance(reply, ResponseError)), None)
        if failure is not None:  # e.g. NOAUTH after a restart: the connection is not usable
            await connection.disconnect(nowait=True)
            raise failure
        return replies

    async def _connected(self) -> AbstractConnection:
        connection = self._connection
        if connection is None:  # taken from the pool for good (the client's close closes it)
            connection = self._connection = (
                await self.client.connection_pool.get_connection())  # type: ignore[no-untyped-call]
        if not connection.is_connected:
            await connection.connect()
        if connection._writer is None:  # (a disconnect raced the connect)
            raise RedisConnectionError("the connection to Redis closed")
        return connection
