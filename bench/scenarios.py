"""The six scenarios of issue 5. Each takes a Context and returns a JSON-ready dict."""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream
from redis.asyncio import Redis

from bench.common import Processes, RedisServer, line, summary
from bench.durability import durability
from bench.hops import measure_hops
from bench.report import catchup_text
from bridge.room.presence import Presence
from bridge.settings import Settings
from tests.support.mcp_client import Agent


@dataclass
class Sizes:
    latency: int
    warmup: int
    floor: int
    throughput: int
    window: int
    fanout: tuple[int, ...]
    broadcasts: int
    presence: tuple[int, ...]
    list_calls: int
    startups: int
    catchup: int
    profile_seconds: float
    shard_rooms: int = 12  # bench/shards.py: rooms at once, messages per room
    shard_messages: int = 300


FULL = Sizes(latency=2000, warmup=50, floor=2000, throughput=10000, window=32,
             fanout=(10, 50, 100), broadcasts=30, presence=(100, 1000, 5000), list_calls=50,
             startups=10, catchup=10000, profile_seconds=5)
QUICK = Sizes(latency=500, warmup=20, floor=500, throughput=2000, window=32, fanout=(10, 25),
              broadcasts=10, presence=(100, 1000), list_calls=20, startups=3, catchup=2000,
              profile_seconds=3, shard_rooms=6, shard_messages=300)
SMOKE = Sizes(latency=30, warmup=5, floor=30, throughput=100, window=8, fanout=(2, 4),
              broadcasts=3, presence=(20, 50), list_calls=3, startups=1, catchup=100,
              profile_seconds=1, shard_rooms=2, shard_messages=10)


@dataclass
class Context:
    redis: RedisServer
    procs: Processes
    tmp: Path
    sizes: Sizes
    profile: bool


_ids = iter(range(1_000_000, 10**9))


def next_id() -> int:
    return next(_ids)


def send_params(to: str, text: str) -> dict[str, Any]:
    return {"name": "send_message", "arguments": {"to": to, "text": text}}


async def send_windowed(agent: Agent, to: str, texts: list[str], window: int,
                        stop: anyio.Event | None = None) -> tuple[int, list[str], list[float]]:
    """Send texts with at most `window` tool calls in flight. Returns (sent, errors, call ms).

    Replies come back in call order, so when the window is full this waits for the oldest
    call: no task per call (the harness is one of the four processes sharing 2 cores)."""
    errors: list[str] = []
    call_ms: list[float] = []
    in_flight: collections.deque[tuple[int, float]] = collections.deque()

    async def settle_oldest() -> None:
        request_id, started = in_flight.popleft()
        result = await agent.response(request_id, timeout=60)
        call_ms.append((agent.response_times.pop(request_id) - started) * 1000)
        if result.get("isError"):
            errors.append(str(result["content"])[:300])

    sent = 0
    for text in texts:
        if stop is not None and stop.is_set():
            break
        if len(in_flight) >= window:
            await settle_oldest()
        request_id = next_id()
        in_flight.append((request_id, time.perf_counter()))
        await agent.send_request(request_id, "tools/call", send_params(to, text))
        sent += 1
    while in_flight:
        await settle_oldest()
    return sent, errors, call_ms


async def wait_count(agent: Agent, count: int, timeout: float) -> bool:
    try:
        await agent.wait_messages(count, timeout)
        return True
    except TimeoutError:
        return False


def check_delivery(agent: Agent, sender: str, expected: list[str]) -> dict[str, Any]:
    """Lost, duplicated and out-of-order messages from one sender, checked against `expected`."""
    got = [p["content"] for p in agent.channel() if p["meta"].get("from") == sender]
    wanted = set(expected)
    mine = [text for text in got if text in wanted]
    counts = Counter(mine)
    firsts: list[str] = []
    seen: set[str] = set()
    for text in mine:
        if text not in seen:
            seen.add(text)
            firsts.append(text)
    return {"expected": len(expected), "delivered": len(seen),
            "lost": len(wanted - seen), "duplicates": sum(c - 1 for c in counts.values()),
            "order_ok": firsts == [t for t in expected if t in seen]}


# --------------------------------------------------------------------------- 1. latency
FLOOR_SUBSCRIBER = r"""
import json, sys, time, redis
port, channel, ack, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
r = redis.Redis(port=int(port))
p = r.pubsub(ignore_subscribe_messages=True)
p.subscribe(channel)
while p.get_message(timeout=0.05) is None and not p.subscribed:
    pass
print("ready", flush=True)
deltas = []
deadline = time.monotonic() + 120
while len(deltas) < count and time.monotonic() < deadline:
    m = p.get_message(timeout=1.0)
    if m is None:
        continue
    now = time.monotonic_ns()
    deltas.append((now - int(m["data"])) / 1e6)
    r.publish(ack, m["data"])
print(json.dumps(deltas), flush=True)
"""


