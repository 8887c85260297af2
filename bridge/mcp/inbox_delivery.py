"""Pushing into Claude Code's session inbox: few posts, each written whole, nothing dropped.

Claude Code drops an exact repeat of a recent post and rate-limits a burst from one sender,
silently (docs/inbox.md has the measured figures). So what arrives within a short window,
and everything that queued while a post was being written or held back by our own rate,
goes out as one post; every post is unique (it carries the message ids, and a post made
again says so); and the cursor moves only once the session's transcript shows the post taken
into a model request (bridge.mcp.acks), so a Claude Code that dies with posts still queued
loses none of them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import structlog

from bridge.mcp.acks import Acknowledgements, Witness
from bridge.mcp.inbox import InboxPoster
from bridge.mcp.posts import Senders, cut, first_post, noted, post_text, whole_ones
from bridge.redis.subscriber import Backoff
from bridge.room.connection import Incoming, Room
from bridge.room.envelope import Envelope, Event, Notice

log = structlog.get_logger("bridge.inbox")

# Measured (docs/inbox.md, Claude Code 2.1.328 and 2.1.332): one sender process may post a
# burst of 30, then 0.5 per second; a repeat of its previous body within 30 s is dropped; a line
# over 1,048,576 characters is lost with the next one. All silently. Its server can set
# stricter limits per account. So: one post at once, then at most one every 5 s, with all
# that queued meanwhile in it.
COALESCE_SECONDS = 0.5  # what arrives this soon after the first message joins its post
POST_INTERVAL = 5.0
POST_BURST = 1
MAX_POST_CHARS = 64 * 1024  # a post holds messages up to this much text (~16 k tokens)
RETRY_FIRST, RETRY_CAP = 1.0, 30.0
MAX_REMEMBERED = 4096  # message ids remembered as posted (to mark a post made again)


class PostRate:
    """A token bucket of our own, well under Claude Code's silent per-sender limit."""

    def __init__(self, burst: int = POST_BURST, interval: float = POST_INTERVAL) -> None:
        self.burst, self.interval = burst, interval
        self.tokens, self.at = float(burst), time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) / self.interval)
        self.at = now
        if self.tokens < 1:
            await anyio.sleep((1 - self.tokens) * self.interval)
            self.tokens, self.at = 1.0, time.monotonic()
        self.tokens -= 1


class InboxDelivery:
    def __init__(self, room: Room, poster: InboxPoster, *, push_events: bool,
                 ready: Callable[[], Awaitable[None]],
                 screen: Callable[[Room, list[Incoming]], Awaitable[list[Incoming]]],
                 keep: Callable[[Incoming], None], senders: Senders,
                 witness: Witness | None) -> None:
        self.room = room
        self.acks = Acknowledgements(room, witness, path="inbox")
        self._posted_ids: dict[str, int] = {}  # message id -> posts that carried it
        self.screen = screen
        self.keep = keep  # for read_messages: the whole of a message too long to post
        self.poster = poster
        self.push_events = push_events
        self.ready = ready
        self.senders = senders
        self.changes: list[str] = []
        self.posted = 0

    async def run(self) -> None:
        await self.ready()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.acks.watch_forever)
            await self._post_forever()

    async def _post_forever(self) -> None:
        rate = PostRate()
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while True:
            await self.acks.room_for_more()
            batch = await self.room.next_batch()
            await anyio.sleep(COALESCE_SECONDS)  # let a burst gather
            await rate.wait()
            batch += await self.room.next_batch(0)  # and all that queued meanwhile
            items = self._items(await self.screen(self.room, batch))
            if not items:
                continue
            await self.senders.learn(self.room.participants, items)
            if await self._post_all(items):
                backoff.reset()
            else:
                await backoff.wait()

    def _items(self, batch: list[Incoming]) -> list[Envelope | Notice]:
        """The messages and notices to post; events become 'since your last message' lines
        (or posts of their own with push_events)."""
        items: list[Envelope | Notice] = []
        for item in batch:
            if isinstance(item, Event):
                noted(self.changes, item)
            else:
                items.append(item)
        if self.push_events and self.changes and not items:
            items.append(Notice("room changes: " + "; ".join(self.changes), kind="events"))
            self.changes = []
        return items

    async def _post_all(self, items: list[Envelope | Notice]) -> bool:
        """Post the first MAX_POST_CHARS of ``items``; the rest goes back to the inbox, to
        be posted at the next turn of the rate (with whatever arrives meanwhile). On a failed
        write, all of it goes back (for read_messages, or the next attempt) and the cursor
        stays before it; returns False."""
        chunk, rest = first_post(items, MAX_POST_CHARS)
        posted = [cut(item, MAX_POST_CHARS) for item in chunk]
        text = post_text(posted, self.senders.known, self.changes) + self._again(chunk)
        try:
            await self.poster.post(text)
        except (OSError, TimeoutError, anyio.BrokenResourceError,
                anyio.ClosedResourceError) as e:  # (anyio's, for a peer gone mid-write)
            self.room.give_back(items)
            log.warning("inbox_post_failed", error=str(e) or type(e).__name__,
                        waiting=len(items),
                        hint="the messages wait for read_messages or the next attempt; "
                             "the cursor does not move past them")
            return False
        self.room.give_back(rest)
        self.posted += 1
        self.changes = []
        whole = whole_ones(chunk, posted, self.keep)
        await self.acks.posted(text, whole)  # the cursor passes them once the model has them
        return True

    def _again(self, items: list[Envelope | Notice]) -> str:
        """A line for a post that carries a message posted before (its earlier post was not
        taken): it makes the body unlike the earlier one, which Claude Code would drop."""
        again = 0
        for item in items:
            if isinstance(item, Envelope):
                again = max(again, self._posted_ids.get(item.id, 0))
                self._posted_ids[item.id] = self._posted_ids.get(item.id, 0) + 1
        while len(self._posted_ids) > MAX_REMEMBERED:
            del self._posted_ids[next(iter(self._posted_ids))]
        return f"\n(posted again by bridge, attempt {again + 1})" if again else ""
