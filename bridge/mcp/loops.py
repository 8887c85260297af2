"""Reply loops: two agents that answer each other's acknowledgements can burn money for hours.

When this agent and one peer exchange more than ``limit`` messages within ``window`` seconds,
with nobody else involved, the peer's further messages are held: not pushed, but kept for
read_messages (calling it resumes), and nothing is lost (the cursor does not pass them).
Each side's bridge sees the same exchange, so both hold.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from bridge.room.envelope import Envelope


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