def measure_floor(ctx: Context, count: int) -> tuple[list[float], list[float]]:
    """redis-py PUBLISH in this process -> receive in another process, one at a time.

    Returns (one-way ms by CLOCK_MONOTONIC, which is shared by all processes on Linux,
    half the round trip ms)."""
    import redis

    channel, ack = "floor:ping", "floor:pong"
    total = count + 50
    sub = ctx.procs.popen([sys.executable, "-c", FLOOR_SUBSCRIBER, str(ctx.redis.port), channel,
                           ack, str(total)], stdout=subprocess.PIPE, text=True)
    assert sub.stdout is not None
    client = redis.Redis(port=ctx.redis.port, socket_timeout=10)
    acks = client.pubsub(ignore_subscribe_messages=True)
    acks.subscribe(ack)
    ready = sub.stdout.readline()
    assert ready.strip() == "ready", f"floor subscriber: {ready!r}"
    half_rtt: list[float] = []
    for _ in range(total):
        started = time.monotonic_ns()
        client.publish(channel, str(started))
        deadline = time.monotonic() + 10
        while acks.get_message(timeout=1.0) is None:
            assert time.monotonic() < deadline, "floor: no pong within 10 s"
        half_rtt.append((time.monotonic_ns() - started) / 2e6)
    output, _ = sub.communicate(timeout=30)
    one_way = json.loads(output.strip().splitlines()[-1])
    acks.close()
    client.close()
    return one_way[50:], half_rtt[50:]


async def latency(ctx: Context) -> dict[str, Any]:
    size = ctx.sizes
    trace_dir = ctx.tmp / "trace"
    trace_dir.mkdir(exist_ok=True)
    env = {"BRIDGE_ROOM": "lat", "BRIDGE_TRACE_DIR": str(trace_dir)}
    async with anyio.create_task_group() as tg:
        alice = await ctx.procs.agent(tg, "alice", ctx.redis.url, ctx.tmp, env=env)
        bob = await ctx.procs.agent(tg, "bob", ctx.redis.url, ctx.tmp, env=env)
        samples: list[float] = []
        spans: list[tuple[float, float]] = []  # (sent, arrived), perf_counter = CLOCK_MONOTONIC
        pids = {"A": alice.process.pid, "B": bob.process.pid,
                "redis": ctx.redis.process.pid if ctx.redis.process else 0}
        cpu: dict[str, float] = {}
        for i in range(size.latency + size.warmup):
            if i == size.warmup:  # each process' CPU per message, one message at a time
                cpu = {who: cpu_seconds(pid) for who, pid in pids.items()}
            request_id = next_id()
            started = time.perf_counter()
            await alice.send_request(request_id, "tools/call", send_params("bob", f"m{i}"))
            await bob.wait_messages(i + 1, timeout=10)
            samples.append((bob.message_times[i] - started) * 1000)
            spans.append((started, bob.message_times[i]))
            await alice.response(request_id, timeout=10)
        cpu_us = {who: 1e6 * (cpu_seconds(pid) - cpu[who]) / size.latency
                  for who, pid in pids.items()} if cpu else {}
        delivery = check_delivery(bob, "alice", [f"m{i}" for i in range(i + 1)])
        await ctx.procs.stop_agents([alice, bob])
        tg.cancel_scope.cancel()
    samples = samples[size.warmup:]
    one_way, half_rtt = await anyio.to_thread.run_sync(measure_floor, ctx, size.floor)
    hop_samples = await measure_hops(ctx.redis.port, size.floor)
    bridge, floor, rtt = summary(samples), summary(one_way), summary(half_rtt)
    hops = summary(hop_samples)
    print(line("bridge send_message -> channel push", bridge))
    print(line("floor redis-py PUBLISH -> receive, other process", floor))
    print(line("floor round trip / 2", rtt))
    print(line("floor of the shape: pipe -> relay -> PUBLISH -> sink -> pipe", hops))
    if cpu_us:
        print("  CPU per message, one at a time: " + ", ".join(
            f"{who} {us:.0f} µs" for who, us in cpu_us.items()))
    ratio = bridge["p50"] / floor["p50"]
    print(f"  ratio p50/p50: {ratio:.1f}x   lost: {delivery['lost']}")
    steps = latency_steps(trace_dir, spans[size.warmup:])
    if steps:
        print("  where the time goes (p50 of each step, ms): " + ", ".join(
            f"{step} {ms:.3f}" for step, ms in steps.items()))
    return {"bridge": bridge, "floor": floor, "floor_half_rtt": rtt, "ratio_p50": ratio,
            "hops": hops, "cpu_us_per_message": cpu_us,
            "steps_p50_ms": steps,
            "lost": delivery["lost"], "order_ok": delivery["order_ok"],
            "samples": {"bridge": samples, "floor": one_way}}


