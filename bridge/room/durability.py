"""Durable sends (BRIDGE_MIN_REPLICAS): a send is said to be sent once that many replicas have it.

Replication is asynchronous: a primary that acknowledges a message and dies before its replica
copied it takes the message with it, and the replica promoted in its place never had it. So
with ``min_replicas`` > 0 the send function is followed, on the same connection, by
``WAIT min_replicas timeout_ms``: Redis answers once that many replicas have acknowledged every
write this connection made (the send's log entry among them), or at the timeout with how many
did. The two go out in one non-transactional pipeline, which redis-py writes on one
connection: the WAIT cannot land on another one (whose writes it would wait for instead).

WAIT is replication only: on Redis >= 7.2, WAITAOF also waits for the replicas' (and the
primary's) fsync of the AOF; this module is where it would go. In a Redis Cluster the WAIT
must reach the node that ran the send (the room's slot's primary): a cluster pipeline sends a
command without keys to any node, so it is to be routed there explicitly.

A batch of sends shares one WAIT: its answer covers every send of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio.client import Pipeline

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

    def queue(self, pipe: Pipeline) -> None:
        """Add the WAIT after the send calls already in ``pipe``."""
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)

    def attach(self, replies: list[Any]) -> list[Any]:
        """The pipeline's replies without the WAIT's; each send's reply (a list) gets how
        many replicas confirmed it appended (see ``confirmed``)."""
        *sends, waited = replies
        if isinstance(waited, Exception):  # e.g. an ACL without WAIT: nothing is confirmed
            log.warning("wait_failed", error=str(waited),
                        hint="sends cannot be confirmed durable; allow WAIT (bridge acl)")
            waited = 0
        return [[*reply, int(waited)] if isinstance(reply, list) else reply
                for reply in sends]


CONFIRMED_AT = 4  # where ``attach`` put the count, after the send function's own reply


def confirmed(reply: list[Any]) -> int | None:
    """How many replicas confirmed a send's reply; None when sends do not wait."""
    return int(reply[CONFIRMED_AT]) if len(reply) > CONFIRMED_AT else None
