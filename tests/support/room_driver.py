"""Acts in a room while real Claude Codes run: started by the harness as a service.

    python -m tests.support.room_driver --redis URL --to carol [--churn 5] [--burst 100] [--text T]

It waits until ``--to`` is in the room, then lets ``--churn`` agents join and leave, waits
``--settle`` seconds (a window in which an idle agent must start no turn), sends ``--text``
(a marker), and then ``--burst`` messages as fast as it can. It writes what it did, with
times, to ``--report`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anyio

from bridge.room.connection import Room
from bridge.settings import Settings


async def wait_for(settings: Settings, name: str, timeout: float) -> None:
    async with Room.connect(settings, warn_unverified=False) as room:
        with anyio.fail_after(timeout):
            while not any(p.name == name for p in (await room.participants())[1]):
                await anyio.sleep(0.2)


async def main(args: argparse.Namespace) -> None:
    base = Settings(redis_url=args.redis, room=args.room, name="driver", delivery="pull")
    report: dict[str, object] = {}
    await wait_for(base, args.to, args.timeout)
    report["present"] = time.time()
    for i in range(args.churn):
        churner = Settings(redis_url=args.redis, room=args.room, name=f"churn{i}",
                           delivery="pull", role="tester")
        async with Room.connect(churner, warn_unverified=False):
            pass
    report["churned"] = time.time()
    await anyio.sleep(args.settle)  # the window in which no turn may start
    async with Room.connect(base, warn_unverified=False) as room:
        report["marker_sent"] = time.time()
        if args.text:
            await room.send(args.to, args.text)
        for i in range(args.burst):
            await room.send(args.to, f"BURST-{i:03d}")
        report["burst_sent"] = time.time()
    Path(args.report).write_text(json.dumps(report))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--room", default="main")
    parser.add_argument("--to", required=True)
    parser.add_argument("--churn", type=int, default=0)
    parser.add_argument("--settle", type=float, default=0.0)
    parser.add_argument("--text", default="")
    parser.add_argument("--burst", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--report", required=True)
    anyio.run(main, parser.parse_args())
