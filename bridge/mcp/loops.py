"""Reply loops: two agents that answer each other's acknowledgements can burn money for hours.

A message a peer sends this agent alone is a *repeat* when it brings fewer than ``NEW_WORDS``
words the peer has not used in its last ``RECENT`` messages within the window (common words
such as "the", "thanks", "welcome" and emoji do not count: "Thanks!", "👍" and "You're
welcome!" bring none, a revised API proposal brings dozens). When this agent and one peer,
with nobody else involved, exchange more than ``limit`` messages within ``window`` seconds
counting only the peer's repeats, at least half of ``limit`` each way, the peer's further
messages are held: not pushed, but kept for read_messages (calling it resumes), and nothing is
lost (the cursor does not pass them). Whatever they say, ``CEILING`` times as many messages
are held too (a runaway guard). Each side's bridge scores the other side's messages, so in
an acknowledgement loop both hold.

Only what the peer wrote is read: what this agent sent is counted, not read (the send tool
tells the guard its recipients only). Per message the cost is at most MAX_WORDS words looked
up in RECENT sets, and memory per peer is bounded (RECENT sets of MAX_WORDS words of MAX_WORD
characters; times up to the ceiling); peers quiet for a window are forgotten.
"""

from __future__ import annotations

import asyncio
import math
import re
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
NEW_WORDS = 3  # a message of the peer's that brings fewer new words than this is a repeat
RECENT = 16  # the peer's last messages (within the window) a new one is compared with
CEILING = 5  # times loop_limit: messages in the pair within the window, whatever they say
MAX_WORDS = 200  # distinct words read of one message (a long one has plenty anyway)
MAX_WORD = 40  # characters kept of a word

_WORD = re.compile(r"[\w-]+")
_NUMBER = re.compile(r"[0-9a-f-]*[0-9][0-9a-f-]*")  # 7+ of these: an id, a hash, a timestamp
# Words that carry no content of their own: function words, and the courtesies of agents
# thanking each other. Emoji and punctuation are not words at all.
_COMMON = """
    about after again all also am an and any anything are as at be been before being both but
    by can could did do does doing done each else even ever every everything for from get
    gets getting got had has have having he her here him his how if in into is it its itself
    just let ll me more most much my no nor not now of off on once one only or other our out
    over own re same she should so some something still such than that the their them then
    there these they this those through to too under until up us ve very was we were what
    when where which while who whom why will with would yet you your yours
    ok okay yes yeah yep sure right alright fine well oh ah
    thanks thank thx ty welcome appreciate appreciated glad happy pleasure great good nice
    awesome perfect cool cheers likewise indeed anytime course problem worries worry help
    helping helped kind lot care take talk soon later bye goodbye day rest know need
    noted acknowledged received understood agreed sounds see hope hear seems really
"""
COMMON = frozenset(_COMMON.split())  # (one-letter words never count)


def words(text: str) -> frozenset[str]:
    """The content words of ``text``: casefolded, common words left out, a number or id of 7
    or more characters as ``#``; at most MAX_WORDS of them."""
    found: set[str] = set()
    for match in _WORD.finditer(text.casefold()):
        word = match.group().strip("-_")
        if len(word) < 2 or word in COMMON:
            continue
        found.add("#" if len(word) >= 7 and _NUMBER.fullmatch(word) else word[:MAX_WORD])
        if len(found) >= MAX_WORDS:
            break
    return frozenset(found)


def new_words(text_words: frozenset[str], recent: list[frozenset[str]]) -> int:
    """How many of ``text_words`` none of the ``recent`` messages used: the message's score.
    Fewer than NEW_WORDS: a repeat (an acknowledgement, a near-copy of an earlier message)."""
    return sum(1 for word in text_words if not any(word in seen for seen in recent))


@dataclass
class _Pair:
    """What the guard keeps of the exchange with one peer, within the window."""
    bound: int
    received: deque[tuple[float, int]] = field(init=False)  # time, new words
    sent: deque[float] = field(init=False)  # times
    recent: deque[tuple[float, frozenset[str]]] = field(
        default_factory=lambda: deque(maxlen=RECENT))  # time, words of the peer's messages

    def __post_init__(self) -> None:
        self.received = deque(maxlen=self.bound)  # only "more than the ceiling" matters
        self.sent = deque(maxlen=self.bound)

    def expire(self, horizon: float) -> None:
        for times in (self.received, self.recent):
            while times and times[0][0] < horizon:
                times.popleft()
        while self.sent and self.sent[0] < horizon:
            self.sent.popleft()


