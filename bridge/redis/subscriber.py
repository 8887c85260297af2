"""What every pub/sub reader of bridge needs: a confirmed subscription, liveness pings, a quiet
close; and the backoff of every reconnect and retry loop.

On a Redis Cluster the subscription is sharded (SSUBSCRIBE on the shard that owns the room,
bridge.redis.cluster); elsewhere classic (SUBSCRIBE). Readers need not know which."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from functools import partial
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from bridge.redis.cluster import shard_pubsub

PING_WHEN_QUIET, PONG_TIMEOUT = 3.0, 3.0
MESSAGES = ("message", "smessage")  # a published message: classic, or sharded
DROPPED = ("unsubscribe", "sunsubscribe")  # we never unsubscribe while reading: Redis did


async def open_subscription(client: Redis, channels: list[str], timeout: float
                            ) -> tuple[PubSub, list[dict[str, Any]]]:
    """A pubsub subscribed to ``channels`` (all of one room: one slot), confirmed (see
    subscribe_confirmed), and the messages that arrived meanwhile. On a cluster the slot
    map is read anew first: this is where a receiver lands after a failover or a slot move."""
    pubsub = await shard_pubsub(client, channels[0])
    try:
        return pubsub, await subscribe_confirmed(pubsub, channels, timeout)
    except BaseException:
        await close_quietly(pubsub)
        raise


async def subscribe_confirmed(pubsub: PubSub, channels: list[str], timeout: float
                              ) -> list[dict[str, Any]]:
    """SUBSCRIBE (SSUBSCRIBE on a shard), and wait until Redis confirms every channel
    (TimeoutError after ``timeout`` s): anything published after that reaches us. Returns
    the messages that arrived meanwhile, for the reader (``published(pubsub, pending=...)``)."""
    sharded = getattr(pubsub, "sharded", False)
    await (pubsub.ssubscribe(*channels) if sharded else pubsub.subscribe(*channels))
    confirmation = "ssubscribe" if sharded else "subscribe"
    early: list[dict[str, Any]] = []
    confirmed = 0
    with anyio.fail_after(timeout):
        while confirmed < len(channels):
            message = await pubsub.get_message(timeout=timeout)
            if message and message["type"] == confirmation:
                confirmed += 1
            elif message and message["type"] in MESSAGES:
                early.append(message)
            elif message and message["type"] in DROPPED:
                raise dropped(message)
    return early


def dropped(message: dict[str, Any]) -> RedisConnectionError:
    """Redis ended our subscription itself: on a cluster, the room's slot left that node
    (a failover, a resharding). Handled as a lost connection: resubscribe, catch up."""
    channel = bytes(message.get("channel") or b"").decode(errors="replace")
    return RedisConnectionError(f"Redis ended our subscription to {channel} (its slot "
                                f"moved to another node: a failover or a resharding)")


async def published(pubsub: PubSub, pending: list[dict[str, Any]] | None = None
                    ) -> AsyncIterator[dict[str, Any]]:
    """Yield the `message`s of a subscription: first ``pending`` ones, then live ones.

    A connection that only reads never notices a dead peer (a cut cable, a laptop that
    slept). So when it is quiet we PING, and a missing PONG raises a ConnectionError.
    """
    heard, pinged = time.monotonic(), False
    read = lean_reader(pubsub) or partial(pubsub.get_message, timeout=1.0)
    while True:
        message = pending.pop(0) if pending else await read()
        now = time.monotonic()
        if message is None:
            if not pinged and now - heard > PING_WHEN_QUIET:
                await pubsub.ping()
                pinged = True
            elif pinged and now - heard > PING_WHEN_QUIET + PONG_TIMEOUT:
                raise RedisConnectionError(
                    f"no answer on the subscriber connection for {now - heard:.0f} s")
            continue
        heard, pinged = now, False
        if message["type"] in MESSAGES:
            yield message
        elif message["type"] in DROPPED:
            raise dropped(message)


def lean_reader(pubsub: PubSub) -> Callable[[], Awaitable[dict[str, Any] | None]] | None:
    """The next message of a subscription (None after a quiet second), read straight from its
    connection's parser. redis-py's get_message goes through its retry wrapper, a timeout
    and its message handling first: ~200 Python calls a message (a PING round trip on a held
    connection 54 -> 15 us). None for a parser without that method (then get_message)."""
    connection = pubsub.connection
    parser = getattr(connection, "_parser", None)
    if connection is None or not hasattr(parser, "read_response"):
        return None
    if hasattr(parser, "pubsub_push_handler_func"):  # RESP3: a message is a push frame,
        parser.pubsub_push_handler_func = _as_is  # which redis-py's would log, formatted

    async def read() -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(1.0):
                reply = await parser.read_response(push_request=True)
        except TimeoutError:  # (a read cancelled here leaves what came in the reader)
            return None
        if isinstance(reply, Exception):  # an error reply (to our PING)
            raise reply
        return as_message(reply)

    return read


def as_message(reply: Any) -> dict[str, Any]:
    """A reply read on a subscription, as get_message gives it: type, channel, data."""
    if not isinstance(reply, list) or not reply:  # RESP3's PONG
        return {"type": "pong", "channel": b"", "data": reply}
    kind = reply[0]
    kind = kind.decode(errors="replace") if isinstance(kind, bytes) else str(kind)
    if len(reply) == 3:  # (p)message, (s)(un)subscribe: kind, channel, data
        return {"type": kind, "channel": reply[1], "data": reply[2]}
    return {"type": kind, "channel": b"", "data": reply[-1]}  # RESP2's pong


async def _as_is(reply: Any) -> Any:
    return reply


async def close_quietly(pubsub: PubSub) -> None:
    """Close a subscription that may already be broken, even while being cancelled."""
    with anyio.CancelScope(shield=True), suppress(RedisError, OSError):
        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]


class Backoff:
    """Capped exponential backoff with jitter, for reconnect and retry loops."""

    def __init__(self, first: float, cap: float) -> None:
        self.first, self.cap = first, cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    async def wait(self) -> None:
        await anyio.sleep(self.delay * random.uniform(0.5, 1.0))
        self.delay = min(self.delay * 2, self.cap)
