"""A bounded soak: agents and redis-server are SIGKILLed and restarted while messages flow,
then every message is accounted for.

    .venv/bin/python -m bench.soak [--seconds 60] [--agents 10] [--seed N] [--keep]
                                   [--kills-per-minute N]

Starts its own redis-server on a free port (AOF on, ``appendfsync always``: every write is
on disk before Redis answers it, so a SIGKILL loses nothing that was acknowledged) and N
agents ``bridge serve --name aK --ttl 3``. Each agent sends, one call at a time, every
20-50 ms, a message to a random other agent (one time in 20 to "*"); the text carries a
unique token ``sender:seq``. Meanwhile, on a seeded schedule of 1-3 kills of each kind per
minute, an agent is SIGKILLed and restarted under the same name 0.5-2 s later, and
redis-server is SIGKILLed and restarted on the same port and data dir 1-2 s later.

Then sending stops, the soak waits (up to 30 s) until every agent has been pushed all that it
is owed, and prints

    sent N, delivered N, lost N, duplicated N, reordered N

counted in deliveries: one per message and addressee. A message is owed to its addressees if
its send_message call succeeded, or if the outcome of the call is unknown (the sender was
killed during it) but the message is in the room log. Deliveries are counted per receiver
name across process incarnations (the user's view); reordered counts, per (sender, receiver)
pair, first arrivals whose sequence number is below one that arrived before. A send whose
result was isError must never arrive (a phantom). The room log is read back at the end as
the ground truth of what was logged. Writes bench/results/soak.json and exits 1 on any loss,
duplicate, reorder, phantom or misdelivery, 2 if the soak itself failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process, TaskGroup
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bridge.room.keys import Keys
from tests.support.mcp_client import Agent, start_agent

ROOM = "main"
TTL = 3
SEND_TIMEOUT = 15
AGENT_ENV = {
    "BRIDGE_ROOM": ROOM,
    "BRIDGE_LOG_LEVEL": "WARNING",
    "BRIDGE_SEND_TIMEOUT": str(SEND_TIMEOUT),
    # The log is read back at the end as the ground truth: keep all of it.
    "BRIDGE_LOG_MAXLEN": "1000000",
}
SEND_GAP = (0.02, 0.05)
BROADCAST_SHARE = 0.05
AGENT_DOWN = (0.5, 2.0)
REDIS_DOWN = (1.0, 2.0)
REDIS_MIN_UP = 2.0  # between a restart and the next kill
KILLS_PER_MINUTE = (1, 3)
KILL_WINDOW = (0.1, 0.8)  # share of the run in which kills happen
CALL_TIMEOUT = SEND_TIMEOUT + 15.0
START_DEADLINE = 30.0
DRAIN_DEADLINE = 35.0  # after sending stops: in-flight sends and restarts
DELIVERY_DEADLINE = 30.0
SETTLE = 1.0  # after everything arrived, for late duplicates or phantoms
STOP_DEADLINE = 10.0
HARD_CAP_MARGIN = 90.0
RESULTS = Path(__file__).parent / "results" / "soak.json"
MESSAGE_ID = re.compile(r"message_id (\d+-\d+)")
CALL_FAILED = (RuntimeError, TimeoutError, OSError,
               anyio.BrokenResourceError, anyio.ClosedResourceError)
FAILURES = ("lost", "duplicated", "reordered", "phantoms", "misdelivered", "logged_twice",
            "confirmed_not_in_log", "wrong_id", "unexpected_exits")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kill_times(rng: random.Random, seconds: float, per_minute: int | None) -> list[float]:
    per_minute = rng.randint(*KILLS_PER_MINUTE) if per_minute is None else per_minute
    count = max(1, round(per_minute * seconds / 60))
    start, end = (share * seconds for share in KILL_WINDOW)
    return sorted(round(rng.uniform(start, end), 3) for _ in range(count))


async def stop_process(process: Process, timeout: float = 10) -> None:
    if process.returncode is None:
        with suppress(ProcessLookupError):
            process.kill()
    with anyio.move_on_after(timeout):
        await process.wait()


@dataclass
class Message:
    token: str  # sender:seq
    sender: str
    seq: int
    to: str  # a name, or "*"
    sent_at: float
    outcome: str = "pending"  # ok, error, unknown (the call failed: the agent died mid-call)
    message_id: str = ""  # from the tool result
    detail: str = ""


@dataclass
class Slot:
    """One agent name, across the processes that held it."""

    name: str
    rng: random.Random
    incarnations: list[Agent] = field(default_factory=list)
    current: Agent | None = None
    next_seq: int = 1


class RedisServer:
    def __init__(self, port: int, data_dir: Path, processes: list[Process]) -> None:
        self.port = port
        self.dir = data_dir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: Process | None = None
        self._processes = processes

    def command(self) -> list[str]:
        return [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
                "--bind", "127.0.0.1", "--dir", str(self.dir), "--logfile",
                str(self.dir / "redis.log"), "--appendonly", "yes", "--appendfsync", "always",
                "--save", ""]

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                     socket_connect_timeout=2, decode_responses=True)

    async def start(self, timeout: float = 15) -> None:
        process = await anyio.open_process(self.command(), stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
        self.process = process
        self._processes.append(process)
        client = self.client()
        deadline = time.monotonic() + timeout
        try:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"redis-server exited ({process.returncode}); "
                                       f"see {self.dir / 'redis.log'}")
                with suppress(RedisError, OSError):
                    if await client.ping():  # LOADING (BusyLoadingError) until the AOF is in
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server did not answer PING in {timeout:g} s")
                await anyio.sleep(0.05)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        if self.process is not None:
            await stop_process(self.process)


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path, processes: list[Process]) -> None:
        self.seconds: float = args.seconds
        self.seed: int = args.seed
        self.tmp = tmp
        self.processes = processes
        self.redis = RedisServer(free_port(), tmp / "redis", processes)
        self.redis.dir.mkdir()
        self.keys = Keys(ROOM)
        names = [f"a{i}" for i in range(1, args.agents + 1)]
        self.slots = {name: Slot(name, random.Random(f"{self.seed}:{name}")) for name in names}
        self.chaos_rng = random.Random(f"{self.seed}:chaos")
        schedule = random.Random(self.seed)
        self.agent_kills = kill_times(schedule, self.seconds, args.kills_per_minute)
        self.redis_kills = kill_times(schedule, self.seconds, args.kills_per_minute)
        self.messages: dict[str, Message] = {}
        self.events: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.stop = anyio.Event()
        self.t0 = time.perf_counter()  # the clock of Agent.message_times
        self.t0_unix = time.time()
        self.readers: TaskGroup | None = None
        self.in_log: dict[str, list[str]] = {}
        self.delivery_wait = 0.0
        self.all_delivered = False

    def now(self) -> float:
        return round(time.perf_counter() - self.t0, 3)

    def note(self, event: str, **details: Any) -> None:
        self.events.append({"t": self.now(), "event": event, **details})

    # ------------------------------------------------------------ processes
    async def launch(self, slot: Slot, timeout: float = START_DEADLINE) -> None:
        """Start `bridge serve` under the slot's name; retry while Redis is down."""
        assert self.readers is not None
        deadline = time.monotonic() + timeout
        for attempt in range(1, 1000):
            agent = await start_agent(self.readers, slot.name, self.redis.url, self.tmp,
                                      "--ttl", str(TTL), env=AGENT_ENV, handshake=False)
            self.processes.append(agent.process)
            try:
                with anyio.fail_after(max(1.0, min(10.0, deadline - time.monotonic()))):
                    await agent.handshake()
            except CALL_FAILED as e:
                await stop_process(agent.process)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{slot.name} did not start in {timeout:g} s "
                                       f"({e!r}): {agent.stderr()[-1500:]}") from e
                await anyio.sleep(0.5)
                continue
            slot.incarnations.append(agent)
            slot.current = agent
            self.note("agent_started", name=slot.name, attempts=attempt,
                      incarnation=len(slot.incarnations) - 1)
            return
        raise RuntimeError(f"{slot.name} did not start")

    async def kill_agent(self, slot: Slot) -> None:
        agent, slot.current = slot.current, None
        assert agent is not None
        agent.process.kill()
        with anyio.fail_after(10):
            await agent.process.wait()
        self.counts["agent_kills"] += 1
        self.note("agent_killed", name=slot.name, incarnation=len(slot.incarnations) - 1,
                  pushed=len(agent.message_times))

    # ------------------------------------------------------------ the run
    async def sender(self, slot: Slot) -> None:
        others = [name for name in self.slots if name != slot.name]
        while not self.stop.is_set():
            await anyio.sleep(slot.rng.uniform(*SEND_GAP))
            agent = slot.current
            if agent is None or self.stop.is_set():
                continue
            to = "*" if slot.rng.random() < BROADCAST_SHARE else slot.rng.choice(others)
            message = Message(f"{slot.name}:{slot.next_seq}", slot.name, slot.next_seq, to,
                              self.now())
            slot.next_seq += 1
            self.messages[message.token] = message
            try:
                result = await agent.call("send_message", timeout=CALL_TIMEOUT, to=to,
                                          text=f"soak {message.token}")
            except CALL_FAILED as e:
                message.outcome, message.detail = "unknown", repr(e)[:300]
                if slot.current is agent and agent.process.returncode is not None:
                    await self.on_unexpected_exit(slot, agent)
                continue
            text = "".join(part.get("text", "") for part in result.get("content", []))
            if result.get("isError"):
                message.outcome, message.detail = "error", text[:300]
            else:
                message.outcome = "ok"
                if match := MESSAGE_ID.search(text):
                    message.message_id = match.group(1)

    async def on_unexpected_exit(self, slot: Slot, agent: Agent) -> None:
        slot.current = None
        self.counts["unexpected_exits"] += 1
        self.note("agent_exited", name=slot.name, returncode=agent.process.returncode,
                  stderr=agent.stderr()[-1000:])
        await self.launch(slot)

    async def sleep_until(self, at: float) -> None:
        with anyio.move_on_after(max(0.0, at - self.now())):
            await self.stop.wait()

    async def agent_chaos(self) -> None:
        for at in self.agent_kills:
            await self.sleep_until(at)
            up = [slot for slot in self.slots.values() if slot.current is not None]
            if self.stop.is_set() or not up:
                return
            slot = self.chaos_rng.choice(up)
            await self.kill_agent(slot)
            await anyio.sleep(self.chaos_rng.uniform(*AGENT_DOWN))
            await self.launch(slot)

    async def redis_chaos(self) -> None:
        up_since = 0.0
        for at in self.redis_kills:
            await self.sleep_until(max(at, up_since + REDIS_MIN_UP))
            if self.stop.is_set():
                return
            await self.redis.kill()
            self.counts["redis_kills"] += 1
            self.note("redis_killed")
            await anyio.sleep(self.chaos_rng.uniform(*REDIS_DOWN))
            await self.redis.start()
            up_since = self.now()
            self.note("redis_restarted")

    async def run(self) -> None:
        async with anyio.create_task_group() as readers:
            self.readers = readers
            try:
                await self.redis.start()
                async with anyio.create_task_group() as tg:
                    for slot in self.slots.values():
                        tg.start_soon(self.launch, slot)
                self.t0, self.t0_unix = time.perf_counter(), time.time()
                self.note("sending")
                with anyio.move_on_after(self.seconds + DRAIN_DEADLINE) as drain:
                    async with anyio.create_task_group() as tg:
                        for slot in self.slots.values():
                            tg.start_soon(self.sender, slot)
                        tg.start_soon(self.agent_chaos)
                        tg.start_soon(self.redis_chaos)
                        await anyio.sleep(self.seconds)
                        self.stop.set()
                        self.note("stopped_sending")
                if drain.cancelled_caught:
                    self.note("drain_timeout")
                    self.counts["drain_timeouts"] += 1
                if self.redis.process is None or self.redis.process.returncode is not None:
                    await self.redis.start()
                for slot in self.slots.values():
                    if slot.current is None:
                        await self.launch(slot)
                self.note("drained")
                self.in_log = await self.read_log()
                await self.wait_delivered()
                await anyio.sleep(SETTLE)
                await self.stop_agents()
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_DEADLINE):
                    for process in self.processes:
                        await stop_process(process, timeout=2)
                readers.cancel_scope.cancel()

    async def read_log(self) -> dict[str, list[str]]:
        """token -> ids of the log entries that carry it."""
        found: dict[str, list[str]] = defaultdict(list)
        client = self.redis.client()
        try:
            start = "-"
            while True:
                page = await client.xrange(self.keys.log, start, "+", count=2000)
                for entry_id, fields in page:
                    found[fields.get("text", "").removeprefix("soak ")].append(entry_id)
                if len(page) < 2000:
                    return dict(found)
                start = f"({page[-1][0]}"
        finally:
            await client.aclose()

    def owed(self) -> dict[str, set[str]]:
        owed: dict[str, set[str]] = {name: set() for name in self.slots}
        for message in self.messages.values():
            if message.outcome == "ok" or (message.outcome != "error"
                                           and message.token in self.in_log):
                for name in addressees(message, self.slots):
                    owed[name].add(message.token)
        return owed

    async def wait_delivered(self) -> None:
        owed = self.owed()
        started = time.monotonic()
        deadline = started + DELIVERY_DEADLINE
        while True:
            missing = sum(len(owed[name] - {arrival[0] for arrival in arrivals(slot, 0)})
                          for name, slot in self.slots.items())
            if missing == 0 or time.monotonic() > deadline:
                break
            await anyio.sleep(0.2)
        self.all_delivered = missing == 0
        self.delivery_wait = round(time.monotonic() - started, 2)
        self.note("delivered" if self.all_delivered else "delivery_timeout", missing=missing)

    async def stop_agents(self) -> None:
        """Close stdin (the agents leave and flush their cursors), as a client would."""
        agents = [slot.current for slot in self.slots.values() if slot.current is not None]
        for agent in agents:
            with suppress(*CALL_FAILED):
                await agent.close_stdin()
        with anyio.move_on_after(STOP_DEADLINE):
            for agent in agents:
                await agent.process.wait()
        codes = [agent.process.returncode for agent in agents]
        self.note("agents_stopped", returncodes=codes)


