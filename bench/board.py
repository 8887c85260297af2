"""The board's scripts at their worst cases, on a redis-server of its own: how long one call
runs on the server (where it blocks every other client of that Redis, Lua being atomic).

    .venv/bin/python -m bench.board

- claims: 100 paths claimed at once against a full room (2,000 claims of 20 other agents,
  none overlapping: every pair is compared), and a renew of an agent's 100 claims;
- tasks: a claim or an assign with 1,000 tasks not done (the per-assignee count reads each),
  a waits_for change that walks a chain of 1,000 tasks (the cycle check), and a create on a
  full board of 10,000 whose 1,000 oldest are not done (the oldest done one is looked for).

Each figure is the median and the worst of REPEATS calls, measured at the client over
loopback (so it includes one round trip, ~0.1 ms here).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from redis.asyncio import Redis

from bench.common import RedisServer
from bridge.room.claim_records import MAX_PER_AGENT, MAX_PER_ROOM
from bridge.room.claims import ClaimBook
from bridge.room.keys import Keys
from bridge.room.task_records import MAX_OPEN, MAX_TASKS
from bridge.room.tasks import TaskBoard

REPEATS = 20


async def timed(label: str, call: Callable[[], Awaitable[Any]],
                reset: Callable[[], Awaitable[Any]] | None = None) -> None:
    times = []
    for _ in range(REPEATS):
        if reset is not None:
            await reset()
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    print(f"| {label} | {statistics.median(times):.2f} | {max(times):.2f} |")


async def claims(redis: Redis) -> None:
    book = ClaimBook(redis, Keys("claims"), None)
    others = MAX_PER_ROOM // MAX_PER_AGENT - 1
    for agent in range(others):
        await book.claim(f"agent{agent}", [f"area{agent}/file{i}.py"
                                           for i in range(MAX_PER_AGENT)])
    last = MAX_PER_ROOM - others * MAX_PER_AGENT - MAX_PER_AGENT
    if last > 0:
        await book.claim("filler", [f"filler/f{i}" for i in range(last)])
    wanted = [f"mine/src{i}/*.py" for i in range(MAX_PER_AGENT)]

    async def release() -> None:
        await book.release_all("me")

    await timed(f"claim {MAX_PER_AGENT} globs against {others * MAX_PER_AGENT} claims",
                lambda: book.claim("me", wanted), release)
    await book.claim("me", wanted)
    await timed(f"renew an agent's {MAX_PER_AGENT} claims", lambda: book.renew("me"))


async def tasks(redis: Redis) -> None:
    keys = Keys("tasks")
    board = TaskBoard(redis, keys, None)
    for i in range(MAX_OPEN - 1):
        await board.create("boss", f"task {i}", assignee=f"dev{i % 20}",
                           waits_for=[f"t{i}"] if i else ())
    await board.create("boss", "the one")  # t1000: nobody's, waits for nothing

    async def unassign() -> None:
        await board.assign(f"t{MAX_OPEN}", "nobody", "boss")

    await timed(f"assign with {MAX_OPEN} tasks not done",
                lambda: board.assign(f"t{MAX_OPEN}", "dev1", "boss"), unassign)
    # t1000 waits for t999, which waits (through the chain) down to t1: 999 steps
    await timed(f"waits_for change walking a chain of {MAX_OPEN - 1}",
                lambda: board.update(f"t{MAX_OPEN}", "boss", waits_for=[f"t{MAX_OPEN - 1}"]))
    # a full board: the 1,000 oldest not done, then done ones up to MAX_TASKS
    pipe: Any = redis.pipeline(transaction=False)
    for number in range(MAX_OPEN + 1, MAX_TASKS + 1):
        pipe.hset(keys.task(f"t{number}"), mapping={"id": f"t{number}", "title": "old",
                                                    "status": "done", "rev": "1"})
        pipe.zadd(keys.tasks, {f"t{number}": number})
    pipe.set(keys.task_seq, MAX_TASKS)
    await pipe.execute()
    await board.update(f"t{MAX_OPEN}", "boss", status="done")

    await timed(f"create on a full board ({MAX_TASKS}), {MAX_OPEN - 1} oldest not done",
                lambda: board.create("boss", "one more"), lambda: close_newest(board))


async def close_newest(board: TaskBoard) -> None:
    """Mark the newest task done (the room holds at most MAX_OPEN not done)."""
    newest = [task for task in await board.tasks() if task.status != "done"]
    if len(newest) >= MAX_OPEN - 1:
        latest = max(newest, key=lambda task: task.number)
        await board.update(latest.id, "boss", status="done")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        server.start()
        try:
            redis = Redis.from_url(server.url)
            print("| worst case | median ms | worst ms |")
            print("|---|---|---|")
            await claims(redis)
            await tasks(redis)
            await redis.aclose()
        finally:
            server.stop()


if __name__ == "__main__":
    anyio.run(main)
