"""bridge/room/subscriber.py reads a subscription straight from its connection's parser: the same
messages, in order, in RESP2 (lists) and RESP3 (push frames), against a real redis-server."""

from __future__ import annotations

import anyio
import pytest
import redis

from bridge.room.clients import make_client
from bridge.room.subscriber import lean_reader, open_subscription, published
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
