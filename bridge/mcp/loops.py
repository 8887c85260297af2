"""Reply loops: two agents that answer each other's acknowledgements can burn money for hours.

When this agent and one peer exchange more than ``limit`` messages within ``window`` seconds,
with nobody else involved, the peer's further messages are held: not pushed, but kept for
read_messages (calling it resumes), and nothing is lost (the cursor does not pass them).
Each side's bridge sees the same exchange, so both hold.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import structlog
from redis.exceptions import RedisError

from bridge.mcp.posts import Senders
from bridge.room.connection import Incoming, Room
from bridge.room.envelope import Envelope, Event, Notice
from bridge.settings import Settings

log = structlog.get_logger("bridge.server")  # the name logs have always carried


MAX_HELD = 200  # messages held from reply loops before the hold gives way (memory bound)


@dataclass
class LoopGuard:
    me: str
    limit: int  # messages in the pair within the window; 0: never hold
    window: float  # seconds
    # peer -> times of the messages we received from it, and of those we sent it
    _pairs: dict[str, tuple[deque[float], deque[float]]] = field(default_factory=dict)
    _others: deque[float] = field(default_factory=lambda: deque(maxlen=1))  # the last with
    # anyone else: all the check needs
    held_peers: set[str] = field(default_factory=set)
    _screened: deque[str] = field(default_factory=lambda: deque(maxlen=256))

    def _note(self, peer: str | None, now: float, *, received: bool) -> None:
        if peer is None:
            self._others.append(now)
        else:  # only "more than limit" matters: no pair keeps more than that
            bound = self.limit + 1
            pair = self._pairs.setdefault(peer, (deque(maxlen=bound), deque(maxlen=bound)))
            pair[0 if received else 1].append(now)

    def _looping(self, peer: str, now: float) -> bool:
        """More than ``limit`` messages with ``peer`` in the window, at least half of
        ``limit`` each way (one side talking at length is no loop), and none with anyone
        else (another peer, several recipients, everyone)."""
        horizon = now - self.window
        for times in (*(d for pair in self._pairs.values() for d in pair), self._others):
            while times and times[0] < horizon:
                times.popleft()
        others = any(any(pair) for name, pair in self._pairs.items() if name != peer)
        received, sent = self._pairs.get(peer, ((), ()))
        return (self.limit > 0 and len(received) + len(sent) > self.limit
                and min(len(received), len(sent)) >= self.limit // 2
                and not others and not self._others)

    def sent(self, recipients: list[str]) -> None:
        """We sent a message: to one peer (the pair's count), or to several or everyone (a
        third party is involved)."""
        peer = recipients[0] if len(recipients) == 1 and recipients[0] != "*" else None
        self._note(peer, time.monotonic(), received=False)

    def screen(self, envelope: Envelope) -> str:
        """'push', 'hold' (the peer is held), or 'start' (this message starts a hold).
        A message screened before (given back after a failed post) is not counted again."""
        peer = envelope.sender
        if peer in self.held_peers:
            return "hold"
        if envelope.id in self._screened:
            return "push"
        self._screened.append(envelope.id)
        direct = envelope.to == (self.me,)
        now = time.monotonic()
        self._note(peer if direct else None, now, received=True)
        if direct and self._looping(peer, now):
            self.held_peers.add(peer)
            return "start"
        return "push"

    def release(self) -> list[str]:
        """The agent read what was held: every hold ends, and the counts start over."""
        released = sorted(self.held_peers)
        for peer in released:
            self._pairs.pop(peer, None)
        self.held_peers.clear()
        return released

    def describe(self, peer: str) -> str:
        return (f"you and {peer} exchanged more than {self.limit} messages within "
                f"{self.window:g} s with nobody else involved (a reply loop?)")


class Holds:
    """What is kept from the conversation for read_messages: a held peer's messages (reply
    loops), or one too long for an inbox post; and the status line that says a peer is held.
    ``senders`` learns the role and host of who writes to us from the events that pass."""

    def __init__(self, settings: Settings, senders: Senders) -> None:
        self.loops = LoopGuard(settings.name, settings.loop_limit, settings.loop_window)
        self.held: list[Incoming] = []
        self.senders = senders
        self._status_before_hold: str | None = None
        self._hold_status = ""  # the status line a hold set, to restore only that one
        self._background: set[asyncio.Task[None]] = set()

    def take(self) -> list[Incoming]:
        """What is held, for read_messages: every hold ends, and the status a hold set is
        restored in the background (the answer must not wait for Redis)."""
        items = self.held[:]
        self.held.clear()  # (the same list: the inbox delivery appends to it)
        return items

    def release(self, room: Room) -> None:
        if self.loops.release():
            task = asyncio.get_running_loop().create_task(self.restore_status(room))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def screened(self, room: Room, batch: list[Incoming]) -> list[Incoming]:
        """What of ``batch`` to push: a peer caught in a reply loop with us is held (its
        messages wait for read_messages, unacknowledged), with one notice to the agent and
        a status line that the others and the operator's `tail` see."""
        pushed: list[Incoming] = []
        for item in batch:
            if isinstance(item, Event):
                self.senders.saw(item)
            verdict = self.loops.screen(item) if isinstance(item, Envelope) else "push"
            if verdict == "hold" and len(self.held) >= MAX_HELD:
                assert isinstance(item, Envelope)
                self.loops.held_peers.discard(item.sender)  # memory is bounded: push again
                log.warning("reply_loop_hold_ended", peer=item.sender, held=len(self.held),
                            hint=f"over {MAX_HELD} messages held and no read_messages: "
                                 f"pushing again; the held ones wait for read_messages")
                verdict = "push"
            if verdict == "push":
                pushed.append(item)
                continue
            self.held.append(item)
            if verdict == "start":
                assert isinstance(item, Envelope)
                why = self.loops.describe(item.sender)
                log.warning("reply_loop_held", peer=item.sender, limit=self.loops.limit,
                            window=self.loops.window,
                            hint="its messages wait for read_messages, which resumes them")
                pushed.append(Notice(
                    f"bridge is holding {item.sender}'s messages: {why}. They are not lost: "
                    f"call read_messages to read them, which also resumes pushing. If you "
                    f"were only acknowledging each other, stop replying."))
                await self._set_hold_status(room, item.sender)
        return pushed

    async def _set_hold_status(self, room: Room, peer: str) -> None:
        if self._status_before_hold is None:
            self._status_before_hold = room.presence.status
        self._hold_status = f"holding {peer}'s messages (reply loop?); read_messages resumes"
        try:
            await room.set_status(self._hold_status)
        except (RedisError, OSError) as e:
            log.warning("status_failed", error=str(e) or type(e).__name__)

    async def restore_status(self, room: Room) -> None:
        before, self._status_before_hold = self._status_before_hold, None
        if before is None or room.presence.status != self._hold_status:
            return  # the agent set a status of its own meanwhile: that one stays
        try:
            await room.set_status(before)
        except (RedisError, OSError) as e:
            log.warning("status_failed", error=str(e) or type(e).__name__)
