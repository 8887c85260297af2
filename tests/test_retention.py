"""Retention that honours readers (bridge/room/retention.py): the room log keeps what an agent
that holds it has not read, a send to an agent too far behind is refused before anything is
written, a broadcast says whom it was not queued for, and an agent away longer than
BRIDGE_AWAY_HOLD holds nothing and is told what it missed."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import redis

from tests.support.mcp_client import Agent, ToolError
from tests.test_reliability import stream

pytestmark = pytest.mark.anyio

LOG = "bridge:{main}:log"
BOUND = 150  # BRIDGE_BACKLOG_MAX
# small bounds, so that a test crosses them in a few hundred messages
ENV = {"BRIDGE_LOG_MAXLEN": "100", "BRIDGE_BACKLOG_MAX": str(BOUND),
       "BRIDGE_LOG_HARD_MAXLEN": "1000"}


def env(**extra: str) -> dict[str, str]:
    return {**ENV, **extra}


async def until(condition: Callable[[], Any], timeout: float = 15, what: str = "") -> Any:
    """Wait for a condition on Redis (no event tells us), with a deadline."""
    with anyio.fail_after(timeout):
        while not (value := condition()):
            await anyio.sleep(0.02)
    return value


def cursor_seq(r: redis.Redis, name: str) -> int:
    value = r.get(f"bridge:{{main}}:cursor:{name}")
    return int(value.split()[1]) if value else -1


async def stream_to(sender: Agent, reader: Agent, to: str, count: int) -> None:
    """``count`` messages "c:N" from sender to reader, paced by the reader: one that falls
    BOUND behind is refused, rightly, and with the suite on four workers over two cores a
    reader once fell 150 behind a sender with only 8 sends in flight."""
    start = len(reader.message_times)

    async def keep_pace(sent: int) -> None:
        if sent % 25 == 0:
            await reader.wait_messages(start + sent - BOUND // 3, timeout=30)

    await stream(sender, to, "c", count, window=8, on_sent=keep_pace)


def hold_lapsed(r: redis.Redis, name: str) -> bool:
    seconds, micros = r.time()
    until_ms = r.zscore("bridge:{main}:readers", name)
    return until_ms is None or until_ms < seconds * 1000 + micros // 1000


async def send_until_refused(sender: Agent, to: str, prefix: str, limit: int,
                             padding: str = "") -> tuple[list[str], str]:
    """Send ``prefix:i`` (a line, then ``padding``) one at a time until one is refused: the
    answers, and the refusal."""
    answers = []
    for i in range(limit):
        text = f"{prefix}:{i}\n{padding}" if padding else f"{prefix}:{i}"
        try:
            answers.append(await sender.tool("send_message", to=to, text=text))
        except ToolError as e:
            return answers, str(e)
    raise AssertionError(f"{limit} sends to {to}, none refused")


async def read_all(reader: Agent, count: int, timeout: float = 30) -> str:
    """read_messages until ``count`` messages came back (pull mode); then once more, which
    acknowledges the last answer."""
    text = ""
    with anyio.fail_after(timeout):
        while len(re.findall(r"^\[\d+-\d+\] from ", text, re.M)) < count:
            text += await reader.tool("read_messages", wait_seconds=5) + "\n"
    text += await reader.tool("read_messages", wait_seconds=0)
    return text


def numbers(text: str, prefix: str) -> list[int]:
    return [int(n) for n in re.findall(rf"^{prefix}:(\d+)$", text, re.M)]


async def test_a_stuck_reader_holds_the_log_then_holds_the_sender_back(agents, r):
    alice = await agents.start("alice", env=env())
    # pull mode, and read_messages not called: bob's cursor stays where it was
    bob = await agents.start("bob", "--delivery", "pull", env=env())
    answers, refusal = await send_until_refused(alice, "bob", "m", 3 * BOUND)

    # everything was kept while within the bound, well past BRIDGE_LOG_MAXLEN (100) ...
    assert len(answers) == BOUND
    assert all("Online, delivered now: bob" in answer for answer in answers)
    assert r.xlen(LOG) == BOUND
    assert r.xrange(LOG, count=1)[0][1][b"seq"] == b"1"
    # ... and past it the sender is told, and nothing was written
    assert f"bob is {BOUND} messages behind" in refusal, refusal
    assert f"BRIDGE_BACKLOG_MAX={BOUND}" in refusal and "Nothing was sent" in refusal
    assert r.xlen(LOG) == BOUND and r.get("bridge:{main}:seq") == str(BOUND).encode()

    # bob reads: every message alice was told was delivered, once, in order, no gap
    text = await read_all(bob, BOUND)
    assert numbers(text, "m") == list(range(BOUND))
    assert "[notice]" not in text
    assert not [e for e in bob.log_events() if e["event"] == "messages_expired"]
    # caught up, bob is sent to again
    await until(lambda: cursor_seq(r, "bob") == BOUND, what="bob's cursor")
    assert "delivered now: bob" in await alice.tool("send_message", to="bob", text="again")


async def test_a2_a_client_that_stops_reading_its_pushes_holds_the_sender_back(agents, r):
    # the case measured for issue 21: bob's client stops reading bob's stdout; the pipe
    # fills, the pushes stop, and bob's cursor with them
    alice = await agents.start("alice", env=env())
    bob = await agents.start("bob", env=env())
    bob.pause_reading()
    answers, refusal = await send_until_refused(alice, "bob", "m", 3000, padding="x" * 1000)
    assert "bob is" in refusal and f"BRIDGE_BACKLOG_MAX={BOUND}" in refusal
    assert len(answers) >= BOUND  # (and what filled the pipe before bob's cursor stopped)
    bob.resume_reading()
    delivered = await bob.wait_messages(len(answers), timeout=30)
    assert [m["content"].split("\n")[0] for m in delivered] == [
        f"m:{i}" for i in range(len(answers))]
    assert bob.channel("notice") == []


async def test_b_a_quiet_agent_is_not_behind_for_others_traffic(agents, r):
    alice = await agents.start("alice", env=env())
    bob = await agents.start("bob", "--delivery", "pull", env=env())
    carol = await agents.start("carol", env=env())
    dave = await agents.start("dave", env=env())
    # lots of traffic between others: bob's cursor stays at the start of the log
    await stream_to(carol, dave, "dave", 4 * BOUND)
    await dave.wait_messages(4 * BOUND, timeout=30)
    assert cursor_seq(r, "bob") == 0
    assert r.xlen(LOG) < 4 * BOUND  # bob, with nothing unread, did not keep it all
    # a broadcast bob has not read yet: he holds the log from there, not from his cursor
    assert "bob" in await carol.tool("send_message", to="*", text="standup in 5")
    answers, refusal = await send_until_refused(alice, "bob", "m", 3 * BOUND)
    assert "Online, delivered now: bob" in answers[0]
    assert len(answers) == BOUND - 1, refusal  # the broadcast and these make the bound
    assert f"bob is {BOUND} messages behind" in refusal

    text = await read_all(bob, BOUND)
    assert "standup in 5" in text and numbers(text, "m") == list(range(BOUND - 1))
    assert "[notice]" not in text


async def test_b2_a_broadcaster_is_not_behind_for_its_own_broadcasts(agents, r):
    # carol's cursor never passes her own messages: they must not count as unread for her
    alice = await agents.start("alice", env=env())
    bob = await agents.start("bob", env=env())
    carol = await agents.start("carol", "--delivery", "pull", env=env())
    for i in range(2 * BOUND):
        await carol.tool("send_message", to="*", text=f"b:{i}")
    await bob.wait_messages(2 * BOUND, timeout=30)
    assert r.xlen(LOG) < 2 * BOUND  # nobody held the log for carol's own broadcasts
    answers, refusal = await send_until_refused(alice, "carol", "m", 3 * BOUND)
    assert "Online, delivered now: carol" in answers[0]
    assert len(answers) == BOUND, refusal  # behind by alice's messages only
    assert f"carol is {BOUND} messages behind" in refusal


async def test_c_an_agent_away_longer_than_the_hold_is_told_what_it_missed(agents, r):
    alice = await agents.start("alice", env=env())
    bob = await agents.start("bob", env=env(BRIDGE_AWAY_HOLD="1"))
    await bob.close_stdin()
    await bob.wait_exit()
    await until(lambda: hold_lapsed(r, "bob"), what="bob's hold to lapse")

    first = await alice.tool("send_message", to="bob", text="m:0")
    assert "Not queued for bob: away longer than the room log holds" in first, first
    assert "queued until they return" not in first
    total = 3 * BOUND  # past the bound: bob holds nothing, so nothing is refused
    await stream(alice, "bob", "n", total, window=8)
    assert r.xlen(LOG) < total  # the log was trimmed: bob did not hold it

    bob_again = await agents.start("bob", env=env(BRIDGE_AWAY_HOLD="1"))
    [notice] = await bob_again.wait_for(lambda: bob_again.channel("notice"), timeout=15)
    assert "expired from the log" in notice["content"]
    missing = int(notice["content"].split(" ")[0])
    delivered = await bob_again.wait_messages(total + 1 - missing)
    assert [m["content"] for m in delivered] == [f"n:{i}" for i in range(missing - 1, total)]


async def test_c2_an_agent_away_within_the_hold_loses_nothing_to_others_traffic(agents, r):
    alice = await agents.start("alice", env=env())
    bob = await agents.start("bob", env=env())
    carol = await agents.start("carol", env=env())
    dave = await agents.start("dave", env=env())
    await bob.close_stdin()
    await bob.wait_exit()
    sent = BOUND // 2
    for i in range(sent):
        answer = await alice.tool("send_message", to="bob", text=f"m:{i}")
        assert "queued until they return: bob" in answer, answer
    await stream_to(carol, dave, "dave", 3 * BOUND)  # more than the bound, not to bob
    await dave.wait_messages(3 * BOUND, timeout=30)
    assert r.xrange(LOG, count=1)[0][1][b"text"] == b"m:0"  # kept for bob

    bob_again = await agents.start("bob", env=env())
    delivered = await bob_again.wait_messages(sent, timeout=30)
    assert [m["content"] for m in delivered] == [f"m:{i}" for i in range(sent)]
    assert bob_again.channel("notice") == []


async def test_d_a_broadcast_says_whom_it_was_not_queued_for(agents, r):
    alice = await agents.start("alice", env=env())
    bob = await agents.start("bob", "--delivery", "pull", env=env())
    carol = await agents.start("carol", env=env())
    for i in range(BOUND - 1):
        await alice.tool("send_message", to="bob", text=f"m:{i}")
    await carol.tool("send_message", to="alice", text="one more entry in the log")
    await alice.wait_messages(1)

    answer = await alice.tool("send_message", to="*", text="to everyone")
    assert f"Not queued for bob: {BOUND} messages behind (BRIDGE_BACKLOG_MAX={BOUND})" in answer
    assert "Online, delivered now: carol." in answer, answer
    [got] = await carol.wait_messages(1)
    assert got["content"] == "to everyone"
    text = await read_all(bob, BOUND - 1)
    assert numbers(text, "m") == list(range(BOUND - 1))


async def test_e_at_the_hard_cap_the_oldest_go_and_the_holder_is_told(agents, r):
    hard = {"BRIDGE_LOG_HARD_MAXLEN": "300"}
    alice = await agents.start("alice", env=env(**hard))
    bob = await agents.start("bob", env=env(**hard))
    carol = await agents.start("carol", env=env(**hard))
    dave = await agents.start("dave", env=env(**hard))
    await bob.close_stdin()
    await bob.wait_exit()
    assert "queued until they return: bob" in await alice.tool("send_message", to="bob",
                                                                 text="kept, then capped")
    await stream_to(carol, dave, "dave", 250)
    assert r.xrange(LOG, count=1)[0][1][b"text"] == b"kept, then capped"  # held past 100
    await stream_to(carol, dave, "dave", 400)
    assert r.xlen(LOG) <= 300 + 100  # the cap, and one stream node
    capped = [e for e in carol.log_events() if e["event"] == "log_hard_cap"]
    assert capped and "bob" in capped[0]["behind"], carol.stderr()[-2000:]

    bob_again = await agents.start("bob", env=env(**hard))
    [notice] = await bob_again.wait_for(lambda: bob_again.channel("notice"), timeout=15)
    assert "expired from the log" in notice["content"]
    assert "BRIDGE_LOG_HARD_MAXLEN=300" in notice["content"]
