"""bridge/redis/lane.py: commands on a held connection, as a pipeline would answer them, and never
a reply read by the wrong call (real redis-server)."""

from __future__ import annotations

import anyio
import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bridge.redis.clients import make_client
from bridge.redis.lane import Lane
from tests.conftest import RedisServer

pytestmark = pytest.mark.anyio


async def test_replies_come_in_order_with_an_error_reply_in_its_place(
        redis_server: RedisServer) -> None:
    client = make_client(redis_server.url)
    lane = Lane(client)
    assert Lane.usable(client)
    replies = await lane.run([("SET", "k", "v"), ("INCR", "k"), ("GET", "k")])
    assert replies[0] in (b"OK", True, "OK")
    assert isinstance(replies[1], ResponseError) and "not an integer" in str(replies[1])
    assert replies[2] == b"v"
    await client.aclose()


async def test_a_call_cut_off_mid_way_never_hands_its_reply_to_the_next(
        redis_server: RedisServer, r: redis.Redis) -> None:
    client = make_client(redis_server.url)
    lane = Lane(client)
    r.rpush("slow", "late")
    with anyio.move_on_after(0.2):  # cancelled while Redis still holds the reply back
        await lane.run([("BLPOP", "never", 2)])
    # the cancelled call's reply (nil, after 2 s) must not be taken for this one's
    assert await lane.run([("LPOP", "slow")]) == [b"late"]
    await client.aclose()


async def test_a_lost_link_raises_and_the_next_call_connects_again(
        redis_server: RedisServer, r: redis.Redis) -> None:
    client = make_client(redis_server.url)
    lane = Lane(client)
    await lane.run([("CLIENT", "SETNAME", "the-lane")])
    r.client_kill_filter(_type="normal", skipme=True)  # drops every connection but r's
    with pytest.raises((RedisConnectionError, OSError)):
        await lane.run([("PING",)])
    assert await lane.run([("ECHO", "again")]) == [b"again"]
    await client.aclose()
