"""Presence: claim a name atomically, keep it alive with a TTL heartbeat, leave cleanly.

The records' scripts (claim, heartbeat, leave, status, list, prune), each with its typed call,
are ``bridge.room.presence_records``; this is what one agent does with them.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from redis.asyncio import Redis

from bridge import __version__
from bridge.errors import NameTaken
from bridge.redis.cluster import publish_command
from bridge.room.envelope import MAX_HOST, MAX_STATUS, Event
from bridge.room.functions import Function
from bridge.room.keys import NAME_PATTERN, Keys
from bridge.room.presence_records import (
    CLAIM,
    HEARTBEAT,
    LEAVE,
    LIST,
    PRUNE,
    SET_STATUS,
    ClaimCall,
    HeartbeatCall,
    LeaveCall,
    Participant,
    RosterCall,
    SetStatusCall,
    pid_text,
)
from bridge.room.signing import PRESENCE_FIELDS, make_signer
from bridge.room.untrusted import bounded
from bridge.settings import MAX_TTL, Settings

log = structlog.get_logger("bridge.presence")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks since boot) of a process, from /proc (Linux);
    None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read().decode(errors="replace")
        fields = stat[stat.rindex(")") + 2:].split()  # after "PID (COMM) ": STATE PPID ...
        return int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def sibling(pid: int) -> int:
    """Whether process ``pid`` is another `bridge serve` of our own client: a child of our
    parent (a client that starts its MCP server twice for one agent, as Gemini CLI's ACP
    mode does). 1: a sibling started before us, -1: after us, 0: no sibling (or not
    known: no /proc)."""
    theirs, ours = _stat(pid), _stat(os.getpid())
    if pid == os.getpid() or theirs is None or ours is None or theirs[0] != ours[0] \
            or theirs[0] <= 1:  # (orphans of different clients share init as their parent)
        return 0
    return 1 if (theirs[1], pid) < (ours[1], os.getpid()) else -1


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class Claim:
    """What the claim script answers besides "the name is ours"."""

    cursor: str  # the cursor key as stored (bridge.room.cursor reads it)
    fresh: bool  # a new session: the others were told that we joined
    created: bool  # the cursor key was missing and the script set it to the end of the log
    epoch: str  # the room log's epoch (created if the room had none)
    log_end: str  # "<id> <seq>" of the log's newest entry, "0-0 0" for an empty log


class Presence:
    """One agent's presence record. ``session`` tells our claim apart from another process'."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.room)
        self.session = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.status = ""
        self.publish = publish_command(settings.redis_url)
        # with a room secret, our record and events are signed, and peers' records checked
        self.signer = make_signer(settings.secret, settings.room, settings.replay_window)
        self._claim = Function(redis, CLAIM)
        self._heartbeat = Function(redis, HEARTBEAT)
        self._leave = Function(redis, LEAVE)
        self._set_status = Function(redis, SET_STATUS)
        self._list = Function(redis, LIST)
        self._prune = Function(redis, PRUNE)
        self._roster = RosterCall(agents_key=self.keys.agents, agent_prefix=self.keys.agent_prefix)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def ttl_ms(self) -> int:
        return int(self.settings.ttl * 1000)

    @property
    def cursor_ttl_ms(self) -> int:
        return int(self.settings.cursor_ttl * 1000)

    @property
    def away_ms(self) -> int:
        return int(self.settings.away_hold * 1000)

    def _event(self, kind: str, name: str = "", **extra: str) -> str:
        if name:  # someone else's `left`: we know only the name
            event = Event(kind=kind, name=name, ts=int(time.time() * 1000), **extra)
        else:
            event = Event(kind=kind, name=self.name, role=self.settings.role, host=self.host,
                          status=self.status, ts=int(time.time() * 1000), **extra)
        return (self.signer.sign_event(event) if self.signer else event).encode()

    def _announced(self, kind: str, **extra: str) -> str:
        """Our own joined/left event, or "" for a participant that comes and goes quietly
        (an operator's `send --as`: the room should not churn around each message)."""
        return self._event(kind, **extra) if self.settings.announce else ""

    def _record(self) -> dict[str, str]:
        """The fields of our presence record that we write (the script adds the times)."""
        return {"name": self.name, "role": self.settings.role, "host": self.host,
                "pid": str(os.getpid()), "session": self.session,
                "delivery": self.settings.delivery, "status": self.status,
                "version": __version__, "ttl": str(self.ttl_ms), "client": self.settings.client}

    def _record_sig(self) -> str:
        if self.signer is None:
            return ""
        record = self._record()
        return self.signer.sign_record("presence", [record[name] for name in PRESENCE_FIELDS])

    async def claim(self) -> Claim:
        """Claim the name. Raises NameTaken if another session holds it.

        A claim left by a crashed process on this same host (its pid is gone) is taken over at
        once, so a restarted agent need not wait for the TTL. Across hosts and containers a
        pid means nothing, so there the old claim must lapse: its holder has not refreshed it
        within its TTL (at most MAX_TTL), or it has no expiry at all (written by hand).
        """
        reply = await self._try_claim(stale_session="")
        if int(reply[0]) == 0:
            host, pid, session = (part.decode(errors="replace") for part in reply[1:4])
            if host == self.host and pid_text(pid) != "?" and not _process_alive(int(pid)):
                log.info("stale_claim_taken_over", name=self.name, old_pid=pid_text(pid))
                reply = await self._try_claim(stale_session=session)
            elif (host == self.host and pid_text(pid) != "?" and sibling(int(pid)) == 1
                  and await self._same_client()):
                # the same client started us after it: the newer one serves (the older steps
                # aside, Room._heartbeat_forever), as the client now talks to us
                log.info("sibling_claim_taken_over", name=self.name, old_pid=pid_text(pid),
                         hint="this client started a second bridge serve for the agent: "
                              "this one serves it now, the first steps aside")
                reply = await self._try_claim(stale_session=session)
        if int(reply[0]) == 0:
            host, pid = (part.decode(errors="replace") for part in reply[1:3])
            lapse = int(reply[4]) / 1000 if len(reply) > 4 else self.settings.ttl
            raise NameTaken(
                f"the name {self.name!r} is already taken in room {self.settings.room!r} "
                f"by an agent on host {bounded(host, MAX_HOST)} (pid {pid_text(pid)}) whose claim "
                f"is current. Choose another name with --name / BRIDGE_NAME, or stop that "
                f"agent; if it has crashed, its claim lapses in {lapse:.0f} s unless renewed "
                f"(its TTL, honoured up to {MAX_TTL:g} s), and the name is free again."
            )
        return Claim(cursor=reply[1].decode(), fresh=bool(int(reply[2])),
                     created=bool(int(reply[3])), epoch=reply[4].decode(),
                     log_end=reply[5].decode())

    async def _try_claim(self, stale_session: str) -> Any:
        record: list[str] = []
        for name, value in self._record().items():
            record += [name, value]
        sig = self._record_sig()
        if sig:
            record += ["sig", sig]
        return await self._claim(ClaimCall(
            agent_key=self.keys.agent(self.name), agents_key=self.keys.agents,
            cursor_key=self.keys.cursor(self.name), log_key=self.keys.log,
            epoch_key=self.keys.epoch, readers_key=self.keys.readers, session=self.session,
            ttl_ms=self.ttl_ms, name=self.name, cursor_ttl_ms=self.cursor_ttl_ms,
            away_ms=self.away_ms, events=self.keys.events,
            publish=self.publish, joined_event=self._announced("joined"),
            stale_session=stale_session, new_epoch=uuid.uuid4().hex, record=tuple(record)))

    async def _same_client(self) -> bool:
        """Whether our name's holder was started by an MCP client of our own kind (its
        clientInfo, in its record): with the parent pid, what says "the same client"."""
        if not self.settings.client:  # (`bridge send --as`, a client that names none)
            return False
        theirs = await self.redis.hget(self.keys.agent(self.name), "client")
        return isinstance(theirs, bytes) and theirs.decode(errors="replace") == \
            self.settings.client

    async def held_by_sibling(self) -> bool:
        """Whether our name is held by a newer `bridge serve` of our own client (see
        ``sibling``)."""
        host, pid = await self.redis.hmget(self.keys.agent(self.name), ["host", "pid"])
        host_text = host.decode(errors="replace") if isinstance(host, bytes) else ""
        pid_value = pid_text(pid.decode(errors="replace")) if isinstance(pid, bytes) else "?"
        return (host_text == self.host and pid_value != "?" and sibling(int(pid_value)) == -1
                and await self._same_client())

    async def heartbeat(self) -> bool:
        """Refresh our record, and prune expired peers.

        False means our record is gone or no longer ours: re-claim.
        """
        result = await self._heartbeat(HeartbeatCall(
            agent_key=self.keys.agent(self.name), agents_key=self.keys.agents,
            cursor_key=self.keys.cursor(self.name), readers_key=self.keys.readers,
            session=self.session, ttl_ms=self.ttl_ms, name=self.name,
            cursor_ttl_ms=self.cursor_ttl_ms, away_ms=self.away_ms))
        pruned = await self._prune(self._roster)
        await self._announce_left(pruned)
        return bool(result)

    async def _announce_left(self, pruned: list[bytes]) -> None:
        """Publish `left` (reason timeout) for each name a script pruned: signed here, where
        the secret is, not in the script."""
        for raw in pruned:
            name = raw.decode(errors="replace")
            if NAME_PATTERN.match(name):  # a name bridge cannot have written gets no event
                await self.redis.execute_command(  # type: ignore[no-untyped-call]
                    self.publish, self.keys.events,
                    self._event("left", name=name, reason="timeout"))

    async def leave(self) -> None:
        await self._leave(LeaveCall(
            agent_key=self.keys.agent(self.name), agents_key=self.keys.agents,
            readers_key=self.keys.readers, session=self.session, name=self.name,
            away_ms=self.away_ms, events=self.keys.events, publish=self.publish,
            left_event=self._announced("left", reason="leave")))

    async def set_status(self, status: str) -> None:
        self.status = status[:MAX_STATUS]
        await self._set_status(SetStatusCall(
            agent_key=self.keys.agent(self.name), session=self.session, status=self.status,
            events=self.keys.events, publish=self.publish, status_event=self._event("status"),
            sig=self._record_sig()))

    async def participants(self, *, unverified: bool = False) -> tuple[int, list[Participant]]:
        """(Redis time in ms, live participants sorted by name); prunes expired ones.

        With a room secret, a record whose signature fails is left out, or with
        ``unverified`` kept and marked (its ``problem``), for an operator to see."""
        now, records, pruned = await self._list(self._roster)
        await self._announce_left(pruned)
        people = [Participant.from_fields(record, self.signer) for record in records]
        # by name, as said: the roster's own order is by expiry, which every heartbeat changes
        return int(now), sorted((person for person in people
                                 if person is not None and (unverified or not person.problem)),
                                key=lambda person: person.name)