# The marks bridge/trace.py writes with BRIDGE_TRACE_DIR, in the order a message passes them.
TRACE_STEPS = (
    ("request_read", "client → A: pipe, A reads and parses the request"),
    ("script_sent", "A: tool call → send function written to Redis"),
    ("woken", "Redis runs the script and publishes; B is woken"),
    ("taken", "B takes the message: from the wake-up when provably next, else read back "
              "from the log (one round trip)"),
    ("pushed", "B: notification built and written to its pipe"),
    ("", "B's pipe → client has it"),
)


def latency_steps(trace_dir: Path, spans: list[tuple[float, float]]) -> dict[str, float]:
    """p50 of each step between the trace marks, over the messages that passed them all."""
    marks: dict[str, list[float]] = {}
    for path in trace_dir.glob("*.trace"):
        for text in path.read_text().splitlines():
            point, _, ns = text.partition(" ")
            marks.setdefault(point, []).append(int(ns) / 1e9)
    for times in marks.values():
        times.sort()
    durations: dict[str, list[float]] = {label: [] for _, label in TRACE_STEPS}
    for sent, arrived in spans:
        previous, row = sent, []
        for point, label in TRACE_STEPS:
            if point:
                times = marks.get(point, [])
                at = bisect.bisect_left(times, previous)
                if at == len(times) or times[at] > arrived:
                    break
                now = times[at]
            else:
                now = arrived
            row.append((label, (now - previous) * 1000))
            previous = now
        else:
            for label, ms in row:
                durations[label].append(ms)
    return {label: round(statistics.median(ms), 3) for label, ms in durations.items() if ms}


