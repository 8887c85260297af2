"""Redis clients: which server (configured or embedded), and how we connect to it."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from bridge.errors import RedisRefused, RedisUnavailable, SettingsError
from bridge.redis import sentinel
from bridge.redis.cluster import is_cluster, is_cluster_url, make_cluster_client, plain_url_hint
from bridge.redis.embedded import EmbeddedRedis
from bridge.redis.quickwrite import use_quick_writes
from bridge.settings import Settings, redact

POOL_SIZE = 32  # connections per client; more calls at once queue for one


async def resolve_url(settings: Settings) -> str:
    """The configured URL, or the embedded server's (started if need be)."""
    if settings.redis_url:
        return with_tls(settings.redis_url, settings)
    return await anyio.to_thread.run_sync(EmbeddedRedis.for_user().ensure_running)


# redis-py hands unknown query arguments of a URL to its connection class, so the TLS files
# ride in the URL and every client built from resolve_url's answer (serve, CLI, doctor) uses
# them. redis-py verifies the server's certificate and host name by default.
_TLS_QUERY = (("tls_ca", "ssl_ca_certs"), ("tls_cert", "ssl_certfile"), ("tls_key", "ssl_keyfile"))


def with_tls(url: str, settings: Settings) -> str:
    pairs = [(arg, getattr(settings, field)) for field, arg in _TLS_QUERY
             if getattr(settings, field)]
    if not pairs:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(pairs, safe="/")


def make_client(url: str, *, retries: int = 3, single_connection: bool = False) -> Redis:
    """A client whose reads notice a dead peer within seconds, not minutes.

    ``retries=0`` is for the subscriber: its reconnects are ours to handle, because
    each one needs a catch-up from the log. A ``redis+cluster://`` URL gets a cluster client
    (bridge.redis.cluster).
    """
    if is_cluster_url(url):
        return make_cluster_client(url, retries=retries,
                                   socket_timeout=None if single_connection else 10)
    backoff = ExponentialWithJitterBackoff(base=0.05, cap=1.0) if retries else NoBackoff()
    # redis-py's own health check would swallow the subscriber's PONGs; the room connection
    # pings it.
    tcp: dict[str, Any] = {} if url.startswith("unix://") else {"socket_keepalive": True}
    options: dict[str, Any] = dict(
        tcp,
        socket_connect_timeout=5,
        # redis-py wraps a write in asyncio.wait_for when a socket timeout is set, and
        # that yields to the event loop before the bytes go out; the cursor writer must not.
        socket_timeout=None if single_connection else 10,
        health_check_interval=5 if retries and not single_connection else 0,
        retry=Retry(backoff, retries),
    )
    if sentinel.is_sentinel_url(url):
        return use_quick_writes(sentinel.make_client(
            url, options, pool_size=POOL_SIZE, single_connection=single_connection))
    if single_connection:
        return use_quick_writes(Redis.from_url(url, single_connection_client=True, **options))
    # redis-py's default pool raises "Too many connections" past its size, which reads as
    # an outage; a blocking pool makes a call wait for a connection instead. No wait limit
    # of its own: each command is bounded by its socket timeouts and retries.
    pool = BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE, timeout=None,
                                           **options)
    return use_quick_writes(Redis.from_pool(pool))


async def check_reachable(client: Redis, url: str) -> None:
    try:
        await client.ping()
        if not is_cluster(client):
            await check_not_a_cluster_node(client, url)
    except (RedisError, OSError) as e:
        if isinstance(e, MasterNotFoundError):  # no sentinel named a primary we could reach
            raise await sentinel.explain(e, url) from e
        if refused(e, url):
            raise RedisRefused(unreachable(e, url)) from e
        raise RedisUnavailable(unreachable(e, url)) from e
    await sentinel.refuse_a_sentinel(client, url)


async def check_not_a_cluster_node(client: Redis, url: str) -> None:
    """A plain URL that names a node of a Redis Cluster: SettingsError saying what to write
    (every room not served by that node would fail with MOVED). CLUSTER INFO, which the
    `bridge acl` rule allows: one Redis answers that it has no cluster support. A user who
    may not run it learns it from the first MOVED instead (bridge.room.connection)."""
    try:
        await client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
    except ResponseError:
        return  # "cluster support disabled": one Redis; or a user who may not ask
    raise SettingsError(plain_url_hint(shown(url)))


