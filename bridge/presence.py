"""Presence: claim a name atomically, keep it alive with a TTL heartbeat, leave cleanly."""

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
from bridge.envelope import Event
from bridge.errors import NameTaken
from bridge.functions import Function
from bridge.keys import Keys
from bridge.settings import Settings

MAX_STATUS = 200

log = structlog.get_logger("bridge.presence")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


@dataclass(frozen=True)
class Participant:
    name: str
    role: str
    host: str
    pid: str
    status: str
    delivery: str
    joined_at: int  # ms since epoch, Redis clock
    last_seen: int

    @classmethod
    def from_fields(cls, joined: bytes) -> Participant | None:
        """From one record of the LIST script: the fields in dataclass order, joined by
        0x1f; None for a record that does not split into them (written by hand). A string
        split, no dict per record: at 1,000 agents, parsing was most of list_participants'
        time (docs/benchmarks.md)."""
        fields = joined.decode(errors="replace").split("\x1f")
        if len(fields) != 8:
            return None
        name, role, host, pid, status, delivery, joined_at, last_seen = fields
        return cls(name or "?", role, host, pid, status, delivery,
                   int(joined_at) if joined_at.isdigit() else 0,
                   int(last_seen) if last_seen.isdigit() else 0)


class Presence:
    """One agent's presence record. ``session`` tells our claim apart from another process'."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.room)
        self.session = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.status = ""
        self._claim = Function(redis, "claim")
        self._heartbeat = Function(redis, "heartbeat")
        self._leave = Function(redis, "leave")
        self._set_status = Function(redis, "set_status")
        self._list = Function(redis, "list")
        self._prune = Function(redis, "prune")

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def ttl_ms(self) -> int:
        return int(self.settings.ttl * 1000)

    def _event(self, kind: str, **extra: str) -> str:
        return Event(kind=kind, name=self.name, role=self.settings.role, host=self.host,
                     status=self.status, ts=int(time.time() * 1000), **extra).encode()

    async def claim(self) -> tuple[str, bool]:
        """Claim the name. Returns (cursor, fresh). Raises NameTaken if another session holds it.

        A claim left by a crashed process on this same host (its pid is gone) is taken over at
        once, so a restarted agent need not wait for the TTL. Across hosts and containers a
        pid means nothing, so there the old claim must expire.
        """
        reply = await self._try_claim(stale_session="")
        if int(reply[0]) == 0:
            host, pid, session = (part.decode() for part in reply[1:4])
            if host == self.host and pid.isdigit() and not _process_alive(int(pid)):
                log.info("stale_claim_taken_over", name=self.name, old_pid=pid)
                reply = await self._try_claim(stale_session=session)
        if int(reply[0]) == 0:
            host, pid = (part.decode() for part in reply[1:3])
            raise NameTaken(
                f"the name {self.name!r} is already taken in room {self.settings.room!r} "
                f"by a live agent on host {host} (pid {pid}). Choose another name with "
                f"--name / BRIDGE_NAME, or stop that agent; a crashed agent's claim expires "
                f"after the TTL ({self.settings.ttl:g} s)."
            )
        return reply[1].decode(), bool(int(reply[2]))

    async def _try_claim(self, stale_session: str) -> Any:
        fields: list[Any] = [
            "name", self.name, "role", self.settings.role, "host", self.host,
            "pid", os.getpid(), "session", self.session, "status", self.status,
            "delivery", self.settings.delivery, "version", __version__,
        ]
        return await self._claim(
            keys=[self.keys.agent(self.name), self.keys.agents, self.keys.cursor(self.name),
                  self.keys.log],
            args=[self.session, self.ttl_ms, self.name, int(self.settings.cursor_ttl * 1000),
                  self.keys.events, self._event("joined"), stale_session, *fields],
        )

    async def heartbeat(self) -> bool:
        """Refresh our record, and prune expired peers.

        False means our record is gone or no longer ours: re-claim.
        """
        result = await self._heartbeat(
            keys=[self.keys.agent(self.name), self.keys.agents],
            args=[self.session, self.ttl_ms, self.name],
        )
        await self._prune(keys=[self.keys.agents], args=[self.keys.agent_prefix, self.keys.events])
        return bool(result)

    async def leave(self) -> None:
        await self._leave(
            keys=[self.keys.agent(self.name), self.keys.agents],
            args=[self.session, self.name, self.keys.events, self._event("left", reason="leave")],
        )

    async def set_status(self, status: str) -> None:
        self.status = status[:MAX_STATUS]
        await self._set_status(
            keys=[self.keys.agent(self.name)],
            args=[self.session, self.status, self.keys.events, self._event("status")],
        )

    async def participants(self) -> tuple[int, list[Participant]]:
        """(Redis time in ms, live participants sorted by name); prunes expired ones."""
        now, records = await self._list(
            keys=[self.keys.agents], args=[self.keys.agent_prefix, self.keys.events]
        )
        people = [Participant.from_fields(record) for record in records]
        return int(now), [person for person in people if person is not None]