@dataclass
class LoopGuard:
    me: str
    limit: int  # messages in the pair within the window, the peer's repeats only; 0: never
    window: float  # seconds
    _pairs: dict[str, _Pair] = field(default_factory=dict)
    _others: deque[float] = field(default_factory=lambda: deque(maxlen=1))  # the last with
    # anyone else: all the check needs
    held_peers: set[str] = field(default_factory=set)
    _why: dict[str, str] = field(default_factory=dict)  # held peer -> why, for the notice
    _screened: deque[str] = field(default_factory=lambda: deque(maxlen=256))

    @property
    def ceiling(self) -> int:
        return CEILING * self.limit

    def _pair(self, peer: str) -> _Pair:
        pair = self._pairs.get(peer)
        if pair is None:
            pair = self._pairs[peer] = _Pair(self.ceiling + 1)
        return pair

    def _looping(self, peer: str, now: float) -> str | None:
        """Why the exchange with ``peer`` is a loop, or None. A loop: more than ``limit``
        messages within the window counting only the peer's repeats, at least half of
        ``limit`` each way (one side talking at length is no loop); or more than
        ``ceiling`` whatever they say, half of it each way. Either only with nobody else
        involved (another peer, several recipients, everyone)."""
        horizon = now - self.window
        for name, pair in list(self._pairs.items()):
            pair.expire(horizon)
            if name != peer and not pair.received and not pair.sent:
                del self._pairs[name]  # a quiet peer costs nothing
        while self._others and self._others[0] < horizon:
            self._others.popleft()
        if self.limit <= 0 or self._others or len(self._pairs) > 1:
            return None
        pair = self._pairs[peer]
        received, sent = len(pair.received), len(pair.sent)
        repeats = sum(1 for _, new in pair.received if new < NEW_WORDS)
        first = min(pair.received[0][0], pair.sent[0] if pair.sent else math.inf)
        span = f"{now - first:.1f} s" if now - first < 10 else f"{now - first:.0f} s"
        if repeats + sent > self.limit and min(repeats, sent) >= self.limit // 2:
            return (f"in {span}, with nobody else involved, {peer} sent you {received} "
                    f"messages, {repeats} of them adding fewer than {NEW_WORDS} new words "
                    f"each (thanks, acknowledgements, near-repeats), and you sent {sent}: "
                    f"{repeats + sent} counted, more than BRIDGE_LOOP_LIMIT {self.limit} "
                    f"within {self.window:g} s (a reply loop?)")
        if received + sent > self.ceiling and min(received, sent) >= self.ceiling // 2:
            return (f"you and {peer} exchanged {received + sent} messages in {span} with "
                    f"nobody else involved: more than {self.ceiling} ({CEILING} x "
                    f"BRIDGE_LOOP_LIMIT) within {self.window:g} s, whatever they say (a "
                    f"runaway exchange?)")
        return None

    def sent(self, recipients: list[str], now: float | None = None) -> None:
        """We sent a message: to one peer (the pair's count), or to several or everyone (a
        third party is involved)."""
        now = time.monotonic() if now is None else now
        if len(recipients) == 1 and recipients[0] != "*":
            self._pair(recipients[0]).sent.append(now)
        else:
            self._others.append(now)

    def screen(self, envelope: Envelope, now: float | None = None) -> str:
        """'push', 'hold' (the peer is held), or 'start' (this message starts a hold).
        A message screened before (given back after a failed post) is not counted again."""
        peer = envelope.sender
        if peer in self.held_peers:
            return "hold"
        if envelope.id in self._screened:
            return "push"
        self._screened.append(envelope.id)
        now = time.monotonic() if now is None else now
        if envelope.to != (self.me,):
            self._others.append(now)
            return "push"
        pair = self._pair(peer)
        pair.expire(now - self.window)
        text_words = words(envelope.text)
        pair.received.append((now, new_words(text_words, [seen for _, seen in pair.recent])))
        pair.recent.append((now, text_words))
        why = self._looping(peer, now)
        if why is None:
            return "push"
        self.held_peers.add(peer)
        self._why[peer] = why
        return "start"

    def release(self) -> list[str]:
        """The agent read what was held: every hold ends, and the counts start over."""
        released = sorted(self.held_peers)
        for peer in released:
            self._pairs.pop(peer, None)
            self._why.pop(peer, None)
        self.held_peers.clear()
        return released

    def describe(self, peer: str) -> str:
        return self._why.get(peer, f"you and {peer} are in a reply loop")


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
                            window=self.loops.window, reason=why,
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
