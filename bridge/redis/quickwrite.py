"""Redis command writes without a task per write (Python 3.11), packed by hiredis.

With a socket timeout set, redis-py sends every command inside ``asyncio.wait_for``. On
Python 3.11 that starts a new task for the write, so the bytes leave two event-loop turns
later: both on the path of every message (the send script at the sender, the log read at
the receiver). ``asyncio.timeout`` bounds the write the same way without a task. (Python
3.12 rewrote ``wait_for`` on top of ``asyncio.timeout``; there the two are the same.)
Kept for 3.11, which bridge supports: a PING round trip with socket_timeout set, 72 -> 68 us
(median of 8 x 3,000, redis-py 8.1, hiredis packing off, a loaded 2-core machine).

redis-py's asyncio connection also packs every command in Python (its sync one uses
hiredis); for the send script's twenty-odd arguments that was an eighth of a sender's CPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as hiredis_pack
except ImportError:  # hiredis is a dependency, but redis-py works without it
    hiredis_pack = None

PLAIN_TYPES = (str, bytes, int)  # what hiredis encodes exactly as redis-py does (UTF-8)


class QuickConnection(AbstractConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        if (hiredis_pack is None or not isinstance(args[0], str)
                or not all(type(arg) in PLAIN_TYPES for arg in args[1:])):
            return super().pack_command(*args)
        # "SCRIPT LOAD" is two words on the wire, as in redis-py's own packer
        return [hiredis_pack((*args[0].encode().split(), *args[1:]))]

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await self._send_packed(command, check_health)
        except RuntimeError as e:
            # uvloop raises this for a write on a link Redis closed (asyncio drops the bytes,
            # and the read then fails): the parent has dropped the connection; say it as
            # redis-py does, so that every retry and reconnect path sees a ConnectionError
            raise RedisConnectionError(f"Error writing to socket: {e}") from e

    async def _send_packed(self, command: Any, check_health: bool) -> None:
        timeout = self.socket_timeout
        if not timeout:
            return await super().send_packed_command(command, check_health)
        # The parent writes directly when it sees no timeout; ours bounds the whole call.
        # socket_timeout is back before anything else can run on this connection.
        self.socket_timeout = None
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)
        except TimeoutError as e:  # the parent has dropped the connection already
            raise RedisTimeoutError("Timeout writing to socket") from e
        finally:
            self.socket_timeout = timeout


_variants: dict[type[Any], type[Any]] = {}


def quick_connection_class(base: type[Any]) -> type[Any]:
    """``base`` (a redis-py connection class) writing without wait_for, packing with hiredis."""
    if issubclass(base, QuickConnection):
        return base
    variant = _variants.get(base)
    if variant is None:
        variant = _variants[base] = type(f"Quick{base.__name__}", (QuickConnection, base), {})
    return variant


def use_quick_writes(client: Redis) -> Redis:
    """Make ``client``'s connections write without wait_for, and pack with hiredis."""
    pool = client.connection_pool
    pool.connection_class = quick_connection_class(pool.connection_class)
    return client
