"""The task board's race and durability claims, proven with real `bridge serve` agents over
stdio (tests/test_tasks.py races redis-py TaskBoards; here every claimer is a process): twenty
agents claim one task at once and exactly one wins, two hundred times; an agent restarted
(stopped, or SIGKILLed) finds its tasks on the board; two rooms on one Redis never see each
other's board; a task that waits cannot be started through the tools, by its assignee
either, until everything it waits for is done."""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import pytest
from redis.asyncio import Redis

from bridge.room.keys import Keys
from bridge.room.tasks import TaskBoard
from tests.conftest import Agents, RedisServer
from tests.support.mcp_client import CAPABILITIES, PROTOCOL_VERSION, Agent, ToolError

pytestmark = pytest.mark.anyio

CLAIMERS = 20
ROUNDS = 200


@asynccontextmanager
async def board(server: RedisServer, room: str = "main") -> AsyncIterator[TaskBoard]:
    """The room's board, read and written on a Redis client of the test's own (no secret:
    the agents have none either)."""
    client = Redis.from_url(server.url, single_connection_client=True)
    try:
        yield TaskBoard(client, Keys(room), None)
    finally:
        await client.aclose()


async def start_all(agents: Agents, names: list[str], **kwargs) -> list[Agent]:
    """Start the agents at once, in the order of ``names``. Each joins the room once its
    `initialize` has come, and answers it then; twenty Pythons starting on a busy 2-core
    machine can take longer than the client's usual 15 s for that (over 30 s was seen), so
    wait up to two minutes."""
    started: dict[str, Agent] = {}

    async def start(name: str) -> None:
        agent = await agents.start(name, handshake=False, **kwargs)
        agent.initialize_result = await agent.request("initialize", {
            "protocolVersion": PROTOCOL_VERSION, "capabilities": CAPABILITIES,
            "clientInfo": {"name": "bridge-tests", "version": "0"}}, timeout=120)
        await agent.notify("notifications/initialized")
        started[name] = agent

    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(start, name)
    return [started[name] for name in names]


def body(text: str) -> str:
    """A tool's answer without the note every answer ends with ("\n\n(no unread …)")."""
    answer, note, _ = text.rpartition("\n\n(")
    assert note and text.endswith(")"), text
    return answer


def text_of(result: dict) -> str:
    return body("".join(part.get("text", "") for part in result["content"]))


async def tool(agent: Agent, name: str, **arguments) -> str:
    """The answer of a tool call (ToolError when refused), without its note."""
    return body(await agent.tool(name, **arguments))


async def claim_at_once(claimers: list[Agent], task_id: str) -> tuple[dict[str, dict], float]:
    """Every claimer's `task claim` of ``task_id``, all written to the agents' stdin before
    any answer is awaited (in a new random order each time): each agent's answer, and when
    the last request went out (perf_counter)."""
    order = random.sample(claimers, len(claimers))
    ids: dict[str, int] = {}
    for agent in order:
        agent._next_id += 1
        ids[agent.name] = agent._next_id
        await agent.send_request(ids[agent.name], "tools/call",
                                 {"name": "task", "arguments": {"action": "claim",
                                                                "id": task_id}})
    sent = time.perf_counter()
    answers: dict[str, dict] = {}

    async def answer(agent: Agent) -> None:
        answers[agent.name] = await agent.response(ids[agent.name], timeout=30)

    async with anyio.create_task_group() as tg:
        for agent in claimers:
            tg.start_soon(answer, agent)
    return answers, sent


@dataclass
class Seen:
    """The commands Redis ran, in its order, as MONITOR shows them (its lines kept as they
    come, read once the test is done: parsing them meanwhile would slow the race down)."""

    lines: list[bytes] = field(default_factory=list)
    marker: str = field(default_factory=lambda: f"seen-{os.urandom(4).hex()}")
    marked: anyio.Event = field(default_factory=anyio.Event)

    async def everything_before(self, client: Redis) -> None:
        """Until the monitor has shown every command ``client`` was answered before now."""
        await client.echo(self.marker)
        with anyio.fail_after(20):
            await self.marked.wait()

    def commands(self) -> Iterator[tuple[str, list[str]]]:
        """(who, words): who is the client's address, or "lua" for a command of a script;
        the words without their quotes (none of the ones looked at has a space)."""
        for line in self.lines:
            who, _, command = line.decode(errors="replace").partition("] ")
            yield who.rpartition(" ")[2], [word.strip('"') for word in command.split(" ")]

    def reads_before_the_claim(self, prefix: str, exclude: str) -> list[int]:
        """For each task t1… (its key: ``prefix`` + id), how many HMGETs of it by a client
        (not ``exclude``) Redis ran before the script's write that put it in progress."""
        reads: dict[str, int] = {}
        claimed: dict[str, int] = {}
        for who, words in self.commands():
            if len(words) < 2 or not words[1].startswith(prefix) or words[1] in claimed:
                continue
            if who == "lua" and words[0].upper() == "HSET" and "in_progress" in words:
                claimed[words[1]] = reads.get(words[1], 0)
            elif who not in ("lua", exclude) and words[0].upper() == "HMGET":
                reads[words[1]] = reads.get(words[1], 0) + 1
        return [claimed.get(f"{prefix}t{n}", 0) for n in range(1, ROUNDS + 1)]


