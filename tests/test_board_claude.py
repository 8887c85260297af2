"""The task board and file claims, end to end with three real Claude Codes (the pinned npm
package) on one redis-server, each with `bridge serve` as its MCP server and the session inbox
(no channel flag), each model a scripted fake Messages API (tests/support/fake_api.py).

carol, the manager, is given one prompt: her model creates t1 for alice, creates t2 and assigns
it to bob, and creates t3 for herself that waits for both. Nobody types into alice's or bob's
Claude Code: the assignment notice (an ordinary room message from carol's bridge) wakes each
one, and its model takes the task, claims its files and marks the task done. Each done task
tells the assignee of the task waiting for it, so carol is woken by two notices, and with both
done her model may start t3 (the board refuses to start a task whose waits are not done). The
board and the claims are then read in Redis; a real git repository with `bridge guard` refuses
bob's commit of a file under alice's exclusive claim, until an operator's message makes alice's
model release it; bob's claim ends when his Claude Code does.

The Claude Codes are started by tests/support/claude_driver.py's Run, in this process (not the
driver's own subprocess, which as root moves into a network namespace where the test's
redis-server cannot be reached): like tests/test_team.py, each reaches nothing but its fake API
through ANTHROPIC_BASE_URL, with telemetry and updates off.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from bridge.room.claim_records import FileClaim
from bridge.room.claims import ClaimBook
from bridge.room.keys import Keys
from bridge.room.task_records import Task
from bridge.room.tasks import TaskBoard
from tests.conftest import RedisServer
from tests.support.claude_code import BRIDGE, NPM_INSTALL_TIMEOUT, read_tail
from tests.support.claude_driver import Instance, Run, load_log
from tests.support.fake_api import since_last_reply

pytestmark = pytest.mark.slow  # three real Claude Codes

T = TypeVar("T")
ROOM = "board"
PLAN = "PLAN-THE-SPRINT: parser to alice, CLI to bob, then integrate"
RELEASE = "RELEASE-PARSER: bob must fix src/parser/lexer.py"
TITLES = {"t1": "Write the parser", "t2": "Write the CLI",
          "t3": "Integrate the parser and the CLI"}
FILES = {"alice": "src/parser/**", "bob": "src/cli/**"}


def tool(name: str, **arguments: Any) -> list[dict[str, Any]]:
    """A model reply that calls one of bridge's tools."""
    return [{"type": "tool_use", "name": f"mcp__bridge__{name}", "input": arguments}]


def manager_script() -> dict[str, Any]:
    """carol: given the plan, creates t1 (alice), t2 (bob) and t3 (herself, waiting for both),
    one at a time (each id is known from the result before); once both notices that t1 and t2
    are done have reached her, starts t3."""
    return {"default_reply": "OK", "side_reply": "OK", "rules": [
        {"id": "t1", "when": {"last_user_contains": "PLAN-THE-SPRINT"},
         "reply": tool("task", action="create", title=TITLES["t1"], assignee="alice",
                       detail=f"in {FILES['alice']}")},
        {"id": "t2", "when": {"last_user_contains": f"created: t1 [open] alice: {TITLES['t1']}"},
         "reply": tool("task", action="create", title=TITLES["t2"], detail=f"in {FILES['bob']}")},
        {"id": "assign", "when": {"last_user_contains": f"created: t2 [open] nobody: "
                                                        f"{TITLES['t2']}"},
         "reply": tool("task", action="assign", id="t2", assignee="bob")},
        {"id": "t3", "when": {"last_user_contains": f"assigned: t2 [open] bob: {TITLES['t2']}"},
         "reply": tool("task", action="create", title=TITLES["t3"], assignee="carol",
                       waits_for=["t1", "t2"])},
        {"id": "planned", "when": {"last_user_contains": "created: t3 [open] carol"},
         "reply": "Planned: t1 alice, t2 bob; t3 mine once both are done."},
        {"id": "start", "when": {"contains": ["[task t3] t1 it waits for is done (alice)",
                                              "[task t3] t2 it waits for is done (bob)"],
                                 "last_user_contains": "it waits for is done"},
         "reply": tool("task", action="update", id="t3", status="in_progress")},
        {"id": "started", "when": {"last_user_contains": "updated: t3 [in_progress] carol"},
         "reply": "Integrating."},
    ]}


