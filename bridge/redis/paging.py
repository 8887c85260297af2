"""Paging through the room's log (a Redis stream): the page size and the loop, once.

Every reader of the log (catch-up, the replay memory at start-up, `bridge history` and
`bridge tail`) reads it in pages of PAGE entries, so that a long log is never one reply.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from redis.asyncio import Redis

PAGE = 500  # entries per XRANGE / XREVRANGE / XREAD

Entry = tuple[bytes, dict[bytes, bytes]]


async def pages(redis: Redis, key: str, low: str, high: str = "+", *,
                newest_first: bool = False) -> AsyncGenerator[list[Entry], None]:
    """The entries of the log ``key`` between ``low`` and ``high`` (XRANGE bounds, "(" for
    an exclusive one), a page at a time: oldest first, or newest first. Ends after a page
    shorter than PAGE."""
    while True:
        page: Any = await (redis.xrevrange(key, high, low, count=PAGE) if newest_first else
                           redis.xrange(key, low, high, count=PAGE))
        yield page
        if len(page) < PAGE:
            return
        if newest_first:
            high = f"({page[-1][0].decode()}"
        else:
            low = f"({page[-1][0].decode()}"