@asynccontextmanager
async def monitoring(server: RedisServer) -> AsyncIterator[Seen]:
    """MONITOR on a connection of its own, from now until the end of the block."""
    seen = Seen()
    client = Redis.from_url(server.url)
    marker = f'"ECHO" "{seen.marker}"'.encode()
    try:
        async with client.monitor() as monitor, anyio.create_task_group() as tg:
            async def read() -> None:
                assert monitor.connection is not None
                while True:
                    line = await monitor.connection.read_response()
                    seen.lines.append(line)
                    if line.endswith(marker):
                        seen.marked.set()

            tg.start_soon(read)
            yield seen
            tg.cancel_scope.cancel()
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_twenty_agents_claim_one_task_at_once_exactly_one_wins_200_times(
        agents, redis_server):
    names = [f"agent{i}" for i in range(CLAIMERS)]
    began = time.perf_counter()
    # events (joined, and the board's own after each change) not pushed: 20 agents each
    # told of 400 changes would only slow the race down
    claimers = await start_all(agents, names, env={"BRIDGE_PUSH_EVENTS": "0"})
    started = time.perf_counter()
    wins: Counter[str] = Counter()
    all_in_flight = 0  # rounds where every request was out before the first answer came
    async with board(redis_server) as boss, monitoring(redis_server) as seen:
        boss_address = (await boss.redis.client_info())["addr"]
        for round_ in range(ROUNDS):
            task = await boss.create("boss", f"the one task of round {round_}")
            assert task.id == f"t{round_ + 1}" and task.status == "open"
            answers, sent = await claim_at_once(claimers, task.id)

            won = [name for name, result in answers.items() if not result.get("isError")]
            assert len(won) == 1, (task.id, {n: text_of(r) for n, r in answers.items()})
            winner = won[0]
            wins[winner] += 1
            assert text_of(answers[winner]) == (
                f"claimed: {task.id} [in_progress] {winner}: the one task of round {round_}")
            for name, result in answers.items():
                if name != winner:
                    assert result["isError"] is True
                    assert text_of(result) == (
                        f"{task.id} is taken: {winner} has it (in_progress); pick another "
                        f"task, or ask {winner}"), (name, text_of(result))

            # the board in Redis agrees, and no loser wrote anything
            final = await boss.get(task.id)
            assert (final.assignee, final.status, final.rev, final.by) == (
                winner, "in_progress", 2, winner)
            history = await boss.history(task.id)
            assert [(entry.actor, entry.what) for entry in history] == [
                ("boss", "created"), (winner, "claimed")]
            times = [claimer.response_times[claimer._next_id] for claimer in claimers]
            all_in_flight += min(times) > sent
        await seen.everything_before(boss.redis)
        reads = seen.reads_before_the_claim(Keys("main").task(""), exclude=boss_address)
        tasks = await boss.tasks()
    assert len(tasks) == ROUNDS and {t.status for t in tasks} == {"in_progress"}
    assert sum(wins.values()) == ROUNDS
    # a real race: the winner is not always the same agent (the order of the requests is
    # shuffled each round) ...
    assert len(wins) > 1, wins
    # ... and losers read the task while it was still open, then were refused by the
    # script, which checks the holder at the moment of the write (the winner read it too)
    assert min(reads) >= 1, reads
    contested = [count - 1 for count in reads if count > 1]
    assert contested, reads
    print(f"\n{CLAIMERS} agents started in {started - began:.1f} s, {ROUNDS} rounds in "
          f"{time.perf_counter() - started:.1f} s; winners: {len(wins)} agents, most "
          f"{wins.most_common(1)}; every request out before the first answer in "
          f"{all_in_flight}/{ROUNDS} rounds; losers that read the task still open: in "
          f"{len(contested)}/{ROUNDS} rounds, {sum(contested)} in all, at most "
          f"{max(contested)} in a round")


async def mine(agent: Agent) -> str:
    return await tool(agent, "tasks", mine=True)


