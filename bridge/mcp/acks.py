"""Acknowledged by evidence: the cursor passes a pushed message only once there is evidence
that it reached a model turn, not when it was written to a socket or a queue.

A push path hands each post it wrote to ``Acknowledgements.posted``. With a witness (for the
session inbox, Claude Code's transcript: bridge.transcript), the post waits there until the
witness sees it taken into a model request; then its messages are acknowledged and the cursor
is written. So a client that dies with the post still queued (killed, or ``/exit`` while its
model is busy) leaves the cursor before it, and the next session for this agent gets it
again, once.

What the witness can also show:
- a post never even queued (Claude Code's silent guards: its rate, a repeated body, its full
  queue): after QUEUE_TIMEOUT the messages go back to be posted again;
- a post queued while the session has been idle for IDLE_GRACE: posted again too (what the
  client had queued is not coming);
- nothing at all of any post, ever: the witness does not work here (another Claude Code
  version, transcripts switched off). Then, said once in the log, every post is acknowledged
  once written whole, as a path without evidence does (the channel path: docs/guarantees.md).

Posts awaiting evidence are bounded (MAX_AWAITING): past it the pusher waits, and what
arrives meanwhile waits in the room log, which is the buffer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import structlog
from redis.exceptions import RedisError

from bridge.room.connection import Incoming, Room
from bridge.room.envelope import Envelope
from bridge.transcript import Sighting

log = structlog.get_logger("bridge.acks")

LOOK_EVERY = 0.2  # seconds between looks while a post awaits evidence (lines land in ~0.1 s)
QUEUE_TIMEOUT = 10.0  # a post not even queued by then was dropped (queued in ~0.1 s)
IDLE_GRACE = 30.0  # a post still queued after the session has been idle this long is stuck
MAX_AWAITING = 20  # posts awaiting evidence (Claude Code queues at most 50 for all senders)


class Witness(Protocol):
    """Where a push path finds evidence. ``look`` returns what is new and must not block."""

    def problem(self) -> str | None: ...
    def look(self) -> list[Sighting]: ...
    def status(self) -> tuple[str, float]: ...


@dataclass
class Post:
    text: str
    items: list[Incoming]
    at: float = field(default_factory=time.monotonic)
    queued: bool = False


class Acknowledgements:
    """Posts awaiting evidence, for one push path of one agent."""

    def __init__(self, room: Room, witness: Witness | None, *, path: str,
                 max_awaiting: int = MAX_AWAITING, idle_grace: float | None = IDLE_GRACE,
                 evidence: str = "the session transcript") -> None:
        self.room = room
        self.witness = witness
        self.path = path
        self.max_awaiting = max_awaiting
        self.idle_grace = idle_grace  # None: a post queued in an idle session is left there
        self.evidence = evidence
        self.awaiting: list[Post] = []
        self.witnessed = False  # the witness has shown some post of ours: it works here
        self.again = 0  # posts given back to be posted again
        self._changed = asyncio.Event()
        self._room_for_more = asyncio.Event()
        self._room_for_more.set()
        if witness is None:
            return  # a path with no evidence at all says so itself (bridge.mcp.server)
        if (problem := witness.problem()) is not None:
            self._give_up(problem)
        else:
            log.info("delivery_evidence", path=path, evidence=evidence)

    @property
    def by_evidence(self) -> bool:
        return self.witness is not None

    def _give_up(self, why: str) -> None:
        log.warning("no_delivery_evidence", path=self.path, reason=why,
                    hint="the cursor moves once a post is written whole: a client that dies "
                         "with posts still queued loses them (docs/guarantees.md)")
        self.witness = None

    async def posted(self, text: str, items: Sequence[Incoming], *,
                     queued: bool = False, taken: bool = False) -> None:
        """A post was written whole (``queued``: and the client said it queued it; ``taken``:
        the witness showed it taken already): acknowledge it now (no witness, or taken), or
        once seen taken."""
        if self.witness is None or taken:
            await self._acknowledge(list(items))
            return
        self.awaiting.append(Post(text, list(items), queued=queued))
        if len(self.awaiting) >= self.max_awaiting:
            self._room_for_more.clear()
        self._changed.set()

    async def room_for_more(self) -> None:
        """Wait while ``max_awaiting`` posts await evidence."""
        await self._room_for_more.wait()

    async def _acknowledge(self, items: list[Incoming]) -> None:
        self.room.ack(*items)
        try:
            await self.room.flush_cursor()
        except (RedisError, OSError) as e:  # the background writer tries again
            log.warning("cursor_flush_failed", error=str(e) or type(e).__name__)

    async def watch_forever(self) -> None:
        while True:
            if not self.awaiting or self.witness is None:
                self._changed = asyncio.Event()
                await self._changed.wait()
                continue
            await self._look(self.witness)
            await anyio.sleep(LOOK_EVERY)

    async def _look(self, witness: Witness) -> None:
        for seen in witness.look():
            post = next((p for p in self.awaiting if p.text in seen.content), None)
            if post is None:
                continue
            self.witnessed = True
            if seen.stage == "queued":
                post.queued = True
                continue
            self.awaiting.remove(post)
            messages = [i for i in post.items if isinstance(i, Envelope)]
            log.info("post_taken", path=self.path, messages=len(messages),
                     last=messages[-1].id if messages else "",
                     seconds=round(time.monotonic() - post.at, 2))
            await self._acknowledge(post.items)
        now = time.monotonic()
        status, since = witness.status()
        idle_for = since if status == "idle" else 0.0
        for post in list(self.awaiting):
            waited = now - post.at
            if not post.queued and waited > QUEUE_TIMEOUT:
                if not self.witnessed:
                    self._give_up(f"no post of ours has shown in {self.evidence} "
                                  f"within {QUEUE_TIMEOUT:g} s (another client version, "
                                  "or its session files switched off)")
                    await self._acknowledge([i for p in self.awaiting for i in p.items])
                    self.awaiting.clear()
                    break
                self._post_again(post, "not queued by the client (its rate limit, a "
                                       "repeated body, or its full queue)")
            elif (post.queued and self.idle_grace is not None
                  and idle_for > self.idle_grace and waited > self.idle_grace):
                self._post_again(post, f"queued, but the session has been idle for "
                                       f"{idle_for:.0f} s without taking it")
        if len(self.awaiting) < self.max_awaiting:
            self._room_for_more.set()

    def _post_again(self, post: Post, why: str) -> None:
        self.awaiting.remove(post)
        self.again += 1
        log.warning("post_again", path=self.path, messages=len(post.items), reason=why)
        self.room.give_back(post.items)

    def unacknowledged(self) -> int:
        return sum(len(p.items) for p in self.awaiting)
