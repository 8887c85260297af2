"""What the page shows of a room's log, as JSON records: pages of history (filtered by agent,
searched), one thread, and who talked to whom in the last hour.

Everything here only reads the log (XRANGE, XREVRANGE), in pages (bridge.redis.paging), so it
works under a read-only Redis user. Text an agent wrote goes out as JSON strings; the page
puts them into the DOM as text, never as HTML.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bridge.ops.commands import MARKERS
from bridge.ops.human import envelope_record
from bridge.redis.paging import Entry, pages
from bridge.room.envelope import Envelope, decode_entry
from bridge.room.keys import Keys
from bridge.room.signing import Signer
from bridge.room.untrusted import clean

MAX_SHOWN = 65536  # characters of one text sent to the page; the rest is cut
SCAN_CAP = 20_000  # log entries one history or thread request reads at most
THREAD_HOPS = 100  # reply_to links followed up to a thread's first message
HOUR_MS = 3600 * 1000


def shown_text(text: str) -> str:
    """The text as the page shows it: its lines kept, each cleaned of control and format
    characters (a bidi override could make a line read as something else), bounded."""
    if len(text) > MAX_SHOWN:
        text = text[:MAX_SHOWN] + "… (cut)"
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(clean(line) for line in lines)


def message_record(envelope: Envelope, signer: Signer | None) -> dict[str, Any]:
    """A log entry for the page; with a room secret, marked as `bridge history` marks it."""
    record = envelope_record(envelope)
    record["text"] = shown_text(envelope.text)
    problem = signer.problem(envelope) if signer else None
    record["problem"] = problem or ""
    record["marker"] = MARKERS.get(problem or "", "")
    return record


def decoded(page: list[Entry]) -> list[Envelope]:
    out = []
    for entry_id, fields in page:
        try:
            out.append(decode_entry(entry_id, fields))
        except ValueError:
            continue  # not a well-formed message: `bridge history` does not show it either
    return out


@dataclass(frozen=True)
class Filter:
    agent: str = ""  # messages from this agent or naming it as a recipient
    text: str = ""  # a case-insensitive piece of the text

    def __call__(self, envelope: Envelope) -> bool:
        if self.agent and self.agent != envelope.sender and self.agent not in envelope.to:
            return False
        return not self.text or self.text.casefold() in envelope.text.casefold()


async def history(redis: Redis, room: str, signer: Signer | None, *, before: str,
                  limit: int, match: Filter, upto: str = "+") -> dict[str, Any]:
    """Up to ``limit`` messages that match, the newest before ``before`` (a log id; "": up to
    ``upto``, inclusive), oldest first. ``older`` is where the next page starts ("" at the
    log's start): a search stops after SCAN_CAP entries, and says where it got to."""
    high = f"({before}" if before else upto
    found: list[Envelope] = []
    scanned, older, more = 0, "", False
    async with aclosing(pages(redis, Keys(room).log, "-", high, newest_first=True)) as newest:
        async for page in newest:
            for entry_id, fields in page:
                scanned += 1
                older = entry_id.decode()
                messages = decoded([(entry_id, fields)])
                if messages and match(messages[0]):
                    found.append(messages[0])
                if len(found) >= limit or scanned >= SCAN_CAP:
                    more = True
                    break
            if more:
                break
    found.reverse()  # checked oldest first, as `history` does, so a later copy is the duplicate
    return {"messages": [message_record(e, signer) for e in found],
            "older": older if more else "", "scanned": scanned}


async def entry(redis: Redis, log_key: str, entry_id: str) -> Envelope | None:
    found: Any = await redis.xrange(log_key, entry_id, entry_id, count=1)
    messages = decoded(found)
    return messages[0] if messages else None


async def thread(redis: Redis, room: str, signer: Signer | None,
                 entry_id: str) -> dict[str, Any]:
    """The conversation ``entry_id`` is part of: up its reply_to links to the first message
    still in the log, then every later message that answers one of the thread's."""
    log_key = Keys(room).log
    root = await entry(redis, log_key, entry_id)
    if root is None:
        return {"messages": [], "root": ""}
    for _ in range(THREAD_HOPS):
        if not root.reply_to:
            break
        parent = await entry(redis, log_key, root.reply_to)
        if parent is None:
            break
        root = parent
    members, found, scanned = {root.id}, [root], 0
    async with aclosing(pages(redis, log_key, f"({root.id}")) as later:
        async for page in later:
            for envelope in decoded(page):
                if envelope.reply_to in members:
                    members.add(envelope.id)
                    found.append(envelope)
            scanned += len(page)
            if scanned >= SCAN_CAP:
                break
    return {"messages": [message_record(e, signer) for e in found], "root": root.id}


async def team(redis: Redis, room: str, now_ms: int) -> dict[str, Any]:
    """Who sent how many messages to whom over the last hour (a broadcast counts once, to
    "*"), and when each sender last wrote."""
    counts: Counter[tuple[str, str]] = Counter()
    last: dict[str, int] = {}
    scanned = 0
    async for page in pages(redis, Keys(room).log, f"{max(0, now_ms - HOUR_MS)}-0"):
        for envelope in decoded(page):
            for recipient in envelope.to:
                counts[(envelope.sender, recipient)] += 1
            last[envelope.sender] = envelope.order[0]
        scanned += len(page)
        if scanned >= SCAN_CAP * 5:
            break
    return {"since": now_ms - HOUR_MS, "now": now_ms,
            "pairs": [[sender, to, n] for (sender, to), n in sorted(counts.items())],
            "last": last}


def valid_text(text: str) -> bool:
    """Whether an operator's text is worth sending: not empty, not only format characters."""
    return any(unicodedata.category(char)[0] not in "CZ" for char in text)