@pytest.mark.parametrize("how", ["stopped", "killed"])
async def test_a_restarted_agent_finds_its_tasks(agents, redis_server, how):
    alice, bob = await start_all(agents, ["alice", "bob"])
    await tool(bob, "task", action="create", title="Parser")
    await tool(bob, "task", action="create", title="Lexer", assignee="alice")
    await tool(bob, "task", action="create", title="Docs")
    await tool(bob, "task", action="create", title="Release", waits_for=["t1"],
               assignee="alice")
    await tool(bob, "task", action="create", title="Changelog")
    await tool(bob, "task", action="create", title="Bob's own")
    await tool(alice, "task", action="claim", id="t1")
    await tool(alice, "task", action="claim", id="t3")
    await tool(alice, "task", action="update", id="t3", status="blocked")
    await tool(alice, "task", action="claim", id="t5")
    await tool(alice, "task", action="update", id="t5", status="done")
    await tool(bob, "task", action="claim", id="t6")
    expected = ("t1 [in_progress] alice: Parser\n"
                "t2 [open] alice: Lexer\n"
                "t3 [blocked] alice: Docs\n"
                "t4 [open] alice (waits for t1): Release\n"
                "t5 [done] alice: Changelog")
    assert await mine(alice) == expected

    old_pid = alice.process.pid
    if how == "stopped":
        await alice.close_stdin()
        assert await alice.wait_exit() == 0
    else:
        alice.process.kill()
        assert await alice.wait_exit() == -9
    # the new alice takes the name at once: the old one left, or (killed) its pid is gone
    again, = await start_all(agents, ["alice"])
    assert again.process.pid != old_pid
    assert await mine(again) == expected
    assert "t1 [in_progress] alice: Parser" in await tool(bob, "tasks", id="t1")

    # the tasks are still hers to work on, and nobody else's to take
    with pytest.raises(ToolError, match="t1 is taken: alice has it"):
        await tool(bob, "task", action="claim", id="t1")
    with pytest.raises(ToolError, match="t4 waits for t1, not done yet"):
        await tool(again, "task", action="claim", id="t4")
    assert (await tool(again, "task", action="update", id="t1", status="done")).startswith(
        "updated: t1 [done] alice: Parser")
    assert (await tool(again, "task", action="claim", id="t4")).startswith(
        "claimed: t4 [in_progress] alice (waits for t1): Release")
    async with board(redis_server) as truth:
        held = {t.id: t.status for t in await truth.tasks() if t.assignee == "alice"}
    assert held == {"t1": "done", "t2": "open", "t3": "blocked", "t4": "in_progress",
                    "t5": "done"}


async def test_nothing_leaks_into_another_room(agents, redis_server, r):
    # the same name in both rooms: a room is its own namespace of agents and of tasks
    alice_a, bob_a = await start_all(agents, ["alice", "bob"], env={"BRIDGE_ROOM": "a"})
    alice_b, carol_b = await start_all(agents, ["alice", "carol"], env={"BRIDGE_ROOM": "b"})

    made = await tool(alice_a, "task", action="create", title="room-a work")
    assert made == "created: t1 [open] nobody: room-a work"
    await tool(alice_a, "task", action="create", title="room-a second", assignee="bob")
    await tool(alice_a, "task", action="claim", id="t1")
    await tool(bob_a, "task", action="update", id="t2", status="blocked")

    # room b sees none of it, and cannot reach it by id
    assert await tool(alice_b, "tasks") == "No tasks on the board."
    assert await tool(alice_b, "tasks", mine=True) == "No tasks matching that on the board."
    for agent, name, arguments in (
            (alice_b, "task", {"action": "claim", "id": "t1"}),
            (carol_b, "tasks", {"id": "t2"}),
            (carol_b, "task", {"action": "update", "id": "t2", "status": "done"}),
            (carol_b, "task", {"action": "assign", "id": "t1", "assignee": "carol"})):
        with pytest.raises(ToolError, match=rf"no task {arguments['id']} in room 'b'"):
            await tool(agent, name, **arguments)
    with pytest.raises(ToolError, match="tasks that exist: no task t2 in room 'b'"):
        await tool(carol_b, "task", action="create", title="x", waits_for=["t2"])

    # room b's own board counts from t1, and its t1 is free while room a's is held; a
    # notice for a name only room a has reaches nobody
    made = await tool(alice_b, "task", action="create", title="room-b work")
    assert made == "created: t1 [open] nobody: room-b work"
    assert await tool(carol_b, "task", action="claim", id="t1") == (
        "claimed: t1 [in_progress] carol: room-b work")
    said = await tool(carol_b, "task", action="create", title="room-b second", assignee="bob")
    assert said.startswith("created: t2 [open] bob: room-b second\n(the change stands, but "
                           "could not tell: bob (unknown recipient"), said

    assert await tool(alice_a, "tasks") == ("t1 [in_progress] alice: room-a work\n"
                                          "t2 [blocked] bob: room-a second")
    assert await tool(alice_a, "tasks", mine=True) == "t1 [in_progress] alice: room-a work"
    assert await tool(alice_b, "tasks") == ("t1 [in_progress] carol: room-b work\n"
                                          "t2 [open] bob: room-b second")
    assert await tool(alice_b, "tasks", mine=True) == "No tasks matching that on the board."
    assert "- alice claimed" in await tool(bob_a, "tasks", id="t1")
    assert "- carol claimed" in await tool(alice_b, "tasks", id="t1")

    # what each agent was pushed (messages; events, as the fixture turns them on) is of
    # its own room only: each waits for a board event of the other agent of its room, and
    # a marker sent last
    for sender, to, room in ((alice_a, "bob", "a"), (bob_a, "alice", "a"),
                             (alice_b, "carol", "b"), (carol_b, "alice", "b")):
        await tool(sender, "send_message", to=to, text=f"marker of room {room}")
    for agent, room, actor in ((alice_a, "a", "bob"), (bob_a, "a", "alice"),
                               (alice_b, "b", "carol"), (carol_b, "b", "alice")):
        def arrived(agent=agent, room=room, actor=actor) -> bool:
            pushed = agent.channel(None)
            return any(push["content"] == f"marker of room {room}" for push in pushed) and any(
                push["meta"] == {"from": actor, "kind": "board"}
                and f"room-{room}" in push["content"] for push in pushed)
        await agent.wait_for(arrived, what=f"room {room}'s marker and {actor}'s board event")
    for agent, other in ((alice_a, "b"), (bob_a, "b"), (alice_b, "a"), (carol_b, "a")):
        pushed = json.dumps(agent.notifications)
        assert f"room-{other}" not in pushed and f"room {other}" not in pushed, pushed
    for agent, stranger in ((alice_a, "carol"), (bob_a, "carol"), (alice_b, "bob"),
                            (carol_b, "bob")):
        assert stranger not in {push["meta"].get("from") for push in agent.channel(None)}
    assert [push["content"] for push in bob_a.channel() if "[task" in push["content"]] == [
        "[task t2] assigned to you by alice: room-a second"]

    # and in Redis: two boards, every key of one room or the other
    async with board(redis_server, "a") as board_a, board(redis_server, "b") as board_b:
        assert [(t.id, t.title, t.assignee) for t in await board_a.tasks()] == [
            ("t1", "room-a work", "alice"), ("t2", "room-a second", "bob")]
        assert [t.status for t in await board_a.tasks()] == ["in_progress", "blocked"]
        assert [(t.id, t.title, t.assignee) for t in await board_b.tasks()] == [
            ("t1", "room-b work", "carol"), ("t2", "room-b second", "bob")]
    for key in r.keys("*"):
        assert key.startswith((b"bridge:{a}:", b"bridge:{b}:")), key


