"""The operator commands `who`, `history` and `send --as` (`tail` and `doctor` have their own
modules).

Each takes Settings (for --redis / --room), writes its result on stdout and returns an exit
code. Expected failures raise BridgeError, which the CLI prints as one line.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any, TextIO

import anyio
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError
from rich.text import Text

from bridge.errors import BridgeError, SettingsError
from bridge.ops.human import (
    Terminal,
    ago,
    dim,
    envelope_line,
    envelope_record,
    marked,
    notice_line,
    parse_since,
    to_json,
    until_interrupted,
)
from bridge.redis.clients import check_reachable, make_client, resolve_url
from bridge.redis.paging import pages
from bridge.room.envelope import Envelope, Notice, decode_entry
from bridge.room.keys import PREFIX, ROOM_PATTERN, Keys
from bridge.room.presence import Presence
from bridge.room.presence_records import Participant
from bridge.room.signing import Signer, make_signer
from bridge.room.untrusted import clean
from bridge.settings import Settings

MARKERS = {"unsigned": "[unsigned]", "bad_signature": "[forged]", "replay": "[replayed]",
           "duplicate": "[duplicate]"}


@asynccontextmanager
async def redis_client(settings: Settings, **options: Any) -> AsyncIterator[Redis]:
    """A checked client for the configured (or embedded) Redis; closed on exit."""
    url = await resolve_url(settings)
    client = make_client(url, **options)
    try:
        await check_reachable(client, url)
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()


async def redis_now_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


# ------------------------------------------------------------------ who
@dataclass(frozen=True)
class RoomSummary:
    room: str
    agents: int
    messages: int


def _room_of(key: bytes, suffix: str) -> str | None:
    text = key.decode(errors="replace")
    head, tail = f"{PREFIX}:{{", f"}}:{suffix}"
    if not (text.startswith(head) and text.endswith(tail)):
        return None
    room = text[len(head):-len(tail)]
    return room if ROOM_PATTERN.match(room) else None


async def rooms(redis: Redis, url: str | None) -> list[RoomSummary]:
    """Every room on this Redis that has agents or a log, with live agents (expired ones are
    pruned) and the number of messages its log holds."""
    found: set[str] = set()
    for suffix in ("agents", "log"):
        pattern = Keys("*").agents if suffix == "agents" else Keys("*").log
        async for key in redis.scan_iter(match=pattern, count=1000):
            room = _room_of(key, suffix)
            if room:
                found.add(room)
    summaries = []
    for room in sorted(found):
        presence = Presence(redis, Settings(redis_url=url, room=room, name="-"))
        _, people = await presence.participants()
        summaries.append(RoomSummary(room, len(people), int(await redis.xlen(Keys(room).log))))
    return summaries


async def who(settings: Settings, *, as_json: bool, all_rooms: bool,
              out: TextIO = sys.stdout) -> int:
    async with redis_client(settings) as redis:
        if all_rooms:
            try:
                summaries = await rooms(redis, settings.redis_url)
            except NoPermissionError as e:
                raise BridgeError(
                    f"this Redis user may only see its own room ({settings.room!r}): listing "
                    f"every room needs SCAN and other rooms' keys, which a `bridge acl` user "
                    f"may not use ({e}); run `bridge who --room {settings.room}`, or use an "
                    f"admin URL for --all-rooms") from None
            if as_json:
                print(to_json({"rooms": [asdict(s) for s in summaries]}), file=out)
                return 0
            if not summaries:
                raise BridgeError("no rooms on this Redis: no agent has joined one yet")
            Terminal(out).table(["ROOM", "AGENTS", "MESSAGES"],
                                [[s.room, str(s.agents), str(s.messages)] for s in summaries])
            return 0
        presence = Presence(redis, settings)
        # with a room secret, records that fail the check are shown, marked: the operator
        # should see that someone wrote them
        now, people = await presence.participants(unverified=True)
        # by name: the roster comes in the order of its zset's scores, the times the
        # records expire, which every heartbeat changes; two runs a second apart would differ
        people = sorted(people, key=lambda person: person.name)
        if as_json:
            records = [_who_record(p, signed=presence.signer is not None) for p in people]
            print(to_json({"room": settings.room, "now": now, "agents": records}), file=out)
            return 0
        if not people:
            try:
                others = [s for s in await rooms(redis, settings.redis_url) if s.agents]
            except NoPermissionError:  # a `bridge acl` user may not list other rooms (SCAN)
                others = []
            hint = ("; rooms with agents: " + ", ".join(f"{s.room} ({s.agents})" for s in others)
                    + ". Use --room NAME") if others else ""
            raise BridgeError(f"no agents in room {settings.room!r}{hint}")
        # the client last: a narrow terminal cuts it before the status
        Terminal(out).table(["NAME", "ROLE", "HOST", "DELIVERY", "JOINED", "LAST SEEN", "STATUS",
                             "CLIENT"],
                            [_who_row(p, now) for p in people])
    return 0


def _who_row(p: Participant, now: int) -> list[str]:
    # Participant fields are already bounded and cleaned; cleaned again here, where they
    # reach the terminal, so that no later change to reading can let an escape through
    name = f"{MARKERS[p.problem]} {p.name}" if p.problem else p.name
    return [clean(name), clean(p.role), clean(p.host), clean(p.delivery) or "-",
            ago(p.joined_at, now), ago(p.last_seen, now), clean(p.status),
            clean(p.client) or "-"]


def _who_record(p: Participant, *, signed: bool) -> dict[str, Any]:
    record = asdict(p)
    del record["problem"]
    if signed:
        record["verified"] = not p.problem
        if p.problem:
            record["problem"] = p.problem
    return record


# ------------------------------------------------------------------ history
def matches(envelope: Envelope, sender: str | None, recipient: str | None) -> bool:
    """``--from NAME``; ``--to NAME``: what NAME received (direct, multi and broadcast);
    ``--to '*'``: broadcasts only."""
    if sender and envelope.sender != sender:
        return False
    if recipient == "*":
        return envelope.is_broadcast
    return not recipient or envelope.addressed_to(recipient)


async def read_log(redis: Redis, keys: Keys, start: str, *, inclusive: bool = True,
                   sender: str | None = None, recipient: str | None = None,
                   limit: int | None = None) -> list[Envelope]:
    """Entries of the log from ``start`` on that pass the filters, oldest first; with
    ``limit``, the newest ``limit`` of them."""
    low = start if inclusive else f"({start}"
    found: list[Envelope] = []
    if limit is None:
        async for page in pages(redis, keys.log, low):
            found += [e for e in _decode(page) if matches(e, sender, recipient)]
        return found
    if limit > 0:
        async with aclosing(pages(redis, keys.log, low, newest_first=True)) as newest:
            async for page in newest:
                found += [e for e in _decode(page) if matches(e, sender, recipient)]
                if len(found) >= limit:
                    break
    return list(reversed(found[:limit]))


def _decode(page: Any) -> list[Envelope]:
    out = []
    for entry_id, fields in page:
        try:
            out.append(decode_entry(entry_id, fields))
        except ValueError:
            continue  # not a well-formed message (written by hand?): not shown
    return out


async def history(settings: Settings, *, sender: str | None, recipient: str | None,
                  since: str | None, limit: int | None, as_json: bool,
                  out: TextIO = sys.stdout) -> int:
    keys = Keys(settings.room)
    async with redis_client(settings) as redis:
        start, inclusive = "-", True
        if since:
            try:
                start, inclusive = parse_since(since, await redis_now_ms(redis))
            except ValueError as e:
                raise SettingsError(str(e)) from None
        envelopes = await read_log(redis, keys, start, inclusive=inclusive, sender=sender,
                                   recipient=recipient, limit=limit)
    if not envelopes:
        if as_json:
            return 0
        filters = [f"--{flag} {value}" for flag, value in
                   (("from", sender), ("to", recipient), ("since", since)) if value]
        raise BridgeError(f"no messages in the log of room {settings.room!r}"
                          + (" match " + " ".join(filters) if filters else ""))
    terminal = Terminal(out)
    signer = make_signer(settings.secret, settings.room, settings.replay_window)
    for envelope in envelopes:
        terminal.show(checked_entry(envelope, signer, as_json))
    return 0


def checked_entry(envelope: Envelope, signer: Signer | None, as_json: bool) -> Text | str:
    """One history or tail line; with a room secret, what fails the check is marked, not hidden
    (the operator should see that someone wrote to the log), and --json says ``verified``."""
    problem = signer.problem(envelope) if signer else None
    if as_json:
        record = envelope_record(envelope)
        if signer:
            record["verified"] = problem is None
            if problem:
                record["problem"] = problem
        return to_json(record)
    return marked(MARKERS[problem], envelope_line(envelope)) if problem else \
        envelope_line(envelope)


# ------------------------------------------------------------------ send --as
async def send(settings: Settings, to: str, text: str, *, reply_to: str, wait: bool,
               timeout: float | None, as_json: bool, out: TextIO = sys.stdout,
               err: TextIO = sys.stderr) -> int:
    """Join as ``settings.name`` (pull delivery), send, and with ``wait`` print what arrives
    for that name until Ctrl-C or ``timeout``. The name leaves the room on exit."""
    from bridge.room.connection import Room

    settings = replace(settings, delivery="pull", announce=False)
    recipients: str | list[str] = "*" if to.strip() == "*" else \
        [name.strip() for name in to.split(",") if name.strip()]
    terminal, errors = Terminal(out), Terminal(err)
    received = 0

    # an operator's one-off send: the unverified-names warning is for agents' logs
    async with Room.connect(settings, warn_unverified=False) as room:
        result = await room.send(recipients, text, reply_to=reply_to)
        if as_json:
            terminal.raw(to_json({"sent": result.id, "online": result.online,
                                  "offline": result.queued,
                                  "not_queued": sorted([*result.not_held, *result.behind]),
                                  **({"durable": result.durable}
                                     if result.durable is not None else {})}))
        else:
            line = f"sent {result.id} to {', '.join(result.online) or 'nobody online'}"
            if result.queued:
                line += f"; offline, queued until they return: {', '.join(result.queued)}"
            if result.not_held:
                line += (f"; NOT queued for {', '.join(result.not_held)} (away longer than the "
                         f"log holds messages for them)")
            if result.behind:
                line += (f"; NOT queued for {', '.join(sorted(result.behind))} (too far behind: "
                         f"BRIDGE_BACKLOG_MAX)")
            if result.durability():
                line += f". {result.durability()}"
            terminal.raw(line)
        if not wait:
            return 0
        if errors.color:
            errors.line(dim(f"waiting for replies to {settings.name} (Ctrl-C to stop)"))

        async def receive() -> None:
            nonlocal received
            while True:
                for item in await room.next_batch(timeout=None):
                    if isinstance(item, Envelope):
                        terminal.show(to_json(envelope_record(item)) if as_json
                                      else envelope_line(item))
                        room.ack(item)
                        received += 1
                    elif isinstance(item, Notice):
                        errors.line(notice_line(item))
                await room.flush_cursor()

        async def bounded() -> None:
            with anyio.move_on_after(timeout):
                await receive()

        await until_interrupted(bounded)
        with anyio.CancelScope(shield=True):
            await room.flush_cursor()
    if timeout is not None and not received:
        print(f"bridge: no reply to {settings.name} within {timeout:g} s", file=err)
        return 1
    return 0


def read_text(text: str) -> str:
    """TEXT ``-`` reads the message from stdin."""
    return sys.stdin.read() if text == "-" else text


# ------------------------------------------------------------------ doctor
