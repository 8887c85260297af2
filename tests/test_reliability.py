"""Nothing lost, nothing twice: agent restarts, Redis restarts, broken connections, outages."""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
from typing import Any

import anyio
import pytest
import redis

from tests.support.mcp_client import CHANNEL, Agent, ToolError

pytestmark = pytest.mark.anyio

SLOW = {"BRIDGE_SEND_TIMEOUT": "30"}
# what a crash may repeat: one pipe write of push lines (docs/reliability.md)
PUSH_CHUNK_BYTES = 4096


async def stream(sender: Agent, to: str, prefix: str, count: int, *, window: int = 16,
                 on_sent=None) -> None:
    """Send `count` messages, keeping up to `window` calls in flight; all must succeed."""
    in_flight: list[int] = []
    base = 10_000
    for i in range(count):
        await sender.send_request(base + i, "tools/call", {
            "name": "send_message", "arguments": {"to": to, "text": f"{prefix}:{i}"}})
        in_flight.append(base + i)
        if len(in_flight) >= window:
            result = await sender.response(in_flight.pop(0), timeout=60)
            assert not result.get("isError"), result
        if on_sent:
            await on_sent(i + 1)
    for request_id in in_flight:
        result = await sender.response(request_id, timeout=60)
        assert not result.get("isError"), result


def check_exactly_once_in_order(received: list[str], senders: dict[str, int],
                                where: str = "") -> None:
    assert len(received) == len(set(received)), "duplicates: " + str(
        sorted({m for m in received if received.count(m) > 1})[:10]) + where
    for prefix, count in senders.items():
        mine = [int(m.split(":")[1]) for m in received if m.startswith(prefix + ":")]
        assert mine == list(range(count)), f"{prefix}: lost or reordered"


def contents(*incarnations: Agent) -> list[str]:
    return [m["content"] for agent in incarnations for m in agent.channel()]


def pushed_lines(agent: Agent) -> list[tuple[str, int]]:
    """Each message pushed on stdout, in order: its text and the bytes of its line (with the
    newline), as they came through the pipe."""
    pushed = []
    for line in agent.raw_stdout:
        message = json.loads(line)
        if message.get("method") == CHANNEL and message["params"]["meta"]["kind"] == "message":
            pushed.append((message["params"]["content"], len(line) + 1))
    return pushed


async def wait_logged(agent: Agent, event: str, count: int, timeout: float = 30) -> None:
    """Until ``agent`` has logged ``event`` ``count`` times (stderr is a file: polled, with a
    deadline)."""
    with anyio.fail_after(timeout):
        while sum(e.get("event") == event for e in agent.log_events()) < count:
            assert agent.process.returncode is None, agent.stderr()[-2000:]
            await anyio.sleep(0.02)


