"""`bridge tail`: the room's live traffic, for a person watching (or a pipe).

Messages come from the room log with XREAD BLOCK after the last id printed, so a dropped
connection or a Redis restart neither loses nor repeats a line: the reader just continues
from that id once Redis answers again. Joined / left / status events come from the events
channel (pub/sub); those published while the connection is down are not seen, which is said
on stderr. A lasting refusal (a command the Redis user may not run) ends tail with one line
instead: retrying cannot fix it.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO
from urllib.parse import urlsplit

import anyio
import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import (
    ClusterDownError,
    NoPermissionError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from rich.text import Text

from bridge.errors import BridgeError, SettingsError
from bridge.ops.commands import MARKERS, checked_entry, redis_now_ms
from bridge.ops.human import (
    Terminal,
    dim,
    event_line,
    event_record,
    marked,
    parse_since,
    to_json,
    until_interrupted,
)
from bridge.redis.clients import check_reachable, make_client, resolve_url
from bridge.redis.paging import PAGE
from bridge.redis.subscriber import Backoff, close_quietly, open_subscription, published
from bridge.room.envelope import Event, decode_entry, decode_event, parse_id
from bridge.room.keys import PREFIX, Keys
from bridge.room.signing import make_signer
from bridge.settings import Settings, redact

log = structlog.get_logger("bridge.tail")

BLOCK_MS = 2000
BACKOFF_FIRST, BACKOFF_CAP = 0.1, 2.0
SUBSCRIBE_TIMEOUT = 5.0
MAX_SEQ = 2**64 - 1


class OutputClosed(Exception):
    """stdout went away (`bridge tail | head`)."""


# error replies that pass by themselves: a failover under way, a script still running
TRANSIENT = (ReadOnlyError, TryAgainError, ClusterDownError)


def refusal(error: BaseException, command: str, room: str, url: str) -> BridgeError | None:
    """A lasting refusal from Redis as one actionable error, or None for what retrying can
    fix (connection errors, a failover, a busy script)."""
    if (not isinstance(error, ResponseError) or isinstance(error, TRANSIENT)
            or str(error).startswith("BUSY")):
        return None
    what = f"Redis refused {command}: {str(error) or type(error).__name__}"
    if isinstance(error, NoPermissionError):
        user = urlsplit(url).username or ""
        own = f"{PREFIX}-{room}-"
        agent = user[len(own):] if user.startswith(own) and len(user) > len(own) else "NAME"
        return BridgeError(f"{what}; this Redis user lacks a right bridge needs: run `bridge acl "
                           f"--room {room} --agent {agent}` to get a rule with every command "
                           f"bridge needs, and load it as a Redis admin")
    return BridgeError(f"{what}; retrying cannot fix this, so tail stops (`bridge doctor "
                       f"--room {room}` checks this Redis)")


class Follower:
    def __init__(self, settings: Settings, redis: Redis, subscriber: Redis, *,
                 as_json: bool, out: TextIO, url: str = "") -> None:
        self.keys = Keys(settings.room)
        self.room = settings.room
        self.url = url
        # with a room secret, entries that fail the check are marked, as `bridge history` does
        self.signer = make_signer(settings.secret, settings.room, settings.replay_window)
        self.redis = redis
        self.subscriber = subscriber
        self.as_json = as_json
        self.out = out
        self.terminal = Terminal(out)
        self.last = "0-0"  # the last log id read; XREAD continues after it
        self.lines = 0

    # -------------------------------------------------------------- start
    async def position(self, since: str | None) -> None:
        """Where to start: after the log's current last entry, or at ``--since``."""
        if since is None:
            last: Any = await self.redis.xrevrange(self.keys.log, "+", "-", count=1)
            self.last = last[0][0].decode() if last else "0-0"
            return
        try:
            start, inclusive = parse_since(since, await redis_now_ms(self.redis))
        except ValueError as e:
            raise SettingsError(str(e)) from None
        ms, seq = parse_id(start)
        if not inclusive:
            self.last = start
        elif seq > 0:
            self.last = f"{ms}-{seq - 1}"
        else:
            self.last = f"{ms - 1}-{MAX_SEQ}" if ms > 0 else "0-0"

    async def subscribe(self) -> PubSub:
        # by name: on a cluster the events channel is a shard channel, which PSUBSCRIBE
        # does not reach
        pubsub, _ = await open_subscription(self.subscriber, [self.keys.events],
                                            SUBSCRIBE_TIMEOUT)
        return pubsub

    def stop_if_refused(self, error: BaseException, command: str) -> None:
        stop = refusal(error, command, self.room, self.url)
        if stop is not None:
            raise stop from error

    # -------------------------------------------------------------- output
    def emit(self, line: Text | str) -> None:
        try:
            self.terminal.show(line)
        except BrokenPipeError:
            raise OutputClosed from None
        self.lines += 1

    # -------------------------------------------------------------- messages
    async def follow_log(self) -> None:
        backoff, lost_at = Backoff(BACKOFF_FIRST, BACKOFF_CAP), 0.0
        while True:
            try:
                reply: Any = await self.redis.xread({self.keys.log: self.last}, count=PAGE,
                                                    block=BLOCK_MS)
            except (RedisError, OSError) as e:
                self.stop_if_refused(e, f"XREAD on room {self.room}'s log")
                if not lost_at:
                    lost_at = time.monotonic()
                    log.warning("tail_connection_lost", room=self.room,
                                error=str(e) or type(e).__name__,
                                hint="retrying; no message will be missed or repeated")
                else:
                    log.debug("tail_retry", error=str(e) or type(e).__name__)
                await backoff.wait()
                continue
            if lost_at:
                log.warning("tail_reconnected", room=self.room,
                            after=f"{time.monotonic() - lost_at:.1f}s",
                            hint="joined/left/status events during the outage were not seen")
                backoff.reset()
                lost_at = 0.0
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    self.last = entry_id.decode()
                    try:
                        envelope = decode_entry(entry_id, fields)
                    except ValueError as e:
                        log.debug("log_entry_skipped", id=self.last, reason=str(e))
                        continue
                    self.emit(checked_entry(envelope, self.signer, self.as_json))

    # -------------------------------------------------------------- events
    async def follow_events(self, pubsub: PubSub | None) -> None:
        backoff = Backoff(BACKOFF_FIRST, BACKOFF_CAP)
        while True:
            try:
                if pubsub is None:
                    pubsub = await self.subscribe()
                    log.debug("tail_events_resubscribed", room=self.room)
                backoff.reset()
                await self._listen(pubsub)
            except (RedisError, OSError, TimeoutError) as e:
                self.stop_if_refused(e, f"SUBSCRIBE to room {self.room}'s events")
                log.debug("tail_events_lost", error=str(e) or type(e).__name__)
            finally:
                if pubsub is not None:
                    await close_quietly(pubsub)
                    pubsub = None
            await backoff.wait()

    async def _listen(self, pubsub: PubSub) -> None:
        async for message in published(pubsub):
            try:
                event = decode_event(message["data"])
            except ValueError as e:  # anyone may PUBLISH here: skip what is not an event
                log.debug("event_skipped", reason=str(e)[:200])
                continue
            self.emit(self.checked_event(event))

    def checked_event(self, event: Event) -> Text | str:
        """One event line; with a room secret, an event that fails the check is marked (as
        messages are), and --json says ``verified``."""
        problem = self.signer.event_problem(event, int(time.time() * 1000)) \
            if self.signer else None
        if self.as_json:
            record = event_record(event)
            if self.signer:
                record["verified"] = problem is None
                if problem:
                    record["problem"] = problem
            return to_json(record)
        line = event_line(event.cleaned())
        return marked(MARKERS[problem], line) if problem else line