def developer_script(name: str, task_id: str) -> dict[str, Any]:
    """A developer woken by its assignment: takes the task, claims its files, marks it done;
    told to release its claim, releases it."""
    title = TITLES[task_id]
    return {"default_reply": "OK", "side_reply": "OK", "rules": [
        {"id": "take", "when": {"last_user_contains": f"[task {task_id}] assigned to you by "
                                                      f"carol: {title}"},
         "reply": tool("task", action="claim", id=task_id)},
        {"id": "files", "when": {"last_user_contains": f"claimed: {task_id} [in_progress] "
                                                       f"{name}: {title}"},
         "reply": tool("claims", action="claim", paths=[FILES[name]], reason=f"{task_id}: "
                                                                                f"{title}")},
        {"id": "done", "when": {"last_user_contains": f"claimed 1 (exclusive): {FILES[name]}"},
         "reply": tool("task", action="update", id=task_id, status="done")},
        {"id": "finished", "when": {"last_user_contains": f"updated: {task_id} [done] {name}"},
         "reply": f"{task_id} done."},
        {"id": "release", "when": {"last_user_contains": "RELEASE-PARSER"},
         "reply": tool("claims", action="release", paths=[FILES[name]])},
        {"id": "released", "when": {"last_user_contains": "released 1 claim"},
         "reply": "Released."},
    ]}


def server(name: str, role: str, redis_url: str) -> dict[str, Any]:
    return {"command": str(BRIDGE),
            "args": ["serve", "--name", name, "--role", role, "--room", ROOM],
            "env": {"BRIDGE_REDIS_URL": redis_url, "BRIDGE_LOG_LEVEL": "DEBUG"}}


# --------------------------------------------------------------------------- what the models saw


def main_requests(inst: Instance) -> list[dict[str, Any]]:
    return [r for r in load_log(inst.log)
            if r.get("kind") == "main" and isinstance(r.get("body"), dict)]


def brought(record: dict[str, Any]) -> str:
    """What one request brings: its messages after the last assistant message, as JSON."""
    return json.dumps(since_last_reply(record["body"].get("messages") or []),
                      ensure_ascii=False)


def woken_by(inst: Instance, text: str) -> dict[str, Any] | None:
    """The first main request whose new user content carries ``text``."""
    return next((r for r in main_requests(inst) if text in brought(r)), None)


def results(inst: Instance) -> dict[str, tuple[str, bool]]:
    """tool_use id -> (the tool's name and input, as JSON; its result's text, is_error)."""
    uses: dict[str, str] = {}
    found: dict[str, tuple[str, bool]] = {}
    for record in main_requests(inst):
        for message in record["body"].get("messages") or []:
            content = message.get("content")
            for block in content if isinstance(content, list) else []:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use":
                    uses[block["id"]] = json.dumps([block.get("name"), block.get("input")])
                elif block.get("type") == "tool_result":
                    inner = block.get("content")
                    text = inner if isinstance(inner, str) else " ".join(
                        b.get("text", "") for b in inner or [] if isinstance(b, dict))
                    found[block["tool_use_id"]] = (text, bool(block.get("is_error")))
    return {uses.get(k, k): v for k, v in found.items()}


def answered(inst: Instance, name: str, needle: str) -> str | None:
    """The result of the call of bridge tool ``name`` whose result has ``needle``."""
    for call, (text, error) in results(inst).items():
        if f'"mcp__bridge__{name}"' in call and needle in text:
            assert not error, f"{inst.name}: {call} -> error {text}"
            return text
    return None


def fired(inst: Instance) -> list[str]:
    """The ids of the script's rules that answered, in order."""
    return [r["served"] for r in load_log(inst.log) if r.get("served")]


# --------------------------------------------------------------------------- the room in Redis


def on_redis(url: str, read: Callable[[Redis], Awaitable[T]]) -> T:
    """``read`` on a client of the test's redis-server, from this (synchronous) test."""
    async def go() -> T:
        client = Redis.from_url(url)
        try:
            return await read(client)
        finally:
            await client.aclose()
    return asyncio.run(go())


def board(url: str) -> dict[str, Task]:
    async def read(client: Redis) -> dict[str, Task]:
        return {task.id: task for task in await TaskBoard(client, Keys(ROOM), None).tasks()}
    return on_redis(url, read)


def claims(url: str) -> list[FileClaim]:
    async def read(client: Redis) -> list[FileClaim]:
        return (await ClaimBook(client, Keys(ROOM), None).claims())[1]
    return on_redis(url, read)


def held(url: str) -> set[tuple[str, str, str]]:
    return {(c.agent, c.pattern, c.mode) for c in claims(url)}


