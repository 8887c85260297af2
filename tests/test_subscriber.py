"""bridge/redis/subscriber.py reads a subscription straight from its connection's parser: the same
messages, in order, in RESP2 (lists) and RESP3 (push frames), against a real redis-server."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis

from bridge.redis import feed
from bridge.redis.clients import make_client
from bridge.redis.subscriber import close_quietly, lean_reader, open_subscription, published
from tests.conftest import RedisServer

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("protocol", [2, 3])
async def test_messages_arrive_whole_and_in_order(redis_server: RedisServer, r: redis.Redis,
                                                  protocol: int) -> None:
    client = make_client(f"{redis_server.url}?protocol={protocol}", retries=0,
                         single_connection=True)
    pubsub, early = await open_subscription(client, ["to:bob", "all"], timeout=5)
    assert early == []
    assert lean_reader(pubsub) is not None, "the lean path must be the one under test"
    payloads = [b'{"id":"1-0"}', b"\x00\xff binary \r\n", "héllo ✓".encode()]
    for index, payload in enumerate(payloads):
        r.publish("all" if index == 1 else "to:bob", payload)
    got = []
    with anyio.fail_after(5):
        async for message in published(pubsub):
            got.append((message["type"], message["channel"], message["data"]))
            if len(got) == len(payloads):
                break
    assert got == [("message", b"to:bob", payloads[0]), ("message", b"all", payloads[1]),
                   ("message", b"to:bob", payloads[2])]
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await client.aclose()


@pytest.mark.parametrize("protocol", [2, 3])
async def test_a_killed_subscriber_connection_raises(redis_server: RedisServer, r: redis.Redis,
                                                     protocol: int) -> None:
    client = make_client(f"{redis_server.url}?protocol={protocol}", retries=0,
                         single_connection=True)
    pubsub, _ = await open_subscription(client, ["to:bob"], timeout=5)
    r.client_kill_filter(_type="pubsub")
    with anyio.fail_after(5), pytest.raises((redis.ConnectionError, OSError)):
        async for _ in published(pubsub):
            pass
    await client.aclose()


async def listen_until(pubsub: Any, count: int) -> list[tuple[str, bytes, bytes]]:
    got: list[tuple[str, bytes, bytes]] = []
    done = anyio.Event()

    def on_message(message: dict[str, Any]) -> None:
        got.append((message["type"], message["channel"], message["data"]))
        if len(got) == count:
            done.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(feed.listen, pubsub, on_message, [])
            await done.wait()
            tg.cancel_scope.cancel()
    return got


@pytest.mark.parametrize("protocol", [2, 3])
async def test_the_feed_hands_over_every_message_in_order(redis_server: RedisServer,
                                                          r: redis.Redis,
                                                          protocol: int) -> None:
    """Also those that arrived before the socket was taken over (in the socket, in redis-py's
    stream reader or in its hiredis reader: wherever they are, none may be lost)."""
    client = make_client(f"{redis_server.url}?protocol={protocol}", retries=0,
                         single_connection=True)
    pubsub, _ = await open_subscription(client, ["to:bob"], timeout=5)
    before = [f"before {i}".encode() for i in range(50)]
    for payload in before:
        r.publish("to:bob", payload)
    await pubsub.ping()  # its PONG comes after them: wait until redis-py's reader has it
    stream = pubsub.connection._reader  # (asyncio's StreamReader, fed by the event loop)
    with anyio.fail_after(5):
        while b"PONG" not in bytes(stream._buffer).upper():
            await stream._wait_for_data("test")  # woken when more bytes are fed
    got = await listen_until(pubsub, len(before))
    assert got == [("message", b"to:bob", payload) for payload in before]
    with anyio.fail_after(2):  # closing a taken-over subscription does not hang
        await close_quietly(pubsub)
    await client.aclose()


async def test_a_killed_connection_ends_the_feed(redis_server: RedisServer,
                                               r: redis.Redis) -> None:
    client = make_client(redis_server.url, retries=0, single_connection=True)
    pubsub, _ = await open_subscription(client, ["to:bob"], timeout=5)
    r.client_kill_filter(_type="pubsub")
    with anyio.fail_after(5), pytest.raises(redis.ConnectionError):
        await feed.listen(pubsub, lambda message: None, [])
    with anyio.fail_after(2):
        await close_quietly(pubsub)
    await client.aclose()