async def tail(settings: Settings, *, since: str | None, as_json: bool,
               out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    clients: list[Redis] = []

    async def start_and_follow() -> None:
        url = await resolve_url(settings)
        # no retries inside the client: every reconnect is ours, and is reported once
        redis, subscriber = make_client(url, retries=0), make_client(url, retries=0)
        clients.extend((redis, subscriber))
        await check_reachable(redis, url)
        follower = Follower(settings, redis, subscriber, as_json=as_json, out=out, url=url)
        try:
            pubsub = await follower.subscribe()
        except ResponseError as e:
            follower.stop_if_refused(e, f"SUBSCRIBE to room {settings.room}'s events")
            raise
        try:
            await follower.position(since)
        except ResponseError as e:
            follower.stop_if_refused(e, f"reading room {settings.room}'s log")
            raise
        log.info("tail_started", room=settings.room, redis=redact(url), after=follower.last)
        errors = Terminal(err)
        if errors.color:
            errors.line(dim(f"following room {settings.room} on {redact(url)} "
                            f"(Ctrl-C to stop)"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.follow_events, pubsub)
            tg.start_soon(follower.follow_log)

    # Ctrl-C (or SIGTERM) ends tail with 0 from the start too: while it waits for a Redis
    # that does not answer, not only once it follows
    try:
        await until_interrupted(start_and_follow)
    finally:
        with anyio.CancelScope(shield=True):
            for client in clients:
                await client.aclose()
    return 0