# --------------------------------------------------------------------------- 2. throughput
def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarise_profile(path: Path, seconds: float, rate: int) -> dict[str, Any]:
    """Top self (leaf) and inclusive frames of a py-spy raw (collapsed stacks) file."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    if path.exists():
        for text in path.read_text(errors="replace").splitlines():
            stack, _, count_text = text.rpartition(" ")
            if not count_text.isdigit() or not stack:
                continue
            count = int(count_text)
            total += count
            frames = [short_frame(frame) for frame in stack.split(";")]
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count
    expected = seconds * rate
    return {
        "samples": total, "busy_fraction": round(total / expected, 3) if expected else None,
        "top_self": [(frame, round(100 * n / total, 1)) for frame, n in own.most_common(12)]
        if total else [],
        "top_inclusive": [(frame, round(100 * n / total, 1))
                          for frame, n in inclusive.most_common(25)] if total else [],
    }


def short_frame(frame: str) -> str:
    """`func (/long/path/pkg/mod.py:12)` -> `func (pkg/mod.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(where).parts
    for anchor in ("site-packages", "lib"):
        if anchor in parts:
            parts = parts[len(parts) - parts[::-1].index(anchor):]
            break
    else:
        parts = parts[-2:]
    return f"{name} ({'/'.join(parts)})" if where else name


async def throughput(ctx: Context) -> dict[str, Any]:
    size = ctx.sizes
    env = {"BRIDGE_ROOM": "tput"}
    result: dict[str, Any] = {}
    client = ctx.redis.client()
    async with anyio.create_task_group() as tg:
        alice = await ctx.procs.agent(tg, "talice", ctx.redis.url, ctx.tmp, env=env)
        bob = await ctx.procs.agent(tg, "tbob", ctx.redis.url, ctx.tmp, env=env)
        for i in range(20):  # warm up
            await alice.tool("send_message", to="tbob", text=f"w{i}")
        await bob.wait_messages(20, timeout=10)
        base = len(bob.message_times)
        texts = [f"t{i}" for i in range(size.throughput)]
        pids = {"A": alice.process.pid, "B": bob.process.pid,
                "redis": ctx.redis.process.pid if ctx.redis.process else 0,
                "client": os.getpid()}  # this harness: the MCP client of A and of B
        cpu_before = {who: cpu_seconds(pid) for who, pid in pids.items()}
        client.config_resetstat()
        started = time.perf_counter()
        sent, errors, call_ms = await send_windowed(alice, "tbob", texts, size.window)
        calls_done = time.perf_counter()
        complete = await wait_count(bob, base + sent, timeout=60 + sent / 200)
        # CPU time per message holds on a busy machine, where msg/s does not
        cpu_us = {who: round(1e6 * (cpu_seconds(pid) - cpu_before[who]) / max(sent, 1), 1)
                  for who, pid in pids.items()}
        last = bob.message_times[-1] if len(bob.message_times) > base else calls_done
        seconds = last - started
        delivery = check_delivery(bob, "talice", texts)
        fcall = client.info("commandstats").get("cmdstat_fcall", {})
        result = {"messages": sent, "window": size.window, "seconds": seconds,
                  "fcall_us": fcall.get("usec_per_call"),
                  "msg_per_s": delivery["delivered"] / seconds, "errors": errors[:5],
                  "calls_per_s": sent / (calls_done - started), "complete": complete,
                  "cpu_us_per_message": cpu_us,
                  "tool_call_ms": summary(call_ms), **delivery}
        print(f"  {sent} messages, window {size.window}: {result['msg_per_s']:.0f} msg/s "
              f"delivered to B (calls returned at {result['calls_per_s']:.0f}/s); "
              f"lost {delivery['lost']}, duplicates {delivery['duplicates']}, "
              f"order {'kept' if delivery['order_ok'] else 'BROKEN'}")
        print(line("tool call (in flight)", result["tool_call_ms"]))
        print("  CPU per message: " + ", ".join(f"{who} {us:.0f} µs" for who, us in
                                                  cpu_us.items())
              + f"; the send function in Redis {result['fcall_us']} µs a call (commandstats)")
        if ctx.profile:
            result["profile"] = await profile_pass(ctx, alice, bob)
        await ctx.procs.stop_agents([alice, bob])
        tg.cancel_scope.cancel()
    client.close()
    result["floor"] = await anyio.to_thread.run_sync(pubsub_throughput_floor, ctx,
                                                     size.throughput)
    print(f"  floor: redis-py PUBLISH (32 in a pipeline) -> SUBSCRIBE in another process: "
          f"{result['floor']['msg_per_s']:,.0f} msg/s")
    return result


def pubsub_throughput_floor(ctx: Context, count: int) -> dict[str, Any]:
    """The throughput floor: `count` PUBLISHes from here, 32 to a pipeline, to a redis-py
    subscriber process that says when it has the last one."""
    import redis

    channel = "floor:tput"
    sub = ctx.procs.popen([sys.executable, "-c", THROUGHPUT_SUBSCRIBER, str(ctx.redis.port),
                           channel, str(count)], stdout=subprocess.PIPE, text=True)
    assert sub.stdout is not None
    assert sub.stdout.readline().strip() == "ready"
    client = redis.Redis(port=ctx.redis.port, socket_timeout=10)
    started = time.perf_counter()
    for first in range(0, count, 32):
        pipe = client.pipeline(transaction=False)
        for i in range(first, min(count, first + 32)):
            pipe.publish(channel, f"t{i}")
        pipe.execute()
    done = sub.stdout.readline().strip()
    seconds = time.perf_counter() - started
    sub.wait(10)
    client.close()
    return {"messages": count, "seconds": seconds, "msg_per_s": count / seconds,
            "subscriber": done}


# the start of a floor subscriber process: argv port, channel; prints "ready" once subscribed
SUBSCRIBED = r"""
import sys, redis
p = redis.Redis(port=int(sys.argv[1])).pubsub(ignore_subscribe_messages=True)
p.subscribe(sys.argv[2])
while not p.subscribed or p.get_message(timeout=0.05) is not None:
    pass
print("ready", flush=True)
"""

THROUGHPUT_SUBSCRIBER = SUBSCRIBED + r"""
got = 0
while got < int(sys.argv[3]):
    if p.get_message(timeout=10) is not None:
        got += 1
print(f"got {got}", flush=True)
"""


async def profile_pass(ctx: Context, alice: Agent, bob: Agent) -> dict[str, Any]:
    """A second pass, with py-spy sampling A's and B's server processes."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        print("  (--profile: py-spy is not installed; `.venv/bin/pip install py-spy`)")
        return {"skipped": "py-spy not installed"}
    seconds, rate = ctx.sizes.profile_seconds, 200
    outputs = {"sender": ctx.tmp / "pyspy-sender.txt", "receiver": ctx.tmp / "pyspy-receiver.txt"}
    spies = {role: ctx.procs.popen(
        [str(py_spy), "record", "-d", str(int(max(1, seconds))), "-r", str(rate), "-p",
         str(agent.process.pid), "-f", "raw", "-o", str(outputs[role]), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for role, agent in (("sender", alice), ("receiver", bob))}
    await anyio.sleep(0.5)  # py-spy attaches
    stop = anyio.Event()
    base = len(bob.message_times)

    async def watch() -> None:
        deadline = time.monotonic() + seconds + 30
        while any(s.poll() is None for s in spies.values()) and time.monotonic() < deadline:
            await anyio.sleep(0.1)
        stop.set()

    texts = [f"p{i}" for i in range(1_000_000)]
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        sent, _, _ = await send_windowed(alice, "tbob", texts, ctx.sizes.window, stop)
    await wait_count(bob, base + sent, timeout=60)
    rate_seen = (len(bob.message_times) - base) / (bob.message_times[-1] - started)
    profile: dict[str, Any] = {"seconds": seconds, "rate_hz": rate,
                               "msg_per_s_while_profiled": rate_seen}
    for role, spy in spies.items():
        _, err = await anyio.to_thread.run_sync(lambda s=spy: s.communicate(timeout=30))
        profile[role] = summarise_profile(outputs[role], seconds, rate)
        if not profile[role]["samples"]:
            profile[role]["error"] = (err or b"").decode(errors="replace")[-500:]
        busy = profile[role]["busy_fraction"]
        print(f"  py-spy {role}: {profile[role]['samples']} samples, busy ~{busy}; top self:")
        for frame, pct in profile[role]["top_self"][:6]:
            print(f"      {pct:5.1f}%  {frame}")
    return profile


# --------------------------------------------------------------------------- 3. fan-out
async def fanout(ctx: Context) -> dict[str, Any]:
    size = ctx.sizes
    env = {"BRIDGE_ROOM": "fan"}
    results: dict[str, Any] = {}
    async with anyio.create_task_group() as tg:
        sender = await ctx.procs.agent(tg, "fsend", ctx.redis.url, ctx.tmp, env=env)
        receivers: list[Agent] = []
        starting_slots = anyio.Semaphore(16)  # concurrent, but not 100 imports on 2 cores
        sent = 0
        for n in size.fanout:
            started = time.perf_counter()
            new: list[Agent] = []

            async def start(name: str, new: list[Agent] = new) -> None:
                async with starting_slots:
                    new.append(await ctx.procs.agent(tg, name, ctx.redis.url, ctx.tmp,
                                                     env=env, timeout=120))

            async with anyio.create_task_group() as starting:
                for k in range(len(receivers), n):
                    starting.start_soon(start, f"f{k:03d}")
            receivers += new
            start_s = time.perf_counter() - started
            samples: list[float] = []
            lost = 0
            cpu_before = sum(cpu_seconds(r.process.pid) for r in receivers)
            for b in range(size.broadcasts + 3):  # the first 3 warm up
                bases = [len(r.message_times) for r in receivers]
                request_id = next_id()
                t0 = time.perf_counter()
                await sender.send_request(request_id, "tools/call", send_params("*", f"b{sent}"))
                sent += 1
                ok = True
                with anyio.move_on_after(30):
                    for r, base in zip(receivers, bases, strict=True):
                        ok = await wait_count(r, base + 1, timeout=30) and ok
                got = [r for r, base in zip(receivers, bases, strict=True)
                       if len(r.message_times) > base]
                lost += len(receivers) - len(got)
                await sender.response(request_id, timeout=30)
                if b >= 3 and got:
                    samples.append((max(r.message_times[base] for r, base in
                                        zip(receivers, bases, strict=True)
                                        if len(r.message_times) > base) - t0) * 1000)
            stats = summary(samples)
            # the receivers' CPU per broadcast, each: what n of them cost on this many cores
            cpu_us = 1e6 * (sum(cpu_seconds(r.process.pid) for r in receivers) - cpu_before) / (
                (size.broadcasts + 3) * len(receivers))
            results[str(n)] = {"agents": n, "time_to_last": stats, "lost": lost,
                               "start_all_s": start_s, "receiver_cpu_us": cpu_us}
            print(line(f"broadcast to {n}: time until the last has it", stats)
                  + f"  lost {lost}  (started {n - len(receivers) + len(new)} agents "
                  f"in {start_s:.1f} s)")
        await ctx.procs.stop_agents([sender, *receivers], timeout=20)
        tg.cancel_scope.cancel()
    for n in size.fanout:
        stats, floor_cpu = await fanout_floor(ctx, n)
        results[str(n)]["floor_time_to_last"] = stats
        results[str(n)]["floor_subscriber_cpu_us"] = floor_cpu
        print(line(f"floor: redis-py PUBLISH to {n} subscriber processes, until the last "
                   f"has written it to its pipe", stats))
    return results


FANOUT_SUBSCRIBER = SUBSCRIBED + r"""
for m in p.listen():
    if m["type"] == "message":
        sys.stdout.write(m["data"].decode() + "\n")
        sys.stdout.flush()
"""


async def fanout_floor(ctx: Context, n: int) -> tuple[dict[str, Any], float]:
    """The same broadcast with nothing of bridge in it: one PUBLISH to n redis-py subscriber
    processes, each writing the message to its stdout pipe, read here as the agents' pipes
    are. It is what n processes waking up on 2 cores cost by themselves. Returns the times
    and each subscriber's CPU per broadcast (µs)."""
    floor = FloorSubscribers(n)
    client = Redis.from_url(ctx.redis.url)
    try:
        async with anyio.create_task_group() as tg:
            await floor.start(tg, ctx.redis.port)
            pids = [process.pid for process in floor.processes]
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
            samples = await floor.broadcasts(client, ctx.sizes.broadcasts)
            cpu_us = 1e6 * (sum(cpu_seconds(pid) for pid in pids) - cpu_before) / (
                (ctx.sizes.broadcasts + 3) * n)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await floor.stop()
            await client.aclose()
    return summary(samples), cpu_us


class FloorSubscribers:
    CHANNEL = "fanout:floor"

    def __init__(self, n: int) -> None:
        self.n = n
        self.processes: list[Any] = []
        self.arrivals: list[dict[str, float]] = [{} for _ in range(n)]
        self.changed = anyio.Event()

    async def start(self, tg: Any, port: int) -> None:
        for index in range(self.n):
            process = await anyio.open_process(
                [sys.executable, "-c", FANOUT_SUBSCRIBER, str(port), self.CHANNEL],
                stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.processes.append(process)
            ready = anyio.Event()
            tg.start_soon(self.read, index, process, ready)
            with anyio.fail_after(60):
                await ready.wait()

    async def read(self, index: int, process: Any, ready: anyio.Event) -> None:
        reader = BufferedByteReceiveStream(process.stdout)
        while True:
            text = (await reader.receive_until(b"\n", 1 << 16)).decode()
            if text == "ready":
                ready.set()
                continue
            self.arrivals[index][text] = time.perf_counter()
            self.changed.set()
            self.changed = anyio.Event()

    async def broadcasts(self, client: Redis, count: int) -> list[float]:
        samples = []
        for b in range(count + 3):  # the first 3 warm up
            text = f"f{b}"
            started = time.perf_counter()
            await client.publish(self.CHANNEL, text)
            with anyio.fail_after(30):
                while not all(text in got for got in self.arrivals):
                    await self.changed.wait()
            if b >= 3:
                samples.append((max(got[text] for got in self.arrivals) - started) * 1000)
        return samples

    async def stop(self) -> None:
        for process in self.processes:
            process.kill()
        for process in self.processes:
            await process.aclose()


# --------------------------------------------------------------------------- 4. presence
async def presence(ctx: Context) -> dict[str, Any]:
    size = ctx.sizes
    room = "scale"
    batch_size = 50
    client = Redis.from_url(ctx.redis.url, max_connections=batch_size * 2)
    # open the pool's connections first, so INFO's used_memory delta is the agents' keys and
    # not the new connections' buffers
    await asyncio.gather(*(client.ping() for _ in range(batch_size)))
    results: dict[str, Any] = {}
    holders: list[Presence] = []
    try:
        async with anyio.create_task_group() as tg:
            # unsigned, as the memory target was set: a signed record's `sig` (98 bytes) takes
            # the hash past hash-max-listpack-value, 359 -> 1,014 B at 1,000 agents (measured)
            observer = await ctx.procs.agent(tg, "observer", ctx.redis.url, ctx.tmp,
                                             env={"BRIDGE_ROOM": room, "BRIDGE_SECRET": ""})
            for n in size.presence:
                before = int((await client.info("memory"))["used_memory"])
                added = 0
                while len(holders) < n:
                    batch = []
                    for i in range(len(holders), min(n, len(holders) + batch_size)):
                        settings = Settings.from_env({}, redis=ctx.redis.url, name=f"p{i}",
                                                     ttl="600", room=room)
                        batch.append(Presence(client, settings))
                    await asyncio.gather(*(p.claim() for p in batch))
                    holders += batch
                    added += len(batch)
                after = int((await client.info("memory"))["used_memory"])
                keys = holders[0].keys
                hash_bytes = int(await client.memory_usage(keys.agent("p0"), samples=0) or 0)
                cursor_bytes = int(await client.memory_usage(keys.cursor("p0"), samples=0) or 0)
                zset_bytes = int(await client.memory_usage(keys.agents, samples=0) or 0)
                members = int(await client.zcard(keys.agents))
                for _ in range(3):
                    await observer.tool("list_participants", timeout=30)
                samples = []
                for _ in range(size.list_calls if n <= 1000 else max(3, size.list_calls // 3)):
                    t0 = time.perf_counter()
                    text = await observer.tool("list_participants", timeout=30)
                    samples.append((time.perf_counter() - t0) * 1000)
                listed = int(text.split(": ", 1)[1].split(" ", 1)[0])
                stats = summary(samples)
                per_agent = hash_bytes + zset_bytes / members
                results[str(n)] = {
                    "agents": n, "listed": listed, "list_participants": stats,
                    "memory_usage_hash": hash_bytes, "memory_usage_cursor": cursor_bytes,
                    "zset_share": zset_bytes / members,
                    "per_agent_memory_usage": per_agent,
                    "per_agent_with_cursor": per_agent + cursor_bytes,
                    "info_delta_per_agent": (after - before) / added,
                }
                print(line(f"list_participants at {n} agents (listed {listed})", stats))
                print(f"    memory per agent: MEMORY USAGE hash {hash_bytes} B + zset share "
                      f"{zset_bytes / members:.0f} B = {per_agent:.0f} B (+ cursor key "
                      f"{cursor_bytes} B); INFO used_memory delta / N "
                      f"{(after - before) / added:.0f} B")
                if ctx.profile and n == max(size.presence):
                    results[str(n)]["profile"] = await profile_list(ctx, observer)
            await ctx.procs.stop_agents([observer])
            tg.cancel_scope.cancel()
    finally:
        with contextlib.suppress(Exception):
            for start in range(0, len(holders), batch_size):
                await asyncio.gather(*(p.leave() for p in holders[start:start + batch_size]))
        await client.aclose()
    return results


async def profile_list(ctx: Context, observer: Agent) -> dict[str, Any]:
    """py-spy the observer's server while it answers list_participants in a loop."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        return {"skipped": "py-spy not installed"}
    seconds, rate = max(1, int(ctx.sizes.profile_seconds) - 2), 200
    output = ctx.tmp / "pyspy-list.txt"
    spy = ctx.procs.popen(
        [str(py_spy), "record", "-d", str(seconds), "-r", str(rate), "-p",
         str(observer.process.pid), "-f", "raw", "-o", str(output), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await anyio.sleep(0.5)
    deadline = time.monotonic() + seconds + 30
    while spy.poll() is None and time.monotonic() < deadline:
        await observer.tool("list_participants", timeout=30)
    await anyio.to_thread.run_sync(lambda: spy.wait(30))
    result = summarise_profile(output, seconds, rate)
    print(f"    py-spy list_participants: {result['samples']} samples, busy "
          f"~{result['busy_fraction']}; top self:")
    for frame, pct in result["top_self"][:6]:
        print(f"      {pct:5.1f}%  {frame}")
    return result


# --------------------------------------------------------------------------- 5. start-up
def import_time() -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import bridge.mcp.server"],
                          capture_output=True, text=True, timeout=60)
    wall = (time.perf_counter() - started) * 1000
    total_us = 0
    top: list[tuple[int, str]] = []
    server_us = 0
    for text in done.stderr.splitlines():
        if not text.startswith("import time:") or "self [us]" in text:
            continue
        own, cumulative, name = text[len("import time:"):].split("|")
        total_us += int(own)
        if not name.startswith("  "):  # a top-level import
            top.append((int(cumulative), name.strip()))
        if name.strip() == "bridge.mcp.server":
            server_us = int(cumulative)
    top.sort(reverse=True)
    return {"total_ms": total_us / 1000, "bridge_server_cumulative_ms": server_us / 1000,
            "wall_ms_python_c": wall,
            "top_level": [(name, us / 1000) for us, name in top[:8]]}


async def startup(ctx: Context) -> dict[str, Any]:
    client = Redis.from_url(ctx.redis.url)
    init_ms: list[float] = []
    presence_ms: list[float] = []
    try:
        for i in range(ctx.sizes.startups):
            name = f"s{i}"
            key = f"bridge:{{start}}:agent:{name}"
            seen: list[float] = []

            async def poll(key: str = key, seen: list[float] = seen) -> None:
                deadline = time.monotonic() + 30
                while not await client.hexists(key, "name"):
                    if time.monotonic() > deadline:
                        return
                    await anyio.sleep(0.0005)
                seen.append(time.perf_counter())

            async with anyio.create_task_group() as tg:
                tg.start_soon(poll)
                await anyio.sleep(0.01)
                t0 = time.perf_counter()
                agent = await ctx.procs.agent(tg, name, ctx.redis.url, ctx.tmp,
                                              env={"BRIDGE_ROOM": "start"}, timeout=30)
                init_ms.append((time.perf_counter() - t0) * 1000)
                with anyio.fail_after(30):
                    while not seen:
                        await anyio.sleep(0.001)
                presence_ms.append((seen[0] - t0) * 1000)
                await ctx.procs.stop_agents([agent])
                tg.cancel_scope.cancel()
    finally:
        await client.aclose()
    imports = await anyio.to_thread.run_sync(import_time)
    result = {"initialize_ms": summary(init_ms), "presence_ms": summary(presence_ms),
              "import": imports}
    print(line("exec -> initialize answered", result["initialize_ms"]))
    print(line("exec -> presence visible in Redis", result["presence_ms"]))
    print(f"  python -X importtime -c 'import bridge.mcp.server': {imports['total_ms']:.0f} ms "
          f"of imports (bridge.mcp.server cumulative {imports['bridge_server_cumulative_ms']:.0f} "
          f"ms); top: " + ", ".join(f"{n} {ms:.0f}" for n, ms in imports["top_level"][:5]))
    return result


# --------------------------------------------------------------------------- 6. catch-up
CATCHUP_STALL_S = 10.0  # no new message for this long: the rest is not coming


def catchup_setup(count: int) -> dict[str, str]:
    """The room's settings for the catch-up scenario, written down in its figures.

    What it measures is the reader, so the setup must put all `count` messages in the log:
    a cap of its own well above `count` (not the default 10,000, nor whatever retention does
    to a log at its cap), and a writer without the per-sender rate limit (at the default
    5,000/s in bursts of 5,000, a writer faster than ~10,000 msg/s has sends refused, and a
    refused message is never waiting)."""
    return {"BRIDGE_ROOM": "catch", "BRIDGE_LOG_MAXLEN": str(max(2 * count, 1000))}


async def logged_texts(client: Redis, room: str, sender: str, to: str) -> list[str]:
    """The texts the log holds from `sender` to `to`, in log order: what is waiting."""
    from bridge.room.envelope import decode_entry
    from bridge.room.keys import Keys

    texts: list[str] = []
    start = "-"
    while True:
        page = await client.xrange(Keys(room).log, start, "+", count=1000)
        for entry_id, fields in page:
            envelope = decode_entry(entry_id, fields)
            if envelope.sender == sender and to in envelope.to:
                texts.append(envelope.text)
        if len(page) < 1000:
            return texts
        start = f"({page[-1][0].decode()}"


async def wait_delivered(agent: Agent, count: int, stall: float, deadline: float) -> bool:
    """Until `count` messages have come, or none came for `stall` seconds: a lost message is
    reported at once, not after a deadline sized for the slowest machine."""
    end = time.perf_counter() + deadline
    while len(agent.message_times) < count:
        had = len(agent.message_times)
        try:
            await agent.wait_for(lambda had=had: len(agent.message_times) > had,
                                 min(stall, max(0.0, end - time.perf_counter())),
                                 "the next message")
        except TimeoutError:
            return False
    return True


async def catchup(ctx: Context) -> dict[str, Any]:
    count = ctx.sizes.catchup
    env = catchup_setup(count)
    writer_env = {**env, "BRIDGE_RATE": "0"}  # setup, not measured: no send refused
    client = Redis.from_url(ctx.redis.url)
    try:
        async with anyio.create_task_group() as tg:
            bob = await ctx.procs.agent(tg, "cbob", ctx.redis.url, ctx.tmp, env=env)
            await ctx.procs.stop_agents([bob])
            alice = await ctx.procs.agent(tg, "calice", ctx.redis.url, ctx.tmp, env=writer_env)
            texts = [f"c{i}" for i in range(count)]
            written = time.perf_counter()
            sent, errors, _ = await send_windowed(alice, "cbob", texts, ctx.sizes.window)
            write_s = time.perf_counter() - written
            await ctx.procs.stop_agents([alice])
            waiting = await logged_texts(client, env["BRIDGE_ROOM"], "calice", "cbob")
            t0 = time.perf_counter()
            bob = await ctx.procs.agent(tg, "cbob", ctx.redis.url, ctx.tmp, env=env)
            initialized = time.perf_counter()
            pushes = len(waiting)
            while True:
                complete = await wait_delivered(bob, pushes, CATCHUP_STALL_S,
                                                deadline=60 + count / 100)
                delivery = check_delivery(bob, "calice", waiting)
                if not (complete and delivery["lost"] and delivery["duplicates"]):
                    break
                pushes = len(bob.message_times) + delivery["lost"]  # duplicates came first
            last = bob.message_times[-1] if bob.message_times else time.perf_counter()
            await ctx.procs.stop_agents([bob])
            tg.cancel_scope.cancel()
    finally:
        await client.aclose()
    result = {"messages": count, "log_maxlen": int(env["BRIDGE_LOG_MAXLEN"]),
              "writer_rate_limit": writer_env["BRIDGE_RATE"],
              "sent": sent, "refused": len(errors), "waiting": len(waiting),
              "write_s": write_s, "errors": errors[:5], "complete": complete,
              "from_exec_s": last - t0, "from_initialize_s": last - initialized,
              "msg_per_s": delivery["delivered"] / max(1e-9, last - initialized), **delivery}
    print("  " + catchup_text(result, bold=""))
    return result


async def _shards(ctx: Context) -> dict[str, Any]:
    from bench.shards import shards  # starts a cluster of its own

    return await shards(ctx)


SCENARIOS = {"latency": latency, "throughput": throughput, "fanout": fanout,
             "presence": presence, "startup": startup, "catchup": catchup, "shards": _shards,
             "durability": durability}


def new_tmp() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="bridge-bench-")