async def test_receiver_sigkilled_twice_gets_everything_once(agents):
    bob = await agents.start("bob")
    senders = [await agents.start(name, env=dict(SLOW)) for name in ("s1", "s2")]
    incarnations = [bob]
    progress = {"s1": 0, "s2": 0}
    kill_points = [700, 1400]  # messages sent (by both senders), not received: a crash
    killed = anyio.Event()     # is not timed by bob's own pushes

    restarting = anyio.Lock()

    async def sent_by(name: str, count: int) -> None:
        progress[name] = count
        async with restarting:  # one kill and restart at a time
            if kill_points and sum(progress.values()) >= kill_points[0]:
                kill_points.pop(0)
                current = incarnations[-1]
                # The kill comes from a timer thread, a few ms later: a crash is not timed by
                # bob's own pipe writes (which wake this process, the pipe's reader).
                threading.Timer(random.uniform(0.001, 0.02), current.process.kill).start()
                await current.wait_exit()
                incarnations.append(await agents.start("bob"))
                if not kill_points:
                    killed.set()

    async with anyio.create_task_group() as tg:
        for sender in senders:
            tg.start_soon(lambda s=sender: stream(
                s, "bob", s.name, 1000, on_sent=lambda n, s=s: sent_by(s.name, n)))
    await killed.wait()
    last = incarnations[-1]
    await last.wait_for(lambda: len(set(contents(*incarnations))) >= 2000, timeout=60,
                        what="all 2000 messages")
    assert len(incarnations) == 3
    where = " | " + " | ".join(
        f"#{n}: {len(a.channel())} from {a.channel()[0]['content']} to "
        f"{a.channel()[-1]['content']}" for n, a in enumerate(incarnations) if a.channel())
    # A crash can land in the microseconds between a push reaching the pipe and the cursor
    # write leaving (no client acknowledges a push, so no server can close that gap).
    # docs/reliability.md allows exactly that: the dead process's last chunk of at most 4 KiB
    # of push lines, shown again, first, by its successor. So what a successor repeats must be a
    # prefix of its pushes that is the very tail of its predecessor's, and at most 4 KiB.
    received = contents(incarnations[0])
    for earlier, later in zip(incarnations, incarnations[1:], strict=False):
        before, after = pushed_lines(earlier), pushed_lines(later)
        shown = {text for text, _ in before}
        repeated = [n for n, (text, _) in enumerate(after) if text in shown]
        assert repeated == list(range(len(repeated))), f"repeats not at the head{where}"
        k = len(repeated)
        assert [text for text, _ in after[:k]] == [text for text, _ in before[len(before) - k:]], \
            f"the repeats are not the tail of the dead process's pushes{where}"
        assert sum(size for _, size in after[:k]) <= PUSH_CHUNK_BYTES, \
            f"{k} repeated pushes, over {PUSH_CHUNK_BYTES} bytes{where}"
        received += [text for text, _ in after[k:]]
    check_exactly_once_in_order(received, {"s1": 1000, "s2": 1000}, where)


async def test_redis_sigkilled_and_restarted_three_times(agents, redis_server, r):
    # appendfsync always: with everysec, while a background fsync is still running (a busy
    # disk: this suite on four workers), Redis postpones writing its AOF buffer for up to
    # 2 s and still answers, so a SIGKILL then loses writes it acknowledged. That is the
    # likely cause (not reproduced since) of bob once missing messages alice was told were
    # sent, in a loaded run. This test is about the agents riding out restarts.
    r.config_set("appendfsync", "always")
    alice = await agents.start("alice", env=dict(SLOW))
    bob = await agents.start("bob")
    total = 400
    kills = 0

    async def outage(sent: int) -> None:
        nonlocal kills
        if sent in (100, 200, 300):
            redis_server.stop()  # SIGKILL
            redis_server.start("--appendfsync", "always")  # same port, same AOF file
            kills += 1
            # Both agents are back (resubscribed, claimed again) before the next kill: a kill
            # that lands while one still reconnects would test something else.
            for agent in (alice, bob):
                await wait_logged(agent, "reconnected", kills)
            # presence is back: both agents are listed again
            listing = await alice.tool("list_participants", timeout=30)
            assert "alice (you)" in listing and "bob" in listing

    await stream(alice, "bob", "a", total, window=1, on_sent=outage)
    try:
        await bob.wait_messages(total, timeout=60)
    except TimeoutError:
        got = contents(bob)
        raise AssertionError(f"bob has {len(got)} of {total} (last {got[-3:]}); his log: "
                             + bob.stderr()[-3000:]) from None
    check_exactly_once_in_order(contents(bob), {"a": total})
    assert r.exists("bridge:{main}:agent:bob") and r.exists("bridge:{main}:agent:alice")
    reconnects = [e for e in bob.log_events() if e["event"] == "reconnected"]
    assert len(reconnects) >= 3


SCRIPT_COMMANDS = ("evalsha", "eval", "fcall", "evalsha_ro", "eval_ro", "fcall_ro")