def addressees(message: Message, names: Any) -> list[str]:
    if message.to == "*":
        return [name for name in names if name != message.sender]
    return [message.to]


def arrivals(slot: Slot, t0: float) -> list[tuple[str, str, str, int, float]]:
    """(token, meta from, meta message_id, incarnation, arrival time since t0) of every
    message pushed to this name, in order."""
    out = []
    for incarnation, agent in enumerate(slot.incarnations):
        for params, arrived in zip(agent.channel(), agent.message_times, strict=True):
            meta = params["meta"]
            out.append((params["content"].removeprefix("soak "), meta.get("from", ""),
                        meta.get("message_id", ""), incarnation, round(arrived - t0, 3)))
    return out


def analyse(soak: Soak) -> dict[str, Any]:
    owed = soak.owed()
    messages = soak.messages
    counts: Counter[str] = Counter()
    details: dict[str, list[Any]] = defaultdict(list)

    def detail(kind: str, item: Any) -> None:
        if len(details[kind]) < 20:
            details[kind].append(item)

    for name, slot in soak.slots.items():
        copies: dict[str, list[tuple[int, float]]] = defaultdict(list)
        highest: dict[str, int] = {}
        for token, sender, message_id, incarnation, arrived in arrivals(slot, soak.t0):
            copies[token].append((incarnation, arrived))
            message = messages.get(token)
            if message is None or sender != message.sender or name not in addressees(
                    message, soak.slots) or message_id not in soak.in_log.get(token, []):
                counts["misdelivered"] += 1
                detail("misdelivered", {"token": token, "from": sender, "to": name,
                                        "message_id": message_id})
                continue
            if message.outcome == "error":
                counts["phantoms"] += 1
                detail("phantoms", {"token": token, "to": name, "error": message.detail})
            if len(copies[token]) > 1:
                continue
            if message.seq < highest.get(sender, 0):
                counts["reordered"] += 1
                detail("reordered", {"token": token, "to": name,
                                     "after": f"{sender}:{highest[sender]}"})
            highest[sender] = max(highest.get(sender, 0), message.seq)
        for token, seen in copies.items():
            if len(seen) > 1:
                counts["duplicated"] += len(seen) - 1
                detail("duplicated", {"token": token, "to": name, "sent_at":
                                      messages[token].sent_at if token in messages else None,
                                      "copies (incarnation, arrived)": seen})
        counts["sent"] += len(owed[name])
        delivered = owed[name] & copies.keys()
        counts["delivered"] += len(delivered)
        for token in sorted(owed[name] - delivered):
            counts["lost"] += 1
            message = messages[token]
            detail("lost", {"token": token, "to": name, "outcome": message.outcome,
                            "in_log": soak.in_log.get(token, []), "sent_at": message.sent_at,
                            "receiver_incarnations": len(slot.incarnations)})
        counts["notices"] += sum(len(agent.channel("notice")) for agent in slot.incarnations)

    outcomes = Counter(message.outcome for message in messages.values())
    counts["messages"] = len(messages)
    counts["broadcasts"] = sum(message.to == "*" for message in messages.values())
    for outcome in ("ok", "error", "unknown", "pending"):
        counts[f"outcome_{outcome}"] = outcomes[outcome]
    counts["unknown_in_log"] = sum(message.outcome in ("unknown", "pending")
                                   and message.token in soak.in_log
                                   for message in messages.values())
    for message in messages.values():
        logged = soak.in_log.get(message.token, [])
        if len(logged) > 1:
            counts["logged_twice"] += 1
            detail("logged_twice", {"token": message.token, "ids": logged})
        if message.outcome == "ok" and not logged:
            counts["confirmed_not_in_log"] += 1
            detail("confirmed_not_in_log", asdict(message))
        elif message.outcome == "ok" and message.message_id not in logged:
            counts["wrong_id"] += 1  # the tool result named another entry than the log's
            detail("wrong_id", {**asdict(message), "in_log": logged})
        if message.outcome == "error" and logged:
            detail("error_but_logged", asdict(message))
        if message.outcome != "ok" and len(details[f"outcome_{message.outcome}"]) < 5:
            details[f"outcome_{message.outcome}"].append(asdict(message))
    counts["log_entries"] = sum(len(ids) for ids in soak.in_log.values())
    counts.update(soak.counts)
    counts["agent_restarts"] = sum(len(slot.incarnations) - 1 for slot in soak.slots.values())

    warnings: Counter[str] = Counter()
    for slot in soak.slots.values():
        for agent in slot.incarnations:
            warnings.update(str(event.get("event")) for event in agent.log_events())
    return {"counts": dict(counts), "details": dict(details), "agent_log_events": warnings}