def refused(error: BaseException, url: str) -> bool:
    """Whether Redis (or its TLS layer) turned us away, rather than not answering: a wrong
    password, an ACL refusal, a certificate problem. Retrying does not fix those."""
    if isinstance(error, AuthenticationError | ResponseError | ssl.SSLError) or isinstance(
            error.__cause__, ssl.SSLError):
        return True
    if not urlsplit(url).scheme.startswith("rediss"):
        return False  # a bare drop (a container not up yet) is worth waiting for
    reason = tls_failure(error, url)
    return reason is not None and "no answer" not in reason


def unreachable(error: BaseException, url: str) -> str:
    """What went wrong connecting, and what to do; TLS failures get advice of their own."""
    if isinstance(error, AuthenticationError):
        return (f"Redis at {shown(url)} refused the login: {error}. Check the user name and "
                f"password in the URL (--redis / BRIDGE_REDIS_URL)")
    return tls_failure(error, url) or (
        f"cannot reach Redis at {shown(url)}: {error}. Check that it runs and that the "
        f"URL (--redis / BRIDGE_REDIS_URL) is right")


def shown(url: str) -> str:
    """The URL as the user wrote it: redacted, without the TLS files that with_tls added."""
    base, _, query = url.partition("?")
    kept = [(k, v) for k, vs in parse_qs(query).items() for v in vs
            if k not in {arg for _, arg in _TLS_QUERY}]
    return redact(base + ("?" + urlencode(kept, safe="/") if kept else ""))


def tls_failure(error: BaseException, url: str) -> str | None:
    cause = error.__cause__ or error.__context__
    text = f"{error} {cause!r}"
    parts = urlsplit(url)
    # (a sentinel URL lists several hosts, which urlsplit's port cannot parse)
    where = parts.netloc.rpartition("@")[2] if sentinel.is_sentinel_url(url) else \
        f"{parts.hostname}:{parts.port or 6379}"
    given = parse_qs(parts.query)
    dropped = "reset by peer" in text or "closed by server" in text.lower()
    if not parts.scheme.startswith("rediss"):
        if dropped:
            return (f"cannot reach Redis at {shown(url)}: {error}. If that port takes only "
                    f"TLS, use rediss://{where} (and --tls-ca / BRIDGE_TLS_CA)")
        return None
    failed = f"TLS handshake with {where} failed"
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = cause.verify_message or str(cause.reason)
        if "mismatch" in reason:
            fix = ("connect to a host name or address that the server's certificate names "
                   "(its subjectAltName)")
        elif "ssl_ca_certs" in given:
            fix = ("--tls-ca / BRIDGE_TLS_CA is not the CA that signed the server's "
                   "certificate: set it to the one that did")
        else:
            fix = ("set --tls-ca / BRIDGE_TLS_CA to the CA certificate that signed the "
                   "server's certificate")
        return f"{failed}: certificate verify failed: {reason}; {fix}"
    if "CERTIFICATE_REQUIRED" in text or (dropped and "ssl_certfile" not in given):
        return (f"{failed}: the server asks for a client certificate and we sent none; set "
                f"--tls-cert / BRIDGE_TLS_CERT and --tls-key / BRIDGE_TLS_KEY")
    if any(alert in text for alert in ("UNKNOWN_CA", "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN",
                                       "DECRYPT_ERROR")) or dropped:
        return (f"{failed}: the server refused our client certificate ({error}); use one "
                f"signed by a CA that the server trusts (its tls-ca-cert-file)")
    if any(sign in text for sign in ("WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG",
                                     "record layer failure")):
        return (f"{failed}: the server does not speak TLS on that port; use its TLS port "
                f"(redis-server --tls-port), or redis:// if it has no TLS")
    if isinstance(cause, ssl.SSLError):
        return f"{failed}: {cause.reason or cause}; check the certificates and the port"
    if "Timeout connecting" in text:
        return (f"{failed}: no answer to the TLS handshake; if that port does not take TLS, "
                f"use redis://{where}, or the server's --tls-port")
    return None
