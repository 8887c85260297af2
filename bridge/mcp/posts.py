"""What a push says, for the session inbox (one post for many messages) and the channel.

The model sees an inbox post as "Another Claude session sent a message", so the text says
itself that it comes from bridge, from which peer, its message id, and how to answer (with
bridge's send_message, not the built-in SendMessage). It is paid for in tokens on every
message, so it is short. A peer's text is quoted line by line ("> "), so it cannot pass for
bridge's own lines, and every post is unique (message ids), which Claude Code's duplicate
guard needs.
"""

from __future__ import annotations

import functools
import time
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import anyio
from redis.exceptions import RedisError

from bridge.room.envelope import Envelope, Event, Notice

Postable = Envelope | Notice

MAX_LABEL = 64
MAX_BOARD_LINE = 120  # a board event in "since your last message" (a title is in it)
MAX_CHANGES = 20  # room changes remembered for the next push (the newest)
ITEM_OVERHEAD = 200  # characters of bridge's own lines counted per message in a post


@dataclass(frozen=True)
class Peer:
    role: str = ""
    host: str = ""


class Senders:
    """Role and host of the peers who write to us, for what a push says: from their joined
    events, and for one never seen joining, from the room's list (one round trip)."""

    def __init__(self) -> None:
        self.known: dict[str, Peer] = {}

    def saw(self, event: Event) -> None:
        if event.kind == "joined":
            self.known[event.name] = Peer(event.role, event.host)

    async def learn(self, participants: Callable[[], Awaitable[tuple[int, list[Any]]]],
                    items: Sequence[object]) -> None:
        if all(item.sender in self.known for item in items if isinstance(item, Envelope)):
            return
        with anyio.move_on_after(1.0):
            try:
                _, people = await participants()
            except (RedisError, OSError):
                return  # best effort: the push says the name alone
            for person in people:
                self.known[person.name] = Peer(person.role, person.host)
            for item in items:  # not in the room (a quiet `send --as`): asked once, not per
                if isinstance(item, Envelope):  # message; a later joined event fills it in
                    self.known.setdefault(item.sender, Peer())


@functools.lru_cache(maxsize=256)  # every push labels its sender: a few peers, many pushes
def label(text: str) -> str:
    """A peer's role or host on one line: control characters out, bounded."""
    kept = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return " ".join(kept.split())[:MAX_LABEL]


def sender(name: str, peers: Mapping[str, Peer]) -> str:
    peer = peers.get(name)
    if peer is None or not (peer.role or peer.host):
        return name
    details = " @ ".join(part for part in (label(peer.role), label(peer.host)) if part)
    return f"{name} ({details})"


def change(event: Event) -> str:
    """One event as a few words, for 'since your last message: …'."""
    if event.kind == "joined":
        return f"{event.name} joined"
    if event.kind == "left":
        return f"{event.name} left" + (" (timed out)" if event.reason == "timeout" else "")
    if event.kind == "board":
        return f"{event.name} {event.status[:MAX_BOARD_LINE]}"  # cleaned as it arrived
    return f"{event.name} set status: {label(event.status)}"


def noted(changes: list[str], event: Event) -> None:
    """Remember one room change for the next push (the newest MAX_CHANGES)."""
    changes.append(change(event))
    del changes[:-MAX_CHANGES]


def first_post(items: Sequence[Postable],
               limit: int) -> tuple[list[Postable], list[Postable]]:
    """The items of one post of about ``limit`` characters (at least one), and the rest."""
    size, count = 0, 0
    for item in items:
        size += len(item.text) + ITEM_OVERHEAD
        if count and size > limit:
            break
        count += 1
    return list(items[:count]), list(items[count:])


def cut(item: Postable, limit: int) -> Postable:
    """A message too long for a post, cut, with a pointer to the whole."""
    if not isinstance(item, Envelope) or len(item.text) <= limit:
        return item
    rest = len(item.text) - limit
    return replace(item, text=item.text[:limit] + (
        f"\n[cut here by bridge: {rest} more characters. Call read_messages for the "
        f"whole message]"))


def whole_ones(chunk: Sequence[Postable], posted: Sequence[Postable],
               keep: Callable[[Postable], None]) -> list[Postable]:
    """Of a post's items, those posted whole; a cut one goes to ``keep`` (read_messages
    returns it whole, and the cursor stays before it)."""
    whole = []
    for item, sent in zip(chunk, posted, strict=True):
        if sent is item:
            whole.append(item)
        else:
            keep(item)
    return whole


def quoted(text: str) -> str:
    return "\n".join("> " + line for line in text.split("\n"))


def post_text(items: Sequence[Envelope | Notice], peers: Mapping[str, Peer],
              changes: Sequence[str], *, client: str = "claude") -> str:
    """One post for these messages and notices (and the room's changes since the last post):
    into Claude Code's session inbox, or (``client="codex"``) queued into a Codex thread,
    whose model sees it as if its user had typed it, so it says so."""
    messages = [item for item in items if isinstance(item, Envelope)]
    lines: list[str] = []
    if len(messages) == 1 and len(items) == 1:
        m = messages[0]
        reply = f", reply to {m.reply_to}" if m.reply_to else ""
        lines.append(f"[bridge] message from {sender(m.sender, peers)}, id {m.id}{reply}:")
        lines.append(quoted(m.text))
    else:
        count = f"{len(messages)} messages" if messages else "a notice"
        lines.append(f"[bridge] {count} from the room:")
        for item in items:
            if isinstance(item, Envelope):
                reply = f", reply to {item.reply_to}" if item.reply_to else ""
                lines.append(f"from {sender(item.sender, peers)}, id {item.id}{reply}:")
                lines.append(quoted(item.text))
            else:
                lines.append(f"bridge notice: {item.text}")
    if changes:
        lines.append("(since your last message: " + "; ".join(changes) + ")")
    instead = "not with SendMessage" if client == "claude" else "not in your reply to the user"
    if client == "codex":  # no wrapper of Codex's own says where this came from
        lines.insert(0, "(Sent to you through bridge by a peer agent, not by your user.)")
    if len(messages) == 1:
        m = messages[0]
        lines.append(f'Answer with the bridge tool send_message(to="{m.sender}", '
                     f'reply_to="{m.id}"), {instead}.')
    elif messages:
        lines.append(f'Answer with the bridge tool send_message(to=NAME, reply_to=ID), '
                     f'{instead}.')
    else:  # a notice alone has no id to make it unique (Claude Code drops a repeat)
        now = time.time()
        lines.append(f"({time.strftime('%H:%M:%S', time.localtime(now))}."
                     f"{int(now * 1000) % 1000:03d})")
    return "\n".join(lines)
