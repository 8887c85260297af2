"""The room's task board (bridge.room.tasks, its TASK function) and `bridge tasks`, against a real
redis-server: claims race and exactly one wins, dependencies hold, limits refuse with what to
do, forgeries are marked, rooms stay apart, and the CLI end to end."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from redis.asyncio import Redis

from bridge.errors import TaskRefused, TaskTaken
from bridge.room.keys import Keys
from bridge.room.signing import make_signer
from bridge.room.task_records import MAX_OPEN, MAX_PER_ASSIGNEE, MAX_TASKS
from bridge.room.tasks import TaskBoard
from tests.conftest import RedisServer
from tests.test_acl import create_user, load_functions
from tests.test_cli_ops import assert_one_line_error, bridge, cli_env

pytestmark = pytest.mark.anyio

SECRET = "a-room-secret-of-enough-length"


@asynccontextmanager
async def boards(server: RedisServer, count: int, room: str = "main",
                 secret: str = "") -> AsyncIterator[list[TaskBoard]]:
    """``count`` boards of one room, each on a client (and connections) of its own."""
    clients = [Redis.from_url(server.url) for _ in range(count)]
    try:
        yield [TaskBoard(client, Keys(room), make_signer(secret, room, 60)) for client in clients]
    finally:
        for client in clients:
            await client.aclose()


async def claim_race(claimers: list[TaskBoard], names: list[str],
                     task_id: str) -> tuple[list[str], dict[str, str]]:
    """Every board claims the task at once (each on its own connections): who won, and
    who was told whom."""
    won: list[str] = []
    told: dict[str, str] = {}
    ready = anyio.Event()

    async def claim(board: TaskBoard, name: str) -> None:
        await ready.wait()
        try:
            claimed = await board.claim(task_id, name)
        except TaskTaken as e:
            told[name] = e.holder
            assert f"{e.holder} has it" in str(e)
        else:
            assert claimed.assignee == name and claimed.status == "in_progress"
            won.append(name)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for board, name in zip(claimers, names, strict=True):
                tg.start_soon(claim, board, name)
            ready.set()
    return won, told


async def test_twenty_claimers_of_one_task_exactly_one_wins_200_times(redis_server):
    names = [f"agent{i}" for i in range(20)]
    async with boards(redis_server, 21) as (boss, *claimers):
        for _ in range(200):
            task = await boss.create("boss", "the one task")
            won, told = await claim_race(claimers, names, task.id)
            assert len(won) == 1, (won, told)
            assert sorted([*won, *told]) == sorted(names)
            assert set(told.values()) == set(won)
            final = await boss.get(task.id)
            assert final.assignee == won[0] and final.status == "in_progress"
            history = await boss.history(task.id)
            assert [entry.what for entry in history] == ["created", "claimed"]
            assert history[1].actor == won[0]
            # done: one agent may hold at most MAX_PER_ASSIGNEE tasks not done
            await claimers[names.index(won[0])].update(task.id, won[0], status="done")


async def test_a_task_cannot_start_while_what_it_waits_for_is_unfinished(redis_server):
    async with boards(redis_server, 1) as [board]:
        first = await board.create("boss", "schema")
        second = await board.create("boss", "migration")
        third = await board.create("boss", "release", waits_for=[first.id, second.id])
        assert third.waits_for == ("t1", "t2")
        for start in (lambda: board.claim("t3", "bob"),
                      lambda: board.update("t3", "bob", status="in_progress")):
            with pytest.raises(TaskRefused, match="t3 waits for t1 t2, not done yet"):
                await start()
        # assigning and blocking it is fine: only starting it is not
        assert (await board.assign("t3", "bob", "boss")).assignee == "bob"
        assert (await board.update("t3", "bob", status="blocked")).status == "blocked"
        await board.update("t1", "alice", status="done")
        with pytest.raises(TaskRefused, match="t3 waits for t2,"):
            await board.update("t3", "bob", status="in_progress")
        await board.claim("t2", "carol")
        await board.update("t2", "carol", status="done")
        started = await board.update("t3", "bob", status="in_progress")
        assert (started.status, started.assignee) == ("in_progress", "bob")
        # a claim needs an open task with nobody on it
        with pytest.raises(TaskTaken, match="t3 is taken: bob has it"):
            await board.claim("t3", "dave")
        with pytest.raises(TaskRefused, match="t2 is done, not open"):
            await board.claim("t2", "dave")
        # starting a task nobody has makes it the starter's
        await board.create("boss", "docs")
        assert (await board.update("t4", "erin", status="in_progress")).assignee == "erin"
        assert [t.id for t in await board.tasks()] == ["t3", "t4", "t1", "t2"]  # open first


async def test_limits_and_bad_values_are_refused_with_what_to_do(redis_server):
    async with boards(redis_server, 1) as [board]:
        refusals = {
            "at most 200": board.create("boss", "x" * 201),
            "at most 4000": board.create("boss", "ok", detail="y" * 4001),
            "a task needs a title": board.create("boss", "  "),
            "at most 20 tasks": board.create("boss", "ok", waits_for=[f"t{i}" for i in
                                                                      range(1, 22)]),
            "no task 't0'": board.create("boss", "ok", waits_for=["t0"]),
            "only wait for tasks that exist: no task t5 in room 'main'": board.create(
                "boss", "ok", waits_for=["t5"]),
            "bad assignee 'Bob!'": board.create("boss", "ok", assignee="Bob!"),
            "bad status 'finished'": board.update("t1", "boss", status="finished"),
            "no task t1 in room": board.claim("t1", "bob"),
            "nothing to change": board.update("t1", "boss"),
        }
        for needle, attempt in refusals.items():
            with pytest.raises(TaskRefused) as refused:
                await attempt
            assert needle in str(refused.value), (needle, str(refused.value))
        assert await board.tasks() == []  # nothing refused was written
        for i in range(MAX_OPEN):
            await board.create("boss", f"task {i}")
        with pytest.raises(TaskRefused, match=f"{MAX_OPEN} tasks not done.*finish or close"):
            await board.create("boss", "one too many")
        await board.update("t1", "boss", status="done")
        assert (await board.create("boss", "room again")).id == f"t{MAX_OPEN + 1}"


async def test_what_a_task_waits_for_can_change_but_never_into_a_cycle(redis_server):
    async with boards(redis_server, 1) as [board]:
        for title in ("schema", "api", "client"):
            await board.create("boss", title)
        # t3 waits for t2, which waits for t1: t1 may not then wait for t3 (nor itself)
        assert (await board.update("t3", "boss", waits_for=["t2"])).waits_for == ("t2",)
        assert (await board.update("t2", "boss", waits_for=["t1"])).waits_for == ("t1",)
        for waits in (["t3"], ["t2"], ["t1"]):
            with pytest.raises(TaskRefused, match="t1 cannot wait for those.*could ever start"):
                await board.update("t1", "boss", waits_for=waits)
        with pytest.raises(TaskRefused, match="no task t9 in room"):
            await board.update("t2", "boss", waits_for=["t9"])
        assert (await board.get("t1")).waits_for == ()  # nothing refused was written
        with pytest.raises(TaskRefused, match="t3 waits for t2, not done yet"):
            await board.claim("t3", "bob")
        # waiting for nothing again: it can start
        cleared = await board.update("t3", "boss", waits_for=[])
        assert cleared.waits_for == ()
        assert (await board.claim("t3", "bob")).status == "in_progress"
        history = [entry.what for entry in await board.history("t3")]
        assert history == ["created", "waits for t2", "waits for nothing", "claimed"]


async def test_one_agent_holds_at_most_so_many_tasks_not_done(redis_server):
    async with boards(redis_server, 1) as [board]:
        for i in range(MAX_PER_ASSIGNEE):
            await board.create("boss", f"task {i}", assignee="bob")
        limit = f"{MAX_PER_ASSIGNEE} tasks not done are assigned to that agent already"
        attempts = [lambda: board.create("boss", "one more", assignee="bob"),
                    lambda: board.assign("t101", "bob", "boss"),
                    lambda: board.claim("t101", "bob"),
                    lambda: board.update("t101", "bob", status="in_progress")]
        with pytest.raises(TaskRefused, match=limit):
            await attempts[0]()
        await board.create("boss", "for someone")  # t101, nobody's
        for attempt in attempts[1:]:
            with pytest.raises(TaskRefused, match=f"{limit}.*finish or reassign"):
                await attempt()
        assert (await board.get("t101")).assignee == ""
        # bob's own tasks change freely; one done makes room
        assert (await board.update("t1", "bob", status="in_progress")).assignee == "bob"
        await board.update("t2", "bob", status="done")
        assert (await board.claim("t101", "bob")).assignee == "bob"
        with pytest.raises(TaskRefused, match=limit):  # reopening a done one counts again
            await board.update("t2", "bob", status="open")


async def test_a_full_board_makes_room_by_removing_its_oldest_done_tasks(redis_server, r):
    keys = Keys("main")
    async with boards(redis_server, 1) as [board]:
        await board.create("boss", "the oldest, done")  # t1
        await board.update("t1", "boss", status="done")
        await board.create("boss", "still open")  # t2
        await board.create("boss", "waits for t1", waits_for=["t1"])  # t3
        # the rest of a full board, done, written as the script would (10,000 creates: ~20 s)
        pipe = r.pipeline(transaction=False)
        for number in range(4, MAX_TASKS + 1):
            pipe.hset(keys.task(f"t{number}"), mapping={
                "id": f"t{number}", "title": "old", "status": "done", "rev": "1"})
            pipe.zadd(keys.tasks, {f"t{number}": number})
        pipe.set(keys.task_seq, MAX_TASKS)
        pipe.execute()
        assert r.zcard(keys.tasks) == MAX_TASKS
        newest = await board.create("boss", "one past the cap")
        assert newest.id == f"t{MAX_TASKS + 1}"
        assert r.zcard(keys.tasks) == MAX_TASKS
        assert not r.exists(keys.task("t1"), keys.task_history("t1"))  # the oldest done one
        assert (await board.get("t2")).title == "still open"  # open ones stay, however old
        assert (await board.get("t4")).title == "old"
        # a task removed was done: what waited for it can start
        assert (await board.claim("t3", "bob")).status == "in_progress"
        await board.create("boss", "and one more")
        assert not r.exists(keys.task("t4")) and r.zcard(keys.tasks) == MAX_TASKS


async def test_a_task_written_with_redis_cli_is_not_shown_as_genuine(redis_server, r):
    async with boards(redis_server, 1, secret=SECRET) as [board]:
        await board.create("boss", "genuine")
        await board.create("boss", "altered later")
        assert not (await board.get("t1")).problem
    keys = Keys("main")
    cli = ["redis-cli", "-p", str(redis_server.port)]
    subprocess.run([*cli, "HSET", keys.task("t3"), "id", "t3", "title", "forged \x1b[31mred",
                    "creator", "boss", "status", "open", "rev", "1", "by", "boss"], check=True,
                   capture_output=True)
    subprocess.run([*cli, "ZADD", keys.tasks, "3", "t3"], check=True, capture_output=True)
    subprocess.run([*cli, "HSET", keys.task("t2"), "assignee", "mallory"], check=True,
                   capture_output=True)
    env = cli_env(BRIDGE_REDIS_URL=redis_server.url, BRIDGE_SECRET=SECRET)
    listed = json.loads((await bridge("tasks", "--json", env=env)).stdout)
    verified = {t["id"]: (t["verified"], t.get("problem")) for t in listed["tasks"]}
    assert verified == {"t1": (True, None), "t2": (False, "bad_signature"),
                        "t3": (False, "unsigned")}
    shown = await bridge("tasks", env=env)
    assert "[forged] t2" in shown.stdout and "[unsigned] t3" in shown.stdout
    assert "\x1b" not in shown.stdout and "forged \ufffd[31mred" in shown.stdout
    one = await bridge("tasks", "show", "t3", env=env)
    assert "[unsigned] t3" in one.stdout and "not written by a holder" in one.stdout
    # a change by a holder of the secret signs the task again
    await bridge("tasks", "done", "t3", env=env)
    listed = json.loads((await bridge("tasks", "--json", env=env)).stdout)
    assert {t["id"]: t["verified"] for t in listed["tasks"]}["t3"] is True


async def test_nothing_leaks_into_another_room(redis_server, r):
    async with boards(redis_server, 1, room="alpha") as [alpha], \
            boards(redis_server, 1, room="beta") as [beta]:
        await alpha.create("boss", "alpha's work")
        await alpha.claim("t1", "alice")
        assert await beta.tasks() == []
        with pytest.raises(TaskRefused, match="no task t1 in room 'beta'"):
            await beta.claim("t1", "bob")
        assert (await beta.create("boss", "beta's work")).id == "t1"
        assert [t.title for t in await alpha.tasks()] == ["alpha's work"]
        assert [t.title for t in await beta.tasks()] == ["beta's work"]
    for key in r.keys("*"):
        assert key.startswith((b"bridge:{alpha}:", b"bridge:{beta}:")), key


async def test_bridge_tasks_end_to_end(redis_server, r):
    env = cli_env(BRIDGE_REDIS_URL=redis_server.url, BRIDGE_ROOM="main")
    empty = await bridge("tasks", env=env)
    assert empty.returncode == 0 and "no tasks in room 'main'" in empty.stdout
    added = await bridge("tasks", "add", "Write the parser", "--detail", "line one\nline two",
                         env=env)
    assert added.returncode == 0 and added.stdout.startswith("created t1: Write the parser")
    second = await bridge("tasks", "add", "Test the parser", "--assign", "bob", "--waits-for",
                          "t1", "--as", "boss", "--json", env=env)
    record = json.loads(second.stdout)
    assert (record["id"], record["assignee"], record["waits_for"], record["creator"]) == (
        "t2", "bob", ["t1"], "boss")
    assert "verified" not in record  # the room has no secret: nothing to verify
    assigned = await bridge("tasks", "assign", "t1", "alice", env=env)
    assert assigned.stdout.strip() == "t1 assigned to alice: Write the parser"
    done = await bridge("tasks", "done", "t1", "--as", "alice", env=env)
    assert done.returncode == 0 and done.stdout.strip() == "t1 done: Write the parser"
    listed = json.loads((await bridge("tasks", "--json", env=env)).stdout)
    assert [(t["id"], t["status"]) for t in listed["tasks"]] == [("t2", "open"), ("t1", "done")]
    only = json.loads((await bridge("tasks", "--status", "done", "--json", env=env)).stdout)
    assert [t["id"] for t in only["tasks"]] == ["t1"]
    bobs = await bridge("tasks", "--assignee", "bob", env=env)
    assert [line.split()[0] for line in bobs.stdout.splitlines()] == ["ID", "t2"]
    shown = await bridge("tasks", "show", "t1", env=env)
    assert "Write the parser" in shown.stdout and "line one ⏎ line two" in shown.stdout
    assert "operator created" in shown.stdout and "operator assigned to alice" in shown.stdout
    assert "alice status done" in shown.stdout
    history = json.loads((await bridge("tasks", "show", "t1", "--json", env=env)).stdout)
    assert [(h["actor"], h["what"]) for h in history["history"]] == [
        ("operator", "created"), ("operator", "assigned to alice"), ("alice", "status done")]
    assert_one_line_error(await bridge("tasks", "show", "t9", env=env), "no task t9")
    assert_one_line_error(await bridge("tasks", "add", "x" * 201, env=env), "at most 200")
    assert_one_line_error(await bridge("tasks", "assign", "t2", env=env), "assign ID NAME")
    assert_one_line_error(await bridge("tasks", "--status", "nope", env=env), "bad status")
    bad_flag = await bridge("tasks", "nope", env=env)
    assert bad_flag.returncode == 2 and "invalid choice" in bad_flag.stderr


async def test_a_bridge_acl_user_may_use_the_board(redis_server, r):
    url = create_user(redis_server.port, "alice")
    load_functions(redis_server.port)
    r.acl_log_reset()
    env = cli_env(BRIDGE_REDIS_URL=url, BRIDGE_ROOM="main")
    added = await bridge("tasks", "add", "under acl", "--as", "alice", env=env)
    assert added.returncode == 0, added.stderr
    for args in (("tasks", "done", "t1", "--as", "alice"), ("tasks", "show", "t1"),
                 ("tasks", "--json")):
        result = await bridge(*args, env=env)
        assert result.returncode == 0, (args, result.stderr)
    assert [e for e in r.acl_log() if e.get("object") != "client|setinfo"] == []
    other = cli_env(BRIDGE_REDIS_URL=url, BRIDGE_ROOM="other")
    assert (await bridge("tasks", "add", "elsewhere", env=other)).returncode == 1
