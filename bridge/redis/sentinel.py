"""A primary watched by Redis Sentinel: its URL, its clients, and what to say when it fails.

The URL names the sentinels and the primary's service name, in the form other Redis clients
(Celery/kombu, ioredis, go-redis' failover options) have made common; redis-py has no URL form
for Sentinel, so it is parsed here:

    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB][?OPTIONS]
    rediss+sentinel://…   TLS to the sentinels and to the primary

USER and PASSWORD are the primary's (as in a plain redis:// URL); the sentinels' own login, if
they have one (requirepass in sentinel.conf), rides in the query: ``sentinel_username``,
``sentinel_password``. PORT defaults to 26379 (Sentinel's). The TLS files (--tls-ca …) apply
to both, as ``with_tls`` adds them to the query.

Each client is redis-py's ``master_for``: every new connection asks a sentinel where the
primary is, and a connection that hits a demoted primary (READONLY) is dropped by redis-py as a
ConnectionError, so bridge's retries (sends) and reconnects (the receiver: claim, resubscribe,
catch up from the log) carry it over to the new primary, as after any outage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import ConnectionError, RedisError, ResponseError

from bridge.errors import RedisRefused, RedisUnavailable
from bridge.redis.cluster import is_cluster_url
from bridge.redis.sentinel_url import FORM, Target
from bridge.redis.sentinel_url import is_sentinel_url as is_sentinel_url  # (re-exported)
from bridge.redis.sentinel_url import parse as parse
from bridge.redis.subscriber import Backoff, close_quietly, published, subscribe_confirmed
from bridge.settings import redact

log = structlog.get_logger("bridge.sentinel")

SENTINEL_TIMEOUT = 2.0  # a sentinel answers from memory: a slow one is skipped for the next

class FollowingConnection(SentinelManagedConnection):
    """redis-py 8.1 reconnects a broken connection inside ``send_packed_command`` (its
    retries, a single-connection client) by ``connect_check_health``, which skips the
    sentinel lookup of ``SentinelManagedConnection.connect``: such a connection goes back to
    the old primary's address for good (writes to a restarted old primary are lost; once it
    is demoted, every write answers READONLY). Every connect asks the sentinels here."""

    async def connect_check_health(self, check_health: bool = True,
                                   retry_socket_connect: bool = True) -> None:
        if not self.is_connected and self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(check_health, retry_socket_connect)


    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as e:
            # A primary that lost its replicas refuses writes if configured to
            # (min-replicas-to-write): so does a primary being demoted. Like READONLY (which
            # redis-py handles so), drop the connection and ask the sentinels again.
            if not str(e).startswith("NOREPLICAS") or not self.connection_pool.is_master:
                raise
            await self.disconnect()
            raise ConnectionError(f"the primary refuses writes: {e}") from e


class FollowingSSLConnection(FollowingConnection, SSLConnection):
    pass


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool, but a call waits for a free connection rather than failing
    past the pool's size (as bridge's plain pool does); closing it closes its sentinels."""

    async def aclose(self) -> None:
        await super().aclose()
        await self.sentinel_manager.aclose()


def _tls(target: Target) -> dict[str, Any]:
    return {"ssl": True, **target.tls_files} if target.tls else {}


def _sentinel_options(target: Target) -> dict[str, Any]:
    """For the connections to the sentinels: short timeouts, their own login, TLS."""
    return {"socket_connect_timeout": SENTINEL_TIMEOUT, "socket_timeout": SENTINEL_TIMEOUT,
            **target.sentinel_login, **_tls(target)}


def _manager(target: Target) -> Sentinel:
    return Sentinel(list(target.sentinels),  # type: ignore[no-untyped-call, unused-ignore]
                    sentinel_kwargs=_sentinel_options(target))


def make_client(url: str, options: dict[str, Any], *, pool_size: int,
                single_connection: bool) -> Redis:
    """A client of the primary that ``url`` names; ``options`` as for a plain URL's."""
    target = parse(url)
    sentinel = _manager(target)
    primary = dict(options, db=target.db, username=target.username, password=target.password,
                   connection_class=FollowingSSLConnection if target.tls else
                   FollowingConnection, **target.tls_files)
    if single_connection:
        pool = SentinelConnectionPool(  # type: ignore[no-untyped-call, unused-ignore]
            target.service, sentinel, is_master=True, **primary)
        client = Redis(connection_pool=pool, single_connection_client=True)
        client.auto_close_connection_pool = True
        return client
    pool = BlockingSentinelPool(target.service, sentinel, is_master=True,  # type: ignore[no-untyped-call, unused-ignore]
                                max_connections=pool_size, timeout=None, **primary)
    return Redis.from_pool(pool)


SWITCH = "+switch-master"  # what a sentinel publishes once a failover is done


async def follow_failovers(url: str, clients: Sequence[Redis]) -> None:
    """Close every connection of ``clients`` as soon as a sentinel announces a failover.

    Until then connections already open stay on the old primary: a demoted primary is only
    told so (and its clients killed) once a sentinel next looks at it, seconds later, and
    meanwhile its subscribers hear nothing of the new primary's messages. Closed, each
    connection reconnects through the sentinels: the receiver as after any outage (claim
    our name, resubscribe, catch up from the log), the sends by their retries.
    """
    target = parse(url)
    backoff = Backoff(0.5, 5.0)
    while True:
        for host, port in target.sentinels:
            client = Redis(host=host, port=port, **dict(_sentinel_options(target),
                                                         socket_timeout=None))
            pubsub = client.pubsub()
            try:
                await subscribe_confirmed(pubsub, [SWITCH], SENTINEL_TIMEOUT)
                backoff.reset()
                async for message in published(pubsub):
                    name, *_, new_host, new_port = message["data"].decode().split()
                    if name != target.service:
                        continue
                    log.warning("failover", service=name, primary=f"{new_host}:{new_port}",
                                hint="the sentinels moved the primary: reconnecting")
                    for each in clients:
                        await each.connection_pool.disconnect()
            except (RedisError, OSError, TimeoutError, ValueError):
                pass  # that sentinel is down, or said something odd: the next one
            finally:
                await close_quietly(pubsub)
                await client.aclose()
        await backoff.wait()


