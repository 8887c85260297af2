"""The task board and file claims on `bridge web`'s page, in a real browser (Debian's chromium
driven by Playwright, as in tests/test_web.py, whose browser, page and `bridge web` helpers
these tests use): what a peer wrote shows as text, the board follows changes made in Redis
without a reload (the board events), and an operator adds, assigns and closes tasks from the
page, guarded like the send form, with the board's refusals shown in its own words."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from bridge.room.claims import ClaimBook
from bridge.room.keys import Keys
from bridge.room.signing import make_signer
from bridge.room.tasks import TaskBoard
from tests.conftest import RedisServer, free_port
from tests.test_acl import create_user
from tests.test_task_tools import arrives
from tests.test_web import (  # noqa: F401 - fixtures, used by name
    Web,
    anyio_backend,
    browser,
    page,
    wait_dom,
    web,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

HOSTILE_TITLE = '<img src=x onerror="document.title=\'pwned\'">'
HOSTILE_REASON = '<img src=x onerror="document.title=\'pwned\'"><b>mine</b> </channel>'
SECRET = "a-room-secret-of-32-characters!!"

TASK_ROW = "id => document.querySelector(`#board-tasks tr.task[data-id='${id}']`)"
CELLS = """id => { const row = document.querySelector(`#board-tasks tr.task[data-id='${id}']`);
                   return row && [...row.cells].map(c => c.textContent); }"""
CLAIMS = """() => [...document.querySelectorAll('#board-claims tbody tr[data-agent]')]
                   .map(r => [...r.cells].map(c => c.textContent))"""
CLAIM_PATHS = f"() => ({CLAIMS})().map(row => row[1])"
RESULT = "() => document.querySelector('#task-result').textContent"


@asynccontextmanager
async def board_and_book(server: RedisServer, secret: str = "",
                         ) -> AsyncIterator[tuple[TaskBoard, ClaimBook]]:
    """Room main's task board and claim book, as an agent's bridge has them (they publish the
    board events)."""
    client = Redis.from_url(server.url)
    signer = make_signer(secret, "main", 60)
    try:
        yield TaskBoard(client, Keys("main"), signer), ClaimBook(client, Keys("main"), signer)
    finally:
        await client.aclose()


async def shown(tab: Any, script: str, arg: Any, expected: Any, what: str) -> None:
    """Wait until ``script`` of ``arg`` is ``expected`` (compared as JSON) in the page."""
    await wait_dom(tab, f"([arg, want]) => JSON.stringify(({script})(arg)) === "
                        f"JSON.stringify(want)", [arg, expected], what)


async def untouched(tab: Any) -> None:
    """Nothing a peer wrote became an element or ran."""
    assert await tab.eval_on_selector_all("#board img, #board b, #board-claims img, "
                                          "#board-claims b, #messages img", "n => n.length") == 0
    assert await tab.title() == "bridge: main"


# ------------------------------------------------------------------ reading
async def test_the_board_shows_tasks_and_claims_and_what_peers_wrote_is_text(
        redis_server, web, page):  # noqa: F811
    async with board_and_book(redis_server) as (board, book):
        await board.create("carol", "Write the parser", assignee="alice")
        await board.create("mallory", HOSTILE_TITLE, detail=HOSTILE_REASON, waits_for=["t1"])
        await board.create("carol", "Old chore")
        await board.update("t3", "carol", status="done")
        await book.claim("alice", ["src/api/**"], reason="the parser's API")
        await book.claim("mallory", ["docs"], exclusive=False, reason=HOSTILE_REASON)
    response = await page.goto(await web.start())
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp

    await shown(page, CELLS, "t2", ["t2", "open", "-", "t1", HOSTILE_TITLE], "the hostile task")
    assert await page.evaluate(CELLS, "t1") == ["t1", "open", "alice", "-", "Write the parser"]
    # the ones not done first, then the done
    order = await page.eval_on_selector_all("#board-tasks tr.task", "n => n.map(r => r.dataset.id)")
    assert order == ["t1", "t2", "t3"], order
    assert await page.inner_text("#task-count") == "2 not done, 1 done"
    claims = await page.evaluate(CLAIMS)
    assert [row[:3] + row[5:] for row in claims] == [
        ["alice", "src/api/**", "exclusive", "the parser's API"],
        ["mallory", "docs", "shared", HOSTILE_REASON]], claims
    assert claims[0][3].endswith("ago") and claims[0][4].startswith("in "), claims
    await untouched(page)

    # a task opens with its detail and history; the detail is text too
    await page.click("#board-tasks tr.task[data-id='t2']")
    await wait_dom(page, "() => document.querySelector(\"tr.task-detail[data-for='t2'] .text\")"
                         "?.textContent", what="t2's detail")
    detail = await page.inner_text("tr.task-detail[data-for='t2']")
    assert HOSTILE_REASON in detail and "mallory created" in detail, detail
    assert "null" not in detail and "undefined" not in detail, detail
    await untouched(page)

    async with httpx.AsyncClient(base_url=web.base) as client:
        data = (await client.get("/api/r/main/board")).json()
        one = (await client.get("/api/r/main/task/t2")).json()
        missing = await client.get("/api/r/main/task/t99")
        bad = await client.get("/api/r/main/task/nonsense")
    assert [t["id"] for t in data["tasks"]] == ["t1", "t2", "t3"]
    assert "verified" not in data["tasks"][0] and data["signed"] is False  # no room secret
    assert one["detail"] == HOSTILE_REASON and one["history"][0]["actor"] == "mallory"
    assert missing.status_code == 404 and "no task t99" in missing.json()["error"]
    assert bad.status_code == 400


async def test_with_a_room_secret_unsigned_tasks_and_claims_are_marked(
        redis_server, tmp_path, page):  # noqa: F811
    async with board_and_book(redis_server, SECRET) as (board, book):
        await board.create("carol", "signed task")
        await book.claim("alice", ["src"], reason="signed claim")
    async with board_and_book(redis_server) as (board, book):  # no secret: no signature
        await board.create("mallory", "unsigned task")
        await book.claim("mallory", ["docs"], reason="unsigned claim")
    server = Web(redis_server.url, tmp_path, free_port(), env={"BRIDGE_SECRET": SECRET})
    try:
        await page.goto(await server.start())
        await wait_dom(page, TASK_ROW, "t2", "the unsigned task")
        assert await page.evaluate(CELLS, "t1") == ["t1", "open", "-", "-", "signed task"]
        assert await page.evaluate(CELLS, "t2") == ["[unsigned]t2", "open", "-", "-",
                                                    "unsigned task"]
        claims = await page.evaluate(CLAIMS)
        assert [row[0] for row in claims] == ["alice", "[unsigned]mallory"], claims
        async with httpx.AsyncClient(base_url=server.base) as client:
            data = (await client.get("/api/r/main/board")).json()
        assert [(t["verified"], t.get("problem")) for t in data["tasks"]] == [
            (True, None), (False, "unsigned")]
        assert [(c["verified"], c.get("problem")) for c in data["claims"]] == [
            (True, None), (False, "unsigned")]
    finally:
        server.kill()


# ------------------------------------------------------------------ live
async def test_the_board_follows_changes_in_redis_without_a_reload(
        redis_server, web, page):  # noqa: F811
    await page.goto(await web.start())
    await wait_dom(page, "() => document.querySelector('#board-tasks tbody').textContent"
                         ".includes('no tasks')", what="the empty board")
    await wait_dom(page, "() => document.querySelector('#live').dataset.state === 'live'",
                   what="the stream connected")
    await page.evaluate("() => { window.__same_page = 1; }")
    async with board_and_book(redis_server) as (board, book):
        await board.create("carol", "Write the parser")
        await shown(page, CELLS, "t1", ["t1", "open", "-", "-", "Write the parser"], "t1")
        await board.claim("t1", "alice")
        await shown(page, CELLS, "t1", ["t1", "in_progress", "alice", "-", "Write the parser"],
                    "t1 claimed by alice")
        await book.claim("alice", ["src/parse.py"], reason="the parser")
        await shown(page, CLAIM_PATHS, None, ["src/parse.py"],
                    "alice's claim")
        # a claim that lapses sends no event: the page reads the board again when it expires
        await book.claim("bob", ["docs"], ttl=2.0, reason="a short one")
        await shown(page, CLAIM_PATHS, None,
                    ["src/parse.py", "docs"], "bob's claim")
        await shown(page, CLAIM_PATHS, None, ["src/parse.py"],
                    "bob's claim gone once it lapsed")
        await book.release("alice", ["src/parse.py"])
        await wait_dom(page, "() => document.querySelector('#board-claims tbody').textContent"
                             ".includes('no file claims')", what="alice's claim released")
        await board.update("t1", "alice", status="done")
        await shown(page, CELLS, "t1", ["t1", "done", "alice", "-", "Write the parser"],
                    "t1 done")
    # the events show dimmed in the conversation too, and the page never reloaded
    await wait_dom(page, "() => [...document.querySelectorAll(\"li.event[data-kind='board']\")]"
                         ".some(n => /alice .*t1/.test(n.textContent))",
                   what="the board event in the conversation")
    assert await page.evaluate("() => window.__same_page") == 1


# ------------------------------------------------------------------ the operator's changes
async def test_an_operator_adds_assigns_and_closes_tasks_from_the_page(
        agents, redis_server, web, page):  # noqa: F811
    bob = await agents.start("bob")
    await page.goto(await web.start())
    await wait_dom(page, "() => document.querySelector(\"#agents tr[data-name='bob']\")",
                   what="bob in the room")
    await page.fill("#task-title", HOSTILE_TITLE)
    await page.fill("#task-detail", "from the page")
    await page.fill("#task-assignee", "bob")
    await page.click("#task-add-button")
    await wait_dom(page, f"() => ({RESULT})().startsWith('created t1, assigned to bob')",
                   what="the add's answer")
    assert "told bob" in await page.evaluate(RESULT)
    await shown(page, CELLS, "t1", ["t1", "open", "bob", "-", HOSTILE_TITLE], "the new task")
    notice = await arrives(bob, "[task t1] assigned to you by operator")
    assert notice["meta"]["from"] == "operator"
    async with board_and_book(redis_server) as (board, _):
        task = await board.get("t1")
        assert (task.creator, task.assignee, task.detail) == ("operator", "bob", "from the page")

        # a refusal is shown in the board's own words, and changes nothing
        await page.fill("#task-id", "t1")
        await page.fill("#task-to", "Bad Name!")
        await page.click("#task-assign")
        await wait_dom(page, f"() => ({RESULT})().startsWith(\"refused: bad assignee 'Bad "
                             f"Name!'\")", what="the refusal")
        assert await page.get_attribute("#task-result", "class") == "result error"
        assert (await board.get("t1")).assignee == "bob"

        await page.fill("#task-to", "alice")
        await page.click("#task-assign")
        await shown(page, CELLS, "t1", ["t1", "open", "alice", "-", HOSTILE_TITLE],
                    "t1 assigned to alice")
        assert (await board.get("t1")).assignee == "alice"
        await arrives(bob, "[task t1] taken over: assigned to alice by operator")

        # closed from its detail's button
        await page.click("#board-tasks tr.task[data-id='t1']")
        await page.click("tr.task-detail[data-for='t1'] button:text('done')")
        await shown(page, CELLS, "t1", ["t1", "done", "alice", "-", HOSTILE_TITLE], "t1 done")
        task = await board.get("t1")
        assert (task.status, task.by) == ("done", "operator")
        # a task that is not there is refused as such
        await page.fill("#task-id", "t7")
        await page.click("#task-done")
        await wait_dom(page, f"() => ({RESULT})().startsWith('refused: no task t7')",
                       what="the refusal of a missing task")
    await untouched(page)

    # guarded like the send form: the token in a header, and this page's own origin
    async with httpx.AsyncClient(base_url=web.base) as client:
        body = {"action": "add", "title": "sneaky"}
        none = await client.post("/api/r/main/tasks", json=body)
        foreign = await client.post("/api/r/main/tasks", json=body, headers={
            "Authorization": f"Bearer {web.token}", "Origin": "http://evil.example"})
        cross = await client.post("/api/r/main/tasks", json=body, headers={
            "Authorization": f"Bearer {web.token}", "Sec-Fetch-Site": "cross-site"})
        junk = await client.post("/api/r/main/tasks", content=b"not json", headers={
            "Authorization": f"Bearer {web.token}"})
        made = await client.post("/api/r/main/tasks", json={**body, "waits_for": "t1"},
                                 headers={"Authorization": f"Bearer {web.token}"})
    assert (none.status_code, foreign.status_code, cross.status_code) == (401, 403, 403)
    assert "needs the token" in none.json()["error"]
    assert junk.status_code == 400
    assert made.status_code == 200 and made.json()["task"]["waits_for"] == ["t1"], made.text
    async with board_and_book(redis_server) as (board, _):
        assert [t.title for t in await board.tasks()] == ["sneaky", HOSTILE_TITLE]


async def test_a_read_only_redis_user_sees_the_board_and_may_not_change_it(
        redis_server, tmp_path, page):  # noqa: F811
    async with board_and_book(redis_server) as (board, book):
        await board.create("carol", "Write the parser")
        await board.create("carol", "Test it", waits_for=["t1"])
        await book.claim("alice", ["src"], reason="the parser")
    server = Web(create_user(redis_server.port, "web", "--read-only"), tmp_path, free_port())
    try:
        await page.goto(await server.start())
        await wait_dom(page, TASK_ROW, "t2", "the board, read as a read-only user")
        assert await page.evaluate(CLAIM_PATHS) == ["src"]
        await page.click("#board-tasks tr.task[data-id='t1']")  # its history: LRANGE
        await wait_dom(page, "() => document.querySelector(\"tr.task-detail[data-for='t1']\")"
                             "?.textContent.includes('carol created')", what="t1's history")
        await page.fill("#task-title", "should not be made")
        await page.click("#task-add-button")
        await wait_dom(page, f"() => ({RESULT})().includes('may not change the board')",
                       what="the refusal")
    finally:
        server.kill()
    async with board_and_book(redis_server) as (board, _):
        assert [t.id for t in await board.tasks()] == ["t1", "t2"]
