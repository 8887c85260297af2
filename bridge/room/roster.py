"""Who is in a room, read without writing: for a watcher under a read-only Redis user.

The LIST function (``bridge.room.presence_records``) prunes expired agents as it lists them,
so it writes, and a user that may only read cannot call it. This reads the same records with
plain reads (TIME, ZRANGE, HMGET, PTTL) and leaves a stale one out instead of pruning it; the
agents' own heartbeats prune it. Each record is bounded and checked exactly as LIST's are.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from bridge.room.keys import Keys
from bridge.room.presence_records import FREE_TEXT, LIST_FIELDS, LIST_LIMITS, Participant
from bridge.room.signing import Signer
from bridge.settings import MAX_TTL

MAX_AGENTS = 5000  # a watcher shows at most this many


def _ms(value: bytes | None) -> int | None:
    text = (value or b"").decode(errors="replace")
    return int(text) if 0 < len(text) <= 20 and text.isascii() and text.isdigit() else None


def lapsed(now: int, last_seen: bytes | None, ttl: bytes | None, pttl: int) -> bool:
    """As the scripts' ``lapses_in(...) == 0``: not refreshed within its TTL (up to MAX_TTL),
    or a key that would never expire by itself."""
    seen, max_ms = _ms(last_seen), int(MAX_TTL * 1000)
    limit = min(_ms(ttl) or max_ms, max_ms)
    return seen is None or now - seen > limit or pttl == -1 or pttl > max_ms


async def read_roster(redis: Redis, room: str,
                      signer: Signer | None) -> tuple[int, list[Participant]]:
    """(Redis time in ms, the live participants sorted by name). With a room secret each
    one's ``problem`` says why its signature fails ("" when good)."""
    keys = Keys(room)
    raw_names: Any = await redis.zrange(keys.agents, 0, MAX_AGENTS - 1)
    names = [raw.decode(errors="replace") for raw in raw_names]
    async with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        for name in names:
            pipe.hmget(keys.agent(name), list(LIST_FIELDS))
            pipe.pttl(keys.agent(name))
        replies: list[Any] = await pipe.execute()
    seconds, micros = replies[0]
    now = int(seconds) * 1000 + int(micros) // 1000
    people = []
    for index, name in enumerate(names):
        record, pttl = replies[1 + 2 * index], int(replies[2 + 2 * index])
        if record[0] is None or lapsed(now, record[7], record[10], pttl):
            continue
        fields = [name.encode(), *(value or b"" for value in record[1:])]
        fields = [value[:limit] for value, limit in zip(fields, LIST_LIMITS, strict=True)]
        for free in FREE_TEXT:  # the LIST script's cut, exactly (a record written by hand)
            at = LIST_FIELDS.index(free)
            fields[at] = fields[at].replace(b"\x1f", b" ")
        person = Participant.from_fields(b"\x1f".join(fields), signer)
        if person is not None:
            people.append(person)
    return now, sorted(people, key=lambda person: person.name)