# ---------------------------------------------------------------- errors and doctor
async def explain(error: BaseException, url: str) -> RedisUnavailable | RedisRefused:
    """The error for a primary that could not be reached through the sentinels: which
    sentinels answered, and whether they know the service."""
    target = parse(url)
    text = str(error)
    where = ", ".join(f"{host}:{port}" for host, port in target.sentinels)
    if any(sign in text for sign in ("AuthenticationError", "invalid username-password",
                                     "NOAUTH", "WRONGPASS")):
        return RedisRefused(
            f"a Sentinel at {where} refused the login ({text[:300]}). Set the sentinels' "
            f"password with ?sentinel_password=… (and ?sentinel_username=…) in --redis / "
            f"BRIDGE_REDIS_URL; the USER:PASSWORD@ part is the primary's")
    if "SSL" in text or "certificate" in text.lower():
        return RedisRefused(
            f"TLS with the sentinels at {where} failed ({text[:300]}); rediss+sentinel:// "
            f"uses TLS to the sentinels and the primary, with --tls-ca / BRIDGE_TLS_CA "
            f"(and --tls-cert, --tls-key); use redis+sentinel:// if they take no TLS")
    watched = await watched_services(target)
    if watched is not None and target.service not in watched:
        return RedisRefused(
            f"the sentinels at {where} watch no primary named {target.service!r} (they "
            f"watch: {', '.join(watched) or 'none'}); fix the name after the hosts in "
            f"--redis / BRIDGE_REDIS_URL ({redact(url).partition('?')[0]})")
    return RedisUnavailable(
        f"cannot reach the primary {target.service!r} through the sentinels at {where}: "
        f"{text[:400] or type(error).__name__}. Check that the sentinels run and agree on "
        f"a primary (redis-cli -p 26379 SENTINEL MASTERS); during a failover this lasts "
        f"seconds")


async def watched_services(target: Target) -> list[str] | None:
    """The service names the first sentinel that answers watches; None if none answers."""
    for host, port in target.sentinels:
        client = Redis(host=host, port=port, **_sentinel_options(target))
        try:
            masters = await client.sentinel_masters()
            return sorted(str(name) for name in masters)
        except (RedisError, OSError):
            continue
        finally:
            await client.aclose()
    return None


async def refuse_a_sentinel(client: Redis, url: str) -> None:
    """A sentinel's address given as a plain URL answers PING, and nothing bridge needs:
    say what to write instead. SELECT is one of bridge's commands (an ACL user may run it)
    and Sentinel does not know it; only then is INFO asked."""
    if is_sentinel_url(url) or is_cluster_url(url) or url.startswith("unix://"):
        return
    db = client.connection_pool.connection_kwargs.get("db") or 0
    try:
        await client.execute_command("SELECT", db)  # type: ignore[no-untyped-call, unused-ignore]
        return
    except ResponseError as e:
        if "unknown command" not in str(e).lower():
            return
    try:
        info = await client.info("server")
        masters = await client.sentinel_masters()
    except (RedisError, OSError):
        return
    if info.get("redis_mode") != "sentinel":
        return
    kwargs = client.connection_pool.connection_kwargs
    address = f"{kwargs.get('host')}:{kwargs.get('port')}"
    names = sorted(str(name) for name in masters) or ["SERVICE"]
    scheme = "rediss+sentinel" if url.startswith("rediss") else "redis+sentinel"
    raise RedisRefused(
        f"{redact(url).partition('?')[0]} is a Redis Sentinel, not a Redis server: bridge "
        f"needs the primary it watches. Use --redis / BRIDGE_REDIS_URL "
        f"{scheme}://{address}/{names[0]} (list every sentinel, comma-separated: "
        f"{FORM}); it watches: {', '.join(names) if masters else 'nothing yet'}")


@dataclass(frozen=True)
class Watched:
    """What `bridge doctor` says about a Sentinel-watched primary."""

    service: str
    primary: str  # host:port, as the sentinels give it
    replicas: int  # replicas the sentinels see up
    sentinels: int  # sentinels that watch it (the one asked and the others it knows)
    sentinels_up: int  # of those listed in the URL, how many answered
    quorum: int


async def describe(url: str) -> Watched:
    """Ask the sentinels about the primary: RedisError if none answers."""
    target = parse(url)
    sentinel = _manager(target)
    try:
        up = 0
        state: dict[str, Any] | None = None
        for client in sentinel.sentinels:
            try:
                masters = await client.sentinel_masters()
            except (RedisError, OSError):
                continue
            up += 1
            state = state or masters.get(target.service)  # type: ignore[union-attr]
        if state is None:
            raise RedisError(f"no sentinel in the URL knows {target.service!r}")
        replicas = await sentinel.discover_replicas(target.service)
        return Watched(service=target.service, primary=f"{state['ip']}:{state['port']}",
                       replicas=len(replicas), sentinels=int(state["num-other-sentinels"]) + 1,
                       sentinels_up=up, quorum=int(state["quorum"]))
    finally:
        await sentinel.aclose()