def local_ports(pid: int) -> set[int]:
    """The local ports of a process's TCP sockets (Linux /proc): which of Redis' clients
    are that process's connections."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                columns = row.split()
                if columns[9] in inodes:
                    ports.add(int(columns[1].rsplit(":", 1)[1], 16))
    return ports


def script_calls(r: redis.Redis) -> int:
    stats: dict[str, Any] = r.info("commandstats")  # type: ignore[assignment]
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in SCRIPT_COMMANDS)


async def poll(predicate: Any, what: str, timeout: float = 15) -> Any:
    with anyio.fail_after(timeout):
        while not (value := predicate()):
            await anyio.sleep(0.01)  # poll interval, bounded by the deadline
    return value


async def test_a_lost_reply_is_retried_without_logging_the_message_twice(agents, redis_server,
                                                                          r):
    """Issue 11 item 18: the send script runs, then its reply is lost with the connection;
    the retry must return the first attempt's id (the sent:{name}:{nonce} key), not log the
    message again.

    Made certain, not left to luck: CLIENT PAUSE WRITE holds alice's send in Redis, postponed;
    a MULTI with a write and CLIENT KILL of her connection, written at once, is postponed
    behind it. When the pause ends Redis runs both in that order in one pass, so her script
    has run and her connection is gone before Redis writes the reply. Five rounds, each with
    more sends queued behind the lost one; each round checks that a reply was lost (her
    script ran once more than she sent)."""
    alice = await agents.start("alice", "--ttl", "60", env=dict(SLOW))
    bob = await agents.start("bob", "--ttl", "60")
    await alice.tool("send_message", to="bob", text="warm-up")  # the script is loaded
    await bob.wait_messages(1)
    killer = redis.Redis(port=redis_server.port, socket_timeout=30,
                         single_connection_client=True)
    killer_id = str(killer.client_id())
    texts, lost = ["warm-up"], 0
    for round_ in range(5):
        calls_before = script_calls(r)
        r.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
        try:
            requests = []
            for i in range(6):
                texts.append(f"round {round_} message {i}")
                requests.append(1000 + 10 * round_ + i)
                await alice.send_request(requests[-1], "tools/call", {
                    "name": "send_message", "arguments": {"to": "bob", "text": texts[-1]}})
            victims = await poll(lambda: [
                c["id"] for c in r.client_list()
                if "b" in c["flags"] and c["cmd"] in SCRIPT_COMMANDS
                and int(c["addr"].rsplit(":", 1)[1]) in local_ports(alice.process.pid)],
                "alice's send held by the pause")

            def kill_behind_it(victims: list[str] = victims, round_: int = round_) -> Any:
                # One write: the SET is held by the pause with the rest of the MULTI behind it
                # in the query buffer, so the kill runs in the same pass as alice's script.
                commands = [("MULTI",), ("SET", "bridge-test:kill", round_),
                            *[("CLIENT", "KILL", "ID", v) for v in victims], ("EXEC",)]
                connection = killer.connection
                assert connection is not None
                connection.send_packed_command(connection.pack_commands(commands))
                return [connection.read_response() for _ in commands][-1]

            killed: list[Any] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(_append, killed, anyio.to_thread.run_sync(kill_behind_it))
                await poll(lambda: any(c["id"] == killer_id and "b" in c["flags"]
                                       for c in r.client_list()), "the kill queued behind")
                r.execute_command("CLIENT", "UNPAUSE")
            assert killed == [[b"OK", *[1] * len(victims)]], killed  # SET, then each kill
            lost += len(victims)
        finally:
            r.execute_command("CLIENT", "UNPAUSE")
        for request_id in requests:
            result = await alice.response(request_id, timeout=60)
            assert not result.get("isError"), result
        # her script ran before the kill and once more on the retry: a call more than sends
        calls = script_calls(r)
        assert calls - calls_before >= len(requests) + len(victims), "no reply was lost"
    assert lost >= 5
    logged = [fields[b"text"].decode() for _, fields in r.xrange("bridge:{main}:log")]
    assert logged == texts, "a retried send was logged twice (or lost)"
    await bob.wait_messages(len(texts), timeout=30)
    assert contents(bob) == texts


async def _append(into: list[Any], awaitable: Any) -> None:
    into.append(await awaitable)


async def test_broken_connections_without_killing_redis(agents, r):
    alice = await agents.start("alice", env=dict(SLOW))
    bob = await agents.start("bob")
    total = 300

    async def breakage(sent: int) -> None:
        if sent in (60, 180):
            assert r.client_kill_filter(_type="pubsub") >= 1
        if sent == 120:
            r.client_pause(1500)

    await stream(alice, "bob", "a", total, window=4, on_sent=breakage)
    await bob.wait_messages(total, timeout=60)
    check_exactly_once_in_order(contents(bob), {"a": total})
    assert any(e["event"] == "reconnected" for e in bob.log_events())


async def test_send_during_long_outage_fails_clearly_and_logs_nothing(agents, redis_server, r):
    alice = await agents.start("alice", env={"BRIDGE_SEND_TIMEOUT": "1.5"})
    await agents.start("bob")
    redis_server.stop()
    with pytest.raises(ToolError) as error:
        await alice.tool("send_message", to="bob", text="lost in the outage", timeout=30)
    assert "NOT sent" in str(error.value)
    with pytest.raises(ToolError, match="unreachable"):
        await alice.tool("list_participants", timeout=30)
    redis_server.start()
    texts = [fields[b"text"] for _, fields in r.xrange("bridge:{main}:log")]
    assert b"lost in the outage" not in texts  # no phantom success


async def test_send_during_short_outage_succeeds_when_redis_returns(agents, redis_server):
    alice = await agents.start("alice", env=dict(SLOW))
    bob = await agents.start("bob")
    redis_server.stop()
    async with anyio.create_task_group() as tg:
        await alice.send_request(5, "tools/call", {
            "name": "send_message", "arguments": {"to": "bob", "text": "patience"}})

        async def bring_back() -> None:
            # the call is in flight (Redis is down, it cannot have finished); restart
            with anyio.fail_after(10):
                while not any(e["event"] == "send_retry" for e in alice.log_events()):
                    await anyio.sleep(0.05)
            redis_server.start()

        tg.start_soon(bring_back)
        result = await alice.response(5, timeout=30)
    assert not result.get("isError"), result
    [push] = await bob.wait_messages(1, timeout=30)
    assert push["content"] == "patience"


async def test_expired_cursor_gives_one_notice(agents, r):
    # bob is away longer than the log holds his messages (BRIDGE_AWAY_HOLD; within it, the
    # log keeps them: tests/test_retention.py)
    env = {"BRIDGE_LOG_MAXLEN": "100", "BRIDGE_AWAY_HOLD": "1"}
    alice = await agents.start("alice", env=dict(env))
    bob = await agents.start("bob", env=dict(env))
    await bob.close_stdin()
    await bob.wait_exit()
    with anyio.fail_after(10):  # (real time must pass here)
        while r.zscore("bridge:{main}:readers", "bob") >= r.time()[0] * 1000 + r.time()[1] // 1000:
            await anyio.sleep(0.05)
    total = 400
    await stream(alice, "bob", "a", total, window=8)
    assert r.xlen("bridge:{main}:log") < total  # the log was trimmed

    bob_again = await agents.start("bob", env=dict(env))
    [notice] = await bob_again.wait_for(lambda: bob_again.channel("notice"), timeout=15)
    missing = int(notice["content"].split(" ")[0])
    assert "expired" in notice["content"] and notice["meta"]["from"] == "bridge"
    delivered = await bob_again.wait_messages(total - missing)
    numbers = [int(m["content"].split(":")[1]) for m in delivered]
    assert numbers == list(range(missing, total))  # the newest ones, in order, no gap after
    assert len(bob_again.channel("notice")) == 1


async def test_max_age_trims_old_entries(agents, r):
    env = {"BRIDGE_LOG_MAX_AGE": "1"}
    alice = await agents.start("alice", env=dict(env))
    await agents.start("bob", env=dict(env))
    await stream(alice, "bob", "old", 250, window=8)
    first_id = r.xrange("bridge:{main}:log", count=1)[0][0]
    # let the first entries grow older than the 1 s limit (real time must pass here)
    cutoff = int(first_id.split(b"-")[0]) + 1500
    with anyio.fail_after(10):
        while int(r.time()[0]) * 1000 + int(r.time()[1]) // 1000 < cutoff:
            await anyio.sleep(0.05)
    await alice.tool("send_message", to="bob", text="new")
    remaining = r.xrange("bridge:{main}:log", count=1)[0][0]
    assert remaining != first_id and r.xlen("bridge:{main}:log") < 251
