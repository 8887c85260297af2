"""Redis clients: which server (configured or embedded), and how we connect to it."""

from __future__ import annotations

import re
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import RedisError

from bridge.embedded import EmbeddedRedis
from bridge.errors import RedisUnavailable
from bridge.settings import Settings


def redact(url: str) -> str:
    """The URL with its password replaced, for logs and error messages: the one before the
    ``@`` and a ``password=`` query parameter (redis-py takes both)."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ':'}***@{host}"


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


async def resolve_url(settings: Settings) -> str:
    """The configured URL, or the embedded server's (started if need be)."""
    if settings.redis_url:
        return settings.redis_url
    return await anyio.to_thread.run_sync(EmbeddedRedis.for_user().ensure_running)


def make_client(url: str, *, retries: int = 3, single_connection: bool = False) -> Redis:
    """A client whose reads notice a dead peer within seconds, not minutes.

    ``retries=0`` is for the subscriber: its reconnects are ours to handle, because
    each one needs a catch-up from the log.
    """
    backoff = ExponentialWithJitterBackoff(base=0.05, cap=1.0) if retries else NoBackoff()
    # redis-py's own health check would swallow the subscriber's PONGs; the bus pings it.
    tcp: dict[str, Any] = {} if url.startswith("unix://") else {"socket_keepalive": True}
    return Redis.from_url(
        url,
        **tcp,
        socket_connect_timeout=5,
        # redis-py wraps a write in asyncio.wait_for when a socket timeout is set, and
        # that yields to the event loop before the bytes go out; the cursor writer must not.
        socket_timeout=None if single_connection else 10,
        health_check_interval=5 if retries and not single_connection else 0,
        retry=Retry(backoff, retries),
        single_connection_client=single_connection,
    )


async def check_reachable(client: Redis, url: str) -> None:
    try:
        await client.ping()
    except (RedisError, OSError) as e:
        raise RedisUnavailable(
            f"cannot reach Redis at {redact(url)}: {e}. Check that it runs and that the "
            f"URL (--redis / BRIDGE_REDIS_URL) is right"
        ) from e
