"""Board events: after every change of the task board or the file claims, the writer publishes
one ``board`` event on the room's events channel, beside joined / left / status. Agents get
it like a presence change (riding along with their next message, costing no turn), `bridge
tail` prints it, and `bridge web` refreshes its board.

The event says who did what in a line (``name`` the actor, ``status`` the rest: "claimed t3:
Write the parser"); the board in Redis stays the truth. Like every event it is not logged, and
it is signed when the room has a secret. Publishing is best effort: the change has been made,
and a lost event only means a reader learns of it at its next look.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge.room.envelope import MAX_STATUS, Event
from bridge.room.keys import Keys
from bridge.room.signing import Signer
from bridge.room.untrusted import bounded

log = structlog.get_logger("bridge.board")

KIND = "board"
SHOWN_TITLE = 80  # a title's characters in an event (the whole line: MAX_STATUS)


@dataclass(frozen=True)
class BoardNews:
    redis: Redis
    keys: Keys
    signer: Signer | None
    publish: str = "PUBLISH"  # SPUBLISH on a cluster (bridge.redis.cluster.publish_command)

    async def tell(self, actor: str, what: str, title: str = "") -> None:
        """Publish "ACTOR WHAT[: TITLE]" as a board event."""
        line = f"{what}: {bounded(title, SHOWN_TITLE)}" if title else what
        event = Event(kind=KIND, name=actor, status=bounded(line, MAX_STATUS),
                      ts=int(time.time() * 1000))
        if self.signer is not None:
            event = self.signer.sign_event(event)
        try:
            await self.redis.execute_command(  # type: ignore[no-untyped-call]
                self.publish, self.keys.events, event.encode())
        except (RedisError, OSError) as e:
            log.warning("board_event_lost", actor=actor, what=what[:80],
                        error=str(e)[:200] or type(e).__name__,
                        hint="the change was made; readers see it at their next look")