def cli_env(**extra: str) -> dict[str, str]:
    """This environment for the bridge CLI, less any BRIDGE_ setting of the caller's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")} | extra


def git(repo: Path, *args: str, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          env=env, check=check, timeout=60, stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------- the test


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 600)
def test_a_manager_assigns_tasks_and_is_told_through_the_board(
    claude_bin: Path, tmux: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url
    run = Run(str(claude_bin), str(tmp_path / "run"), {"settle_timeout": 60})
    specs = [("alice", "developer", developer_script("alice", "t1")),
             ("bob", "developer", developer_script("bob", "t2")),
             ("carol", "manager", manager_script())]
    for name, role, turns in specs:
        # no prompt for anyone: the test types carol's; channels [] = no channel flag, the
        # session inbox
        run.add_instance({"name": name, "channels": [], "turns": turns,
                          "mcp_servers": {"bridge": server(name, role, url)}})
    inst = {i.name: i for i in run.instances}
    for i in run.instances:
        assert "--dangerously-load-development-channels" not in i.args
    typed: list[str] = []  # what the test typed, and into whom

    def diagnose() -> str:
        lines = [f"run dir {run.run_dir}; typed: {typed}"]
        for i in run.instances:
            lines.append(f"--- {i.name}: rules fired {fired(i)}; screen:\n"
                         f"{run.screen(i).rstrip()[-1500:]}\n--- its last request:\n"
                         f"{read_tail(Path(i.log), 1)[-1500:]}")
        try:
            lines.append(f"--- board: {board(url)}\n--- claims: {claims(url)}")
        except Exception as e:  # noqa: BLE001 (a diagnosis must not hide the failure)
            lines.append(f"--- the board cannot be read: {e!r}")
        return "\n".join(lines)

    def drive(what: str, check: Callable[[], T | None], timeout: float) -> T:
        """Answer start-up dialogs (the driver's step) until ``check`` holds; fail at the
        deadline, or as soon as a Claude Code has exited."""
        deadline = time.monotonic() + timeout
        while True:
            for i in run.instances:
                if os.path.exists(i.exit_file):
                    pytest.fail(f"{i.name}'s Claude Code exited while waiting for {what}\n"
                                f"{diagnose()}")
                run.step(i)
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{diagnose()}")
            time.sleep(0.25)

    started = time.monotonic()
    try:
        for i in run.instances:
            run.launch(i)
        drive("three Claude Codes at their prompt, their bridges connected", lambda: all(
            i.prompt_sent for i in run.instances), 180)
        print(f"\nthree Claude Codes ready in {time.monotonic() - started:.0f}s")
        # (no request yet: nothing has woken alice or bob)
        assert not main_requests(inst["alice"]) and not main_requests(inst["bob"]), diagnose()

        run.tmux("send-keys", "-t", "carol", "-l", PLAN)
        time.sleep(0.3)  # a TUI reads keys one frame at a time (as the driver types)
        run.tmux("send-keys", "-t", "carol", "Enter")
        typed.append("carol")

        # 1. carol's model put three tasks on the board, and the tools said whom they told
        drive("carol's three tasks", lambda: answered(inst["carol"], "task", "created: t3"),
              120)
        assert "(told alice)" in (answered(inst["carol"], "task", "created: t1") or "")
        assert "(told bob)" in (answered(inst["carol"], "task", "assigned: t2") or "")
        assert "told" not in (answered(inst["carol"], "task", "created: t2") or "told")
        assert "told" not in (answered(inst["carol"], "task", "created: t3") or "told")

        # 2. each developer woken by its assignment, an inbox post from carol (no keystroke
        # went to either), took the task, claimed its files and marked the task done
        for name, task_id in (("alice", "t1"), ("bob", "t2")):
            assignment = f"[task {task_id}] assigned to you by carol: {TITLES[task_id]}"
            wake = drive(f"{name} woken by {assignment!r}",
                         partial(woken_by, inst[name], assignment), 120)
            # from carol's bridge (its label: role @ host), with the board's news riding along
            assert "[bridge] message from carol (manager" in brought(wake), brought(wake)
            assert f"carol created t1 for alice: {TITLES['t1']}" in brought(wake), brought(wake)
            # its first turn: nothing woke it before
            assert wake["seq"] == main_requests(inst[name])[0]["seq"], diagnose()
            drive(f"{name}'s {task_id} done", partial(
                answered, inst[name], "task", f"updated: {task_id} [done] {name}"), 120)
            assert answered(inst[name], "claims", f"claimed 1 (exclusive): {FILES[name]}")
        assert typed == ["carol"]

        # 3. carol told by the board: each done task tells the assignee of the task that
        # waits for it; with both notices her model started t3, which the board allows only
        # now
        for done_id, by in (("t1", "alice"), ("t2", "bob")):
            notice = f"[task t3] {done_id} it waits for is done ({by}): {TITLES['t3']}"
            told = drive(f"carol woken by {notice!r}", partial(woken_by, inst["carol"], notice),
                         120)
            # one post for one message, or for several ("from NAME (...), id ...")
            assert f"from {by} (developer" in brought(told), brought(told)
        drive("carol's t3 started", lambda: answered(inst["carol"], "task",
                                                     "updated: t3 [in_progress] carol"), 120)
        # the board's changes rode along with the messages as board events ("since your last
        # message"): carol saw the developers claim their files and finish
        everything = "".join(brought(r) for r in main_requests(inst["carol"]))
        for name, task_id in (("alice", "t1"), ("bob", "t2")):
            assert f"{name} claimed {FILES[name]} (exclusive): {task_id}" in everything
            assert f"{name} set {task_id} to done" in everything

        # 4. the board and the claims in Redis
        tasks = board(url)
        assert sorted(tasks) == ["t1", "t2", "t3"]
        for task_id, assignee, status, waits in (("t1", "alice", "done", ()),
                                                 ("t2", "bob", "done", ()),
                                                 ("t3", "carol", "in_progress", ("t1", "t2"))):
            task = tasks[task_id]
            assert (task.title, task.assignee, task.status, task.waits_for, task.creator,
                    task.by) == (TITLES[task_id], assignee, status, waits, "carol",
                                 assignee), task
        assert held(url) == {("alice", "src/parser/**", "exclusive"),
                             ("bob", "src/cli/**", "exclusive")}
        assert {c.agent: c.reason for c in claims(url)} == {
            "alice": f"t1: {TITLES['t1']}", "bob": f"t2: {TITLES['t2']}"}

        # 5. bridge guard in a real repository: bob may not commit under alice's claim
        # until her model releases it
        repo = tmp_path / "repo"
        (repo / "src" / "parser").mkdir(parents=True)
        (repo / "src" / "cli").mkdir()
        git(repo, "init", "-q")
        installed = subprocess.run([str(BRIDGE), "guard", "install", "--repo", str(repo)],
                                   capture_output=True, text=True, timeout=60, env=cli_env())
        assert installed.returncode == 0, installed.stderr
        as_bob = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BRIDGE_NAME": "bob",
                  "BRIDGE_ROOM": ROOM, "BRIDGE_REDIS_URL": url,
                  "GIT_AUTHOR_NAME": "bob", "GIT_AUTHOR_EMAIL": "bob@example.com",
                  "GIT_COMMITTER_NAME": "bob", "GIT_COMMITTER_EMAIL": "bob@example.com"}
        (repo / "src" / "cli" / "main.py").write_text("print('cli')\n")
        git(repo, "add", "src/cli")
        own = git(repo, "commit", "-q", "-m", "the CLI", env=as_bob, check=False)
        assert own.returncode == 0, own.stderr  # his own claim
        (repo / "src" / "parser" / "lexer.py").write_text("TOKENS = []\n")
        git(repo, "add", "src/parser")
        refused = git(repo, "commit", "-q", "-m", "fix the lexer", env=as_bob, check=False)
        assert refused.returncode == 1, refused.stderr
        assert ("src/parser/lexer.py is claimed exclusively by alice (src/parser/**) since"
                in refused.stderr), refused.stderr
        assert "'t1: Write the parser'" in refused.stderr and "Ask alice" in refused.stderr

        sent = subprocess.run([str(BRIDGE), "send", "--as", "lead", "--room", ROOM, "alice",
                               RELEASE], capture_output=True, text=True, timeout=60,
                              env=cli_env(BRIDGE_REDIS_URL=url))
        assert sent.returncode == 0, sent.stderr
        drive("alice's model to release src/parser/**", lambda: answered(
            inst["alice"], "claims", "released 1 claim"), 120)
        assert held(url) == {("bob", "src/cli/**", "exclusive")}
        allowed = git(repo, "commit", "-q", "-m", "fix the lexer", env=as_bob, check=False)
        assert allowed.returncode == 0, allowed.stderr
        assert typed == ["carol"]
        # and no board event started a turn: every turn began with the typed prompt or a
        # bridge message; every other request brought tool results
        for i in run.instances:
            for record in main_requests(i):
                new = brought(record)
                # one message ("[bridge] message from NAME") or several coalesced into one
                # post ("[bridge] 2 messages from the room:")
                assert (re.search(r"\[bridge\] (message from|\d+ messages from the room)", new)
                        or '"tool_result"' in new or PLAN in new), \
                    f"{i.name}: a turn without a message: {new[:2000]}"
        print(f"scenario done in {time.monotonic() - started:.0f}s; rules fired: "
              + "; ".join(f"{i.name} {fired(i)}" for i in run.instances))
    finally:
        run.shutdown()
    # claims are kept while their agent is in the room: bob's bridge released his as it left
    # (Claude Code stopped by Ctrl-C closes its MCP server's stdin)
    deadline = time.monotonic() + 30
    while held(url):
        assert time.monotonic() < deadline, f"claims left after the agents did: {claims(url)}"
        time.sleep(0.25)
    print(f"the whole test in {time.monotonic() - started:.0f}s")
