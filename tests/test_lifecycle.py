"""The life of one `bridge serve` process: when it joins the room, how it stops, and how
it holds up under many calls at once. Real redis-server and real `bridge serve` processes."""

from __future__ import annotations

import json
import signal
from typing import Any

import anyio
import pytest

from tests.conftest import Agents

pytestmark = pytest.mark.anyio


async def test_300_concurrent_tool_calls_all_succeed(agents: Agents) -> None:
    """More calls in flight than redis-py's pool has connections: they wait for one, and
    none is told that Redis is unreachable."""
    alice = await agents.start("alice")
    await agents.start("bob")
    calls = [("list_participants", {}) if i % 2 else
             ("send_message", {"to": "bob", "text": f"m{i}"}) for i in range(300)]
    for request_id, (tool, arguments) in enumerate(calls, start=1000):
        await alice.send_request(request_id, "tools/call",
                                 {"name": tool, "arguments": arguments})
    failures = []
    for request_id, (tool, _) in enumerate(calls, start=1000):
        result = await alice.response(request_id, timeout=60)
        if result.get("isError"):
            failures.append((tool, result["content"][0]["text"]))
    assert failures == []


def test_only_a_redis_that_does_not_answer_is_called_unreachable() -> None:
    from redis.exceptions import (
        AuthenticationError,
        BusyLoadingError,
        DataError,
        ResponseError,
    )
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from bridge.server import redis_failure

    for down in (RedisConnectionError("Error 111 connecting"), RedisTimeoutError("Timeout"),
                 ConnectionRefusedError(111, "refused"), TimeoutError()):
        assert redis_failure(down).startswith("Redis is unreachable"), down
    answered = {
        ResponseError("NOPERM this user has no permissions"): "Redis refused the command",
        AuthenticationError("invalid password"): "Redis refused our login",
        BusyLoadingError("LOADING Redis is loading"): "still loading its data",
        DataError("Invalid input of type"): "Redis answered something bridge did not expect",
    }
    for error, needle in answered.items():
        text = redis_failure(error)
        assert needle in text and "unreachable" not in text, text
