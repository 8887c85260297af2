"""`bridge claims`: the room's live file claims for an operator, by agent and path (all of
them, or one agent's with --agent), as a table or JSON.

What a peer wrote (paths, reasons, names) is cleaned before it is printed; with a room secret,
a claim whose signature fails is shown marked, not hidden (and blocks nobody).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any, TextIO

from bridge.ops.commands import MARKERS, redis_client
from bridge.ops.human import Terminal, ago, to_json
from bridge.room.claim_records import FileClaim
from bridge.room.claims import ClaimBook, check_agent
from bridge.room.untrusted import clean
from bridge.settings import Settings


def claim_record(claim: FileClaim, *, signed: bool) -> dict[str, Any]:
    record = asdict(claim)
    del record["problem"]
    if signed:
        record["verified"] = not claim.problem
        if claim.problem:
            record["problem"] = claim.problem
    return record


def in_time(ms: int, now: int) -> str:
    seconds = max(0, (ms - now) // 1000)
    if seconds < 120:
        return f"in {seconds}s"
    if seconds < 7200:
        return f"in {seconds // 60}m"
    return f"in {seconds // 3600}h"


def _row(claim: FileClaim, now: int) -> list[str]:
    agent = f"{MARKERS[claim.problem]} {claim.agent}" if claim.problem else claim.agent
    return [clean(agent), clean(claim.pattern), clean(claim.mode), ago(claim.since, now),
            in_time(claim.expires, now), clean(claim.reason) or "-"]


async def list_claims(settings: Settings, *, agent: str | None, as_json: bool,
                      out: TextIO = sys.stdout) -> int:
    if agent is not None:
        check_agent(agent)
    async with redis_client(settings) as redis:
        book = ClaimBook.of(redis, settings)
        now, live = await book.claims()
        claims = [claim for claim in live if agent is None or claim.agent == agent]
        if as_json:
            print(to_json({"room": settings.room, "now": now, "claims": [
                claim_record(claim, signed=book.signer is not None) for claim in claims]}),
                file=out)
            return 0
        if not claims:
            whose = f" by {agent}" if agent else ""
            print(f"no file claims{whose} in room {settings.room!r}", file=out)
            return 0
        Terminal(out).table(["AGENT", "PATH", "MODE", "SINCE", "EXPIRES", "REASON"],
                            [_row(claim, now) for claim in claims])
    return 0
