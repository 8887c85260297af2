"""Durable sends (BRIDGE_MIN_REPLICAS): a send is said to be sent once that many replicas have it.

Replication is asynchronous: a primary that acknowledges a message and dies before its replica
copied it takes the message with it, and the replica promoted in its place never had it. So
with ``min_replicas`` > 0 the send function is followed, on the same connection, by
``WAIT min_replicas timeout_ms``: Redis answers once that many replicas have acknowledged every
write this connection made (the send's log entry among them), or at the timeout with how many
did. The two go out in one non-transactional pipeline, which redis-py writes on one
connection: the WAIT cannot land on another one (whose writes it would wait for instead).

WAIT is replication only: on Redis >= 7.2, WAITAOF also waits for the replicas' (and the
primary's) fsync of the AOF; this module is where it would go.

In a Redis Cluster the WAIT must reach the connection that ran the sends: a cluster pipeline
writes the commands bound for one node on one connection, but sends a command without keys
to any node, so the WAIT is routed to the node the room's slot lives on (``node``). And a
send redirected elsewhere (MOVED after a failover, ASK while the room's slot moves) would
run on another connection than the WAIT, whose answer would then say nothing about it: so
with a WAIT, redirections are not followed inside the pipeline (``redirect``). The batch
goes again, as after a dropped connection, on the slot map read anew.

A batch of sends shares one WAIT: its answer covers every send of the batch.

Why in bridge.redis, not bridge.room: all it knows is Redis' (WAIT on the connection, or the
cluster node, that ran the writes; redirections that would put them elsewhere); nothing of
what the writes are. The room decides that sends wait (bridge.room.batcher puts the WAIT after
each batch) and what the count means for a send (bridge.room.sending.confirmed reads it back).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio.client import Pipeline
from redis.exceptions import AskError, MovedError, RedisError, TryAgainError

from bridge.settings import Settings

log = structlog.get_logger("bridge.durability")


@dataclass(frozen=True)
class Durability:
    replicas: int
    timeout_ms: int

    @classmethod
    def of(cls, settings: Settings) -> Durability | None:
        """None when sends do not wait (BRIDGE_MIN_REPLICAS=0, the default)."""
        if not settings.min_replicas:
            return None
        return cls(settings.min_replicas, max(1, round(settings.min_replicas_timeout * 1000)))

    def command(self) -> tuple[Any, ...]:
        return ("WAIT", self.replicas, self.timeout_ms)

    def queue(self, pipe: Pipeline, node: Any = None) -> None:
        """Add the WAIT after the send calls already in ``pipe``; on a cluster, for ``node``,
        the primary of the room's slot (where the sends go)."""
        if node is None:
            pipe.execute_command(*self.command())
        else:
            pipe.execute_command(*self.command(), target_nodes=node)

    def attach(self, replies: list[Any]) -> list[Any]:
        """The pipeline's replies without the WAIT's; each send's reply (a list) gets how
        many replicas confirmed it appended (read back by bridge.room.sending.confirmed)."""
        *sends, waited = replies
        if isinstance(waited, Exception):  # e.g. an ACL without WAIT: nothing is confirmed
            log.warning("wait_failed", error=str(waited),
                        hint="sends cannot be confirmed durable; allow WAIT (bridge acl)")
            waited = 0
        return [[*reply, int(waited)] if isinstance(reply, list) else reply
                for reply in sends]


def redirect(replies: list[Any]) -> RedisError | None:
    """A send of a cluster batch sent elsewhere (MOVED, ASK, TRYAGAIN): the batch must go
    again, WAIT included (see the module's docstring)."""
    return next((reply for reply in replies
                 if isinstance(reply, MovedError | AskError | TryAgainError)), None)

