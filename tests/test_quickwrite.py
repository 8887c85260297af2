"""bridge/redis/quickwrite.py packs commands with hiredis: the bytes must be exactly redis-py's."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from bridge.redis.quickwrite import QuickConnection, use_quick_writes

COMMANDS: list[tuple[Any, ...]] = [
    ("SET", "bridge:{main}:cursor:bob", "1732400000000-0 7", "PX", 604800000),
    ("EVALSHA", "ab" * 20, 3, "k1", "k2", "k3", "héllo ✓ \x00 \r\n", b"\xff\x00raw", -5, 0),
    ("SCRIPT LOAD", "return 1"),
    ("CLIENT SETINFO", "LIB-NAME", "redis-py"),
    ("XRANGE", "bridge:{main}:log", "(0-0", "+", "COUNT", 500),
    ("SET", "k", 1.5),  # a float: left to redis-py's packer
    ("SET", "k", ""),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_packed_bytes_are_redis_pys(command: tuple[Any, ...]) -> None:
    client = use_quick_writes(Redis(host="127.0.0.1", port=1))
    quick = client.connection_pool.make_connection()
    assert isinstance(quick, QuickConnection)
    plain = Connection(host="127.0.0.1", port=1)
    assert b"".join(quick.pack_command(*command)) == b"".join(plain.pack_command(*command))