def report(soak: Soak, result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    c: Counter[str] = Counter(result["counts"])
    warnings = ", ".join(f"{event} {n}" for event, n in result["agent_log_events"].most_common())
    return [
        f"soak: {args.seconds:g} s, {args.agents} agents, seed {args.seed}; redis-server "
        f"--appendonly yes --appendfsync always (a SIGKILL loses no acknowledged write); "
        f"agents --ttl {TTL}, BRIDGE_SEND_TIMEOUT={SEND_TIMEOUT}",
        f"sent {c['sent']}, delivered {c['delivered']}, lost {c['lost']}, "
        f"duplicated {c['duplicated']}, reordered {c['reordered']}",
        f"messages {c['messages']} ({c['broadcasts']} to \"*\"): {c['outcome_ok']} confirmed, "
        f"{c['outcome_error']} isError, {c['outcome_unknown'] + c['outcome_pending']} unknown "
        f"(sender killed mid-call; {c['unknown_in_log']} of them in the log); "
        f"phantoms {c['phantoms']}, misdelivered {c['misdelivered']}, "
        f"logged twice {c['logged_twice']}, confirmed but not in log "
        f"{c['confirmed_not_in_log']}, wrong id {c['wrong_id']}",
        f"kills: agents {c['agent_kills']} (restarts {c['agent_restarts']}), redis "
        f"{c['redis_kills']}; unexpected agent exits {c['unexpected_exits']}; "
        f"notices {c['notices']}; "
        + (f"all delivered {soak.delivery_wait} s after sending stopped" if soak.all_delivered
           else f"NOT all delivered after {soak.delivery_wait} s"),
        f"agent log (WARNING+): {warnings or 'nothing'}",
    ]


def kill_leftovers(processes: list[Process]) -> None:
    """Last resort, outside the event loop (Ctrl-C, a crash): SIGKILL what still runs."""
    for process in processes:
        if process.returncode is None:
            with suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


class Terminated(Exception):
    pass


async def soak_main(args: argparse.Namespace, tmp: Path, processes: list[Process]) -> Soak:
    soak = Soak(args, tmp, processes)
    terminated = False

    async def stop_on_sigterm(scope: anyio.CancelScope) -> None:
        nonlocal terminated
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                terminated = True
                scope.cancel()
                return

    with anyio.fail_after(args.seconds + HARD_CAP_MARGIN):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_sigterm, tg.cancel_scope)
            await soak.run()  # its own cleanup runs when SIGTERM cancels it
            tg.cancel_scope.cancel()
    if terminated:
        raise Terminated
    return soak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--kills-per-minute", type=int, default=None, metavar="N",
                        help="kills of each kind per minute (default: 1-3, from the seed)")
    parser.add_argument("--secret", action="store_true",
                        help="sign the room (BRIDGE_SECRET): receivers then deliver from the "
                             "wake-up when it is provably next (bridge/room/wakeup.py)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temp dir (agent stderr, redis log and AOF); it is "
                             "always kept when the soak fails")
    args = parser.parse_args()
    if args.agents < 2 or args.seconds <= 0:
        parser.error("need at least 2 agents and a positive duration")
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    if args.secret:
        AGENT_ENV["BRIDGE_SECRET"] = f"soak-secret-{args.seed}-0123456789"
    tmp = Path(tempfile.mkdtemp(prefix="bridge-soak-"))
    processes: list[Process] = []
    keep = True
    try:
        soak = anyio.run(soak_main, args, tmp, processes)
        result = analyse(soak)  # reads the agents' stderr: before tmp goes
        keep = args.keep
    except (KeyboardInterrupt, Terminated) as e:
        print(f"soak: interrupted; logs in {tmp}", file=sys.stderr)
        sys.exit(130 if isinstance(e, KeyboardInterrupt) else 143)
    except Exception as e:
        print(f"soak: FAILED to run: {e!r}\nlogs in {tmp}", file=sys.stderr)
        raise SystemExit(2) from e
    finally:
        kill_leftovers(processes)
    lines = report(soak, result, args)
    failed = [key for key in FAILURES if result["counts"].get(key)]
    if not soak.all_delivered:
        failed.append("not_all_delivered")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "config": {**vars(args), "t0_unix": soak.t0_unix, "ttl": TTL, "send_timeout": SEND_TIMEOUT,
                   "appendfsync": "always", "send_gap": SEND_GAP,
                   "broadcast_share": BROADCAST_SHARE, "agent_kill_times": soak.agent_kills,
                   "redis_kill_times": soak.redis_kills},
        "summary": lines, "failed": failed, **result, "events": soak.events,
    }, indent=1, default=str) + "\n")
    print("\n".join(lines))
    print(f"results: {RESULTS}")
    if failed or keep:
        print(f"logs (agent stderr, redis log and AOF): {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
