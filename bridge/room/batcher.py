"""Group commit for the send function: the sends that queue up while one round trip is under way
go out together, in one pipeline, in the order their calls arrived.

One agent's sends must reach Redis in call order. Waiting for each reply before writing the
next command keeps that order but caps a sender at one message per round trip. Commands on
one connection run in the order they are written, so a pipeline keeps the order too, and
the round trip is shared by the whole batch. A lone send is still a batch of one: no delay.

Why in bridge.room, not bridge.redis: it runs the room's functions (bridge.room.functions:
Function, and loading the library when a server lacks it), and its failures are the send's
("the message was NOT sent", BRIDGE_SEND_TIMEOUT). What it is built of is the Redis side's:
the lane, the WAIT (bridge.redis.durability), the cluster's routing, the backoff.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from redis.asyncio import Redis
from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    MovedError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from bridge import trace
from bridge.errors import RedisRefused, RedisUnavailable
from bridge.redis import cluster
from bridge.redis.durability import Durability, redirect
from bridge.redis.lane import Lane
from bridge.redis.lua import Call, Script
from bridge.redis.subscriber import Backoff
from bridge.room.functions import Function, recoverable

log = structlog.get_logger("bridge.batcher")

MAX_BATCH = 64
RETRY_FIRST, RETRY_CAP = 0.1, 1.0
# error replies that a later try can get past: Redis still loading its data; on a cluster, a
# batch with a WAIT sent elsewhere (bridge.redis.durability.redirect)
RETRIED_REPLIES = (BusyLoadingError, MovedError, AskError, TryAgainError)


@dataclass
class Pending:
    call: Call
    # settled (asyncio's Event: anyio's looks up the event loop
    # library on every creation, which showed in a sender's profile)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    settled: bool = False
    reply: Any = None
    error: BaseException | None = None

    def settle(self, reply: Any = None, error: BaseException | None = None) -> None:
        self.reply, self.error, self.settled = reply, error, True
        self.wake.set()


class ScriptBatcher:
    """Runs one of bridge's functions for many callers, batching the calls that overlap.

    Its drain task (``drain_forever``, in the room's task group) takes the queue from the
    front, in batches, one after another, in order. A caller only waits for its own call's
    reply: one that stops waiting (cancelled) leaves its call queued, to go out in its turn,
    and strands nobody. A call that finds nothing queued and nothing under way is run by
    its caller, as a batch of one, without waking the drain task; cancelling that caller
    cancels the call (it may have run; bridge's callers shield their sends).
    """

    def __init__(self, redis: Redis, script: Script, timeout: float,
                 durability: Durability | None = None) -> None:
        self.redis = redis
        self.function = Function(redis, script)
        self.timeout = timeout
        self.durability = durability  # a WAIT after each batch (BRIDGE_MIN_REPLICAS)
        self._queue: list[Pending] = []
        self._queued = asyncio.Event()  # (asyncio's: see Pending.wake)
        self._under_way: anyio.CancelScope | None = None  # the batch being run
        # one batch at a time, in call order: the drain task's, or a lone call's run by its
        # caller when nothing was queued or under way (asyncio's: free, it takes no turn)
        self._turn = asyncio.Lock()
        self._closed: RedisUnavailable | None = None
        # one Redis: batches on a held connection (bridge.redis.lane); a cluster routes its own
        self._lane = Lane(redis) if Lane.usable(redis) else None

    def close(self, reason: str) -> None:
        """Fail every call queued or under way at once, and every later one: the server is
        stopping, and nobody waits for these answers. A call under way may have run."""
        if self._closed is None:
            self._closed = RedisUnavailable(reason)
        for pending in self._queue:
            pending.settle(error=self._closed)
        self._queue.clear()
        if self._under_way is not None:
            self._under_way.cancel()

    async def call(self, call: Call) -> Any:
        """The script's reply. Retries through an outage for up to ``timeout`` seconds
        (the script must be safe to repeat), then raises RedisUnavailable."""
        if self._closed is not None:
            raise self._closed
        pending = Pending(call)
        if not self._queue and not self._turn.locked():
            # nothing queued, nothing under way: run it here, not by the drain task, whose
            # wake-up costs an event-loop turn (A's tool call -> script, p50: 0.112-0.124 ->
            # 0.100 ms, bench --quick)
            async with self._turn:  # (free: taken without a turn of the loop)
                with anyio.CancelScope() as self._under_way:  # close() cancels it
                    await self._run([pending])
                self._under_way = None
        else:
            self._queue.append(pending)
            self._queued.set()
            await pending.wake.wait()
        if pending.error is not None:
            raise pending.error
        return pending.reply

    async def drain_forever(self) -> None:
        try:
            while True:
                await self._queued.wait()
                self._queued.clear()
                while self._queue:
                    async with self._turn:  # after a batch that a caller runs itself
                        batch = self._queue[:MAX_BATCH]
                        del self._queue[:MAX_BATCH]
                        with anyio.CancelScope() as self._under_way:  # close() cancels it
                            await self._run(batch)
                        self._under_way = None
        finally:  # the room is left: nobody may wait for a call that will not run
            self.close("the room was left; the message may not have been sent")

    async def _run(self, batch: list[Pending]) -> None:
        try:
            replies = await self._with_retry(batch)
        except BaseException as e:  # every caller in the batch hears of it; none hangs
            for pending in batch:  # closed or cancelled: a RedisUnavailable that says so
                pending.settle(error=e if isinstance(e, Exception) else self._closed or
                               RedisUnavailable("bridge is stopping; the message may not "
                                                "have been sent"))
            if not isinstance(e, Exception):
                raise
            return
        for pending, reply in zip(batch, replies, strict=True):
            pending.settle(reply, reply if isinstance(reply, Exception) else None)

    async def _with_retry(self, batch: list[Pending]) -> list[Any]:
        deadline = time.monotonic() + self.timeout
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while True:
            try:
                async with asyncio.timeout(max(0.5, deadline - time.monotonic())):
                    return await self._execute(batch)
            except (RedisError, OSError, TimeoutError) as e:
                if isinstance(e, ResponseError) and not isinstance(e, RETRIED_REPLIES):
                    raise
                if isinstance(e, AuthenticationError):  # retrying cannot fix a refused login
                    raise RedisRefused(
                        f"the message was NOT sent: Redis refused the login ({e}). Check the "
                        f"user name and password (--redis / BRIDGE_REDIS_URL)") from e
                if time.monotonic() + backoff.delay >= deadline:
                    raise RedisUnavailable(
                        f"the message was NOT sent: Redis did not answer for "
                        f"{self.timeout:g} s ({e or type(e).__name__}). "
                        f"Send it again once Redis is back (BRIDGE_SEND_TIMEOUT sets the wait)."
                    ) from e
                log.warning("send_retry", error=str(e) or type(e).__name__,
                            retry_in=round(backoff.delay, 2), batch=len(batch))
                await backoff.wait()

    async def _execute(self, batch: list[Pending]) -> list[Any]:
        for _ in range(Function.ATTEMPTS):
            if self._lane is not None:
                replies = await self._on_lane(self._lane, batch)
            else:
                replies = await (self._one(batch[0]) if len(batch) == 1 and not self.durability
                                 else self._many(batch))
            missing = next((reply for reply in replies if recoverable(reply)), None)
            if missing is None:
                return replies
            # The library (or, by EVALSHA, the script) is not on this Redis: a new or
            # restarted server. Those calls did not run. Load it (or say who must) and run
            # the batch again; a call that did run returns its first reply (the dedupe key).
            await self.function.recover(missing)
        raise RedisUnavailable("the send function could not be loaded into Redis; try again")

    async def _on_lane(self, lane: Lane, batch: list[Pending]) -> list[Any]:
        """The batch in one write on the lane's connection, the WAIT after it (durability):
        as a pipeline would, with ~40 us less of redis-py per batch (bridge.redis.lane)."""
        commands = [self.function.command(pending.call) for pending in batch]
        if self.durability:
            commands.append(self.durability.command())
        trace.mark("script_sent")  # (just before: the bytes leave inside run)
        replies = await lane.run(commands)
        loading = next((reply for reply in replies if isinstance(reply, BusyLoadingError)), None)
        if loading is not None:  # nothing ran: Redis is loading its data; retried
            raise loading
        return self.durability.attach(replies) if self.durability else replies

    async def _one(self, pending: Pending) -> list[Any]:
        """A batch of one without a pipeline: redis-py's pipeline costs ~0.1 ms more."""
        trace.mark("script_sent")  # (just before: the bytes leave inside the call)
        try:
            return [await self.redis.execute_command(  # type: ignore[no-untyped-call]
                *self.function.command(pending.call))]
        except ResponseError as e:  # this call's own error, as a pipeline would return it
            if isinstance(e, BusyLoadingError):
                raise
            return [e]

    async def _many(self, batch: list[Pending]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for pending in batch:
            self.function.queue(pipe, pending.call)
        if not self.durability:
            trace.mark("script_sent")  # (just before: the bytes leave inside execute)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies
        if not cluster.is_cluster(self.redis):  # on the same connection, after the sends
            self.durability.queue(pipe)
            return self.durability.attach(await pipe.execute(raise_on_error=False))
        # on a cluster: to the node of the room's slot, and no redirection inside (durability)
        key = self.function.command(batch[0].call)[3]
        self.durability.queue(pipe, node=await cluster.slot_primary(self.redis, key))
        replies = await pipe.execute(raise_on_error=False,  # type: ignore[call-arg]
                                     allow_redirections=False)
        moved = redirect(replies)
        if moved is not None:
            await cluster.refresh(self.redis)
            raise moved  # retried by _with_retry, on the new slot map
        return self.durability.attach(replies)
