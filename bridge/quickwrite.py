"""Redis command writes without a task per write, on Python 3.11.

With a socket timeout set, redis-py sends every command inside ``asyncio.wait_for``. On
Python 3.11 that starts a new task for the write, so the bytes leave two event-loop turns
later: both on the path of every message (the send script at the sender, the log read at
the receiver). ``asyncio.timeout`` bounds the write the same way without a task. Python 3.12
rewrote ``wait_for`` on top of ``asyncio.timeout``, so there this changes nothing.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import TimeoutError as RedisTimeoutError


class TimeoutWithoutTask(AbstractConnection):
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
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


def use_quick_writes(client: Redis) -> Redis:
    """Make ``client``'s connections write without wait_for (Python 3.11 only)."""
    if sys.version_info >= (3, 12):
        return client
    pool = client.connection_pool
    base = pool.connection_class
    if not issubclass(base, TimeoutWithoutTask):
        variant = _variants.get(base)
        if variant is None:
            variant = _variants[base] = type(f"Quick{base.__name__}",
                                             (TimeoutWithoutTask, base), {})
        pool.connection_class = variant
    return client