async def test_a_waiting_task_cannot_be_started_through_the_tools_even_by_its_assignee(
        agents, redis_server):
    """Beyond test_task_tools.py's claim by another: the assignee's own claim (which starts
    a task assigned to it) and update to in_progress are refused, the refusal names only
    what is still unfinished, and marking it blocked is fine meanwhile."""
    carol, bob, dave = await start_all(agents, ["carol", "bob", "dave"])
    await tool(carol, "task", action="create", title="Schema")
    await tool(carol, "task", action="create", title="Migration")
    made = await tool(carol, "task", action="create", title="Release",
                      waits_for=["t1", "t2"], assignee="bob")
    assert made.startswith("created: t3 [open] bob (waits for t1 t2): Release")
    for arguments in ({"action": "claim", "id": "t3"},
                      {"action": "update", "id": "t3", "status": "in_progress"}):
        with pytest.raises(ToolError, match="t3 waits for t1 t2, not done yet"):
            await tool(bob, "task", **arguments)
    assert (await tool(bob, "task", action="update", id="t3", status="blocked")).startswith(
        "updated: t3 [blocked] bob (waits for t1 t2): Release")

    await tool(dave, "task", action="claim", id="t1")
    await tool(dave, "task", action="update", id="t1", status="done")
    with pytest.raises(ToolError, match=re.escape("t3 waits for t2, not done yet")):
        await tool(bob, "task", action="claim", id="t3")
    async with board(redis_server) as truth:
        held = await truth.get("t3")
        assert (held.status, held.assignee, held.rev) == ("blocked", "bob", 2)

        await tool(dave, "task", action="claim", id="t2")
        await tool(dave, "task", action="update", id="t2", status="done")
        assert (await tool(bob, "task", action="claim", id="t3")).startswith(
            "claimed: t3 [in_progress] bob (waits for t1 t2): Release")
        with pytest.raises(ToolError, match="t3 is taken: bob has it"):
            await tool(dave, "task", action="claim", id="t3")
        started = await truth.get("t3")
        assert (started.status, started.assignee) == ("in_progress", "bob")
        assert [(e.actor, e.what) for e in await truth.history("t3")] == [
            ("carol", "created, assigned to bob"), ("bob", "status blocked"),
            ("bob", "status in_progress")]
