"""File claims: an agent claims paths or globs of the repository, exclusive or shared, for a
time, and releases them; readers (``bridge claims``, ``bridge guard check``) see the live ones.
The script, the overlap rule and a claim as read are ``bridge.room.claim_records``.

Every change is one call of the CLAIMS function, atomic on the Redis server: of two agents
that claim one path exclusively at once, exactly one wins. With a room secret each claim
carries a signature over its agent, pattern, mode and reason, made here (Redis never sees the
secret). A refusal comes with the conflicting records; if none of them is genuine (written
with redis-cli), the claim is made again with those ignored: a forgery blocks nobody.

While its agent is in the room a claim is renewed with its heartbeat (``renew``), and a clean
leave releases them all (``release_all``); a crashed agent's claims lapse after their TTL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bridge.errors import ClaimConflict, ClaimRefused
from bridge.redis.cluster import publish_command
from bridge.redis.lua import reply_text
from bridge.room.board_news import BoardNews
from bridge.room.claim_records import (
    CLAIMS,
    MAX_PATH,
    MAX_PER_AGENT,
    MAX_PER_ROOM,
    MAX_REASON,
    MAX_TTL,
    MIN_TTL,
    MODES,
    ClaimsCall,
    FileClaim,
    overlaps,
    signed_values,
)
from bridge.room.functions import Function
from bridge.room.keys import NAME_PATTERN, Keys
from bridge.room.signing import Signer, make_signer
from bridge.room.untrusted import clean
from bridge.settings import Settings

ATTEMPTS = 5  # claims again, ignoring the forgeries among the conflicting claims


def check_agent(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ClaimRefused(f"bad agent name {name[:40]!r}: use 1-32 of a-z 0-9 _ . - starting "
                           f"with a letter or digit")
    return name


def normalise(pattern: str) -> str:
    """A path or glob relative to the repository's root, with ``/`` separators: ``./`` and
    a trailing ``/`` dropped; ClaimRefused for what is not one."""
    shown = repr(pattern[:60])
    if not pattern.strip():
        raise ClaimRefused("an empty path: give a path or glob relative to the repository's "
                           "root, e.g. src/api or src/*.py")
    if len(pattern) > MAX_PATH:
        raise ClaimRefused(f"a path of {len(pattern)} characters: at most {MAX_PATH}; claim "
                           f"a directory above it instead")
    if "\\" in pattern:
        raise ClaimRefused(f"{shown} has a backslash: use / between the parts of a path")
    if any(ord(c) < 32 or ord(c) == 127 for c in pattern):
        raise ClaimRefused(f"{shown} has a control character: give a plain path")
    if pattern.startswith("/") or (len(pattern) > 1 and pattern[1] == ":"):
        raise ClaimRefused(f"{shown} is absolute: give it relative to the repository's root "
                           f"(agents on other hosts have the repository elsewhere)")
    parts = [part for part in pattern.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ClaimRefused(f"{shown} has '..': give it relative to the repository's root, "
                           f"without leaving it")
    if not parts:
        raise ClaimRefused(f"{shown} names the repository's root: claim '*' for all of it")
    return "/".join(parts)


def check_reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) > MAX_REASON:
        raise ClaimRefused(f"a reason of {len(reason)} characters: at most {MAX_REASON}; say "
                           f"in a line why")
    return reason


@dataclass
class ClaimBook:
    """One room's file claims on one Redis client."""

    redis: Redis
    keys: Keys
    signer: Signer | None
    publish: str = "PUBLISH"  # of the board events (bridge.room.board_news)

    @classmethod
    def of(cls, redis: Redis, settings: Settings) -> ClaimBook:
        return cls(redis, Keys(settings.room),
                   make_signer(settings.secret, settings.room, settings.replay_window),
                   publish_command(settings.redis_url))

    def __post_init__(self) -> None:
        self._claims = Function(self.redis, CLAIMS)
        self.news = BoardNews(self.redis, self.keys, self.signer, self.publish)
        # agent -> whether it holds claims, as this book last learnt (unknown: not in it)
        self._holds: dict[str, bool] = {}

    def may_hold(self, agent: str) -> bool:
        """Whether ``renew`` is worth a call: the agent held claims when this book last
        learnt, or it has not learnt yet (a claim made meanwhile by another client in its
        name lapses at its own time, unrenewed)."""
        return self._holds.get(agent, True)

    def _call(self, action: str, agent: str, *, mode: str = "", ttl_ms: int = 0,
              reason: str = "", ignore: Iterable[str] = (),
              items: tuple[str, ...] = ()) -> ClaimsCall:
        return ClaimsCall(self.keys.claims, self.keys.claim_records, self.keys.claims_of(agent),
                          self.keys.claims_of_prefix, action, agent, mode, ttl_ms, reason,
                          "\n".join(ignore), items)

    # ------------------------------------------------------------ changes
    async def claim(self, agent: str, patterns: Iterable[str], *, exclusive: bool = True,
                    ttl: float = 3600.0, reason: str = "") -> int:
        """Claim every pattern, or none: ClaimConflict naming who holds an overlapping one,
        since when and why; ClaimRefused for a bad value or a limit. The number claimed."""
        check_agent(agent)
        wanted = list(dict.fromkeys(normalise(pattern) for pattern in patterns))
        if not wanted:
            raise ClaimRefused("nothing to claim: give one or more paths or globs")
        if len(wanted) > MAX_PER_AGENT:
            raise ClaimRefused(f"{len(wanted)} paths at once: an agent holds at most "
                               f"{MAX_PER_AGENT}; claim directories or globs instead")
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise ClaimRefused(f"a claim's time of {ttl:g} s: use {MIN_TTL:g} to {MAX_TTL:g} "
                               f"seconds (it is renewed while you are in the room)")
        reason = check_reason(reason)
        mode = MODES[0] if exclusive else MODES[1]
        items: list[str] = []
        for pattern in wanted:
            sig = (self.signer.sign_record("claim", [agent, pattern, mode, reason])
                   if self.signer else "")
            items += [pattern, sig]
        ignore: list[str] = []
        for _ in range(ATTEMPTS):
            answer = [reply_text(part) for part in await self._claims(self._call(
                "claim", agent, mode=mode, ttl_ms=int(ttl * 1000), reason=reason,
                ignore=ignore, items=tuple(items)))]
            if answer[0] == "ok":
                self._holds[agent] = True
                await self.news.tell(agent, f"claimed {' '.join(wanted)} ({mode})", reason)
                return int(answer[1])
            if answer[0] == "limit":
                raise self._limit(answer, len(wanted))
            if answer[0] != "conflict":
                raise ClaimRefused(f"the claims script answered {answer[:3]!r}: is this "
                                   f"bridge's version the same on every agent?")
            genuine: list[FileClaim] = []
            for claim_id, raw in zip(answer[1::2], answer[2::2], strict=False):
                problem = self._problem(claim_id, raw)
                if problem:
                    ignore.append(claim_id)
                else:
                    genuine.append(FileClaim.read(claim_id, raw, 0))
            if genuine:
                raise await self._conflict(genuine[0], wanted, exclusive)
        raise ClaimRefused("the claims kept conflicting with forged ones: try again")

    def _limit(self, answer: list[str], count: int) -> ClaimRefused:
        if answer[1] == "agent":
            return ClaimRefused(f"you hold {answer[2]} claims and these are {count} more: an "
                                f"agent holds at most {MAX_PER_AGENT}; release some, or claim "
                                f"a directory or glob instead")
        return ClaimRefused(f"the room holds {answer[2]} claims, the most is {MAX_PER_ROOM}: "
                            f"release some (`bridge claims` lists them)")

    async def _conflict(self, holder: FileClaim, wanted: list[str],
                        exclusive: bool) -> ClaimConflict:
        now = await self.now_ms()
        minutes = max(0, (now - holder.since) // 60_000) if holder.since else 0
        since = time.strftime("%H:%M UTC", time.gmtime(holder.since / 1000))
        why = f": {clean(holder.reason)!r}" if holder.reason else " (no reason given)"
        over = next((p for p in wanted if overlaps(p, holder.pattern)), wanted[0])
        theirs = "an exclusive" if holder.exclusive else "a shared"
        return ClaimConflict(
            f"{clean(over)!r} overlaps {theirs} claim of {holder.agent}'s on "
            f"{clean(holder.pattern)!r}, held since {since} ({minutes} min){why}. "
            + ("Claim it shared, or ask " if exclusive and not holder.exclusive else "Ask ")
            + f"{holder.agent} to release it, or wait for it to end", holder.agent)

    async def release(self, agent: str, patterns: Iterable[str]) -> int:
        """Release some of the agent's claims: the number released."""
        check_agent(agent)
        wanted = tuple(dict.fromkeys(normalise(pattern) for pattern in patterns))
        released = int((await self._claims(self._call("release", agent, items=wanted)))[1])
        if released:
            await self.news.tell(agent, f"released {' '.join(wanted)}")
        return released

    async def release_all(self, agent: str) -> int:
        """Release every claim of the agent (its clean leave)."""
        released = int((await self._claims(self._call("release_all", check_agent(agent))))[1])
        self._holds[agent] = False
        if released:
            await self.news.tell(agent, f"released all {released} claims")
        return released

    async def renew(self, agent: str) -> int:
        """Push the agent's claims' expiry to now + each one's TTL (its heartbeat): how many
        it holds."""
        held = int((await self._claims(self._call("renew", check_agent(agent))))[1])
        self._holds[agent] = held > 0
        return held

    # ------------------------------------------------------------ reading
    def _problem(self, claim_id: str, raw: str) -> str:
        if self.signer is None:
            return ""
        values, sig = signed_values(claim_id, raw)
        return self.signer.record_problem("claim", values, sig) or ""

    async def now_ms(self) -> int:
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def claims(self) -> tuple[int, list[FileClaim]]:
        """(Redis time in ms, the live claims by agent and pattern); expired ones are left
        out, and, with a room secret, kept but marked when not genuine (``problem``)."""
        now = await self.now_ms()
        listed: list[Any] = await self.redis.zrangebyscore(
            self.keys.claims, f"({now}", "+inf", start=0, num=MAX_PER_ROOM * 2,
            withscores=True)
        found: list[FileClaim] = []
        for start in range(0, len(listed), 500):
            chunk = [(reply_text(member), int(score))
                     for member, score in listed[start:start + 500]]
            raws = await self.redis.hmget(self.keys.claim_records, [cid for cid, _ in chunk])
            for (claim_id, expires), raw in zip(chunk, raws, strict=True):
                if raw is None:
                    continue
                found.append(FileClaim.read(claim_id, reply_text(raw), expires,
                                            self._problem(claim_id, reply_text(raw))))
        return now, sorted(found, key=lambda claim: (claim.agent, claim.pattern))

    async def blocking(self, paths: Iterable[str], agent: str) -> list[tuple[str, FileClaim]]:
        """(path, claim) for each path covered by another agent's genuine exclusive claim."""
        _, live = await self.claims()
        others = [c for c in live if c.agent != agent and c.exclusive and not c.problem]
        return [(path, claim) for path in paths for claim in others if claim.covers(path)]
