"""`bridge tasks`: the room's task board for an operator. Lists it (the tasks not done first),
shows one task with its history, and adds, assigns and closes tasks as the operator, without
joining the room: the actor recorded is `operator`, or the name given with --as. Whom a change
concerns is told with a message from that name, joining only to send it, quietly, like
`bridge send --as`.

What a peer wrote (titles, details, names, history) is cleaned before it is printed; with a
room secret, a task whose signature fails is shown marked, not hidden.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace
from typing import Any, TextIO

from redis.exceptions import RedisError
from rich.text import Text

from bridge.errors import BridgeError
from bridge.ops.commands import MARKERS, redis_client, redis_now_ms
from bridge.ops.human import Terminal, ago, clock, dim, marked, to_json
from bridge.room.task_records import HistoryEntry, Task
from bridge.room.tasks import TaskBoard, check_name, check_status, done_notices, notices
from bridge.room.untrusted import clean
from bridge.settings import Settings

OPERATOR = "operator"


def task_record(task: Task, *, signed: bool) -> dict[str, Any]:
    record = asdict(task)
    del record["problem"]
    record["waits_for"] = list(task.waits_for)
    if signed:
        record["verified"] = not task.problem
        if task.problem:
            record["problem"] = task.problem
    return record


def _row(task: Task, now: int) -> list[str]:
    task_id = f"{MARKERS[task.problem]} {task.id}" if task.problem else task.id
    return [clean(task_id), clean(task.status), clean(task.assignee) or "-",
            clean(" ".join(task.waits_for)) or "-", ago(task.updated, now), clean(task.title)]


async def list_tasks(settings: Settings, *, status: str | None, assignee: str | None,
                     as_json: bool, out: TextIO = sys.stdout) -> int:
    if status is not None:
        check_status(status)
    async with redis_client(settings) as redis:
        board = TaskBoard.of(redis, settings)
        tasks = [task for task in await board.tasks()
                 if (status is None or task.status == status)
                 and (assignee is None or task.assignee == assignee)]
        now = await redis_now_ms(redis)
        if as_json:
            print(to_json({"room": settings.room, "now": now, "tasks": [
                task_record(task, signed=board.signer is not None) for task in tasks]}), file=out)
            return 0
        if not tasks:
            filtered = " matching the filters" if status or assignee else ""
            print(f"no tasks{filtered} in room {settings.room!r} (bridge tasks add TITLE "
                  f"creates one)", file=out)
            return 0
        Terminal(out).table(["ID", "STATUS", "ASSIGNEE", "WAITS FOR", "UPDATED", "TITLE"],
                            [_row(task, now) for task in tasks])
    return 0


async def show_task(settings: Settings, task_id: str, *, as_json: bool,
                    out: TextIO = sys.stdout) -> int:
    async with redis_client(settings) as redis:
        board = TaskBoard.of(redis, settings)
        task = await board.get(task_id)
        history = await board.history(task_id)
        if as_json:
            record = task_record(task, signed=board.signer is not None)
            record["history"] = [asdict(entry) for entry in history]
            print(to_json(record), file=out)
            return 0
        _show(Terminal(out), task, history, await redis_now_ms(redis))
    return 0


def _show(terminal: Terminal, task: Task, history: list[HistoryEntry], now: int) -> None:
    head = Text(f"{task.id}  {clean(task.title)}", style="bold")
    terminal.line(marked(MARKERS[task.problem], head) if task.problem else head)
    rows: list[tuple[Text | str, Text | str]] = [
        ("status", clean(task.status)), ("assignee", clean(task.assignee) or "-"),
        ("creator", clean(task.creator) or "-"),
        ("waits for", " ".join(task.waits_for) or "-"),
        ("created", ago(task.created, now)), ("updated", f"{ago(task.updated, now)} by "
                                                        f"{clean(task.by) or '-'}")]
    if task.detail:
        rows.append(("detail", clean(task.detail)))
    if task.problem:
        rows.append(("signature", Text(f"{task.problem}: not written by a holder of the room "
                                       f"secret (forged or altered)", style="red")))
    terminal.labelled(rows)
    if history:
        terminal.line(dim("history:"))
        for entry in history:
            terminal.line(Text(f"  {clock(entry.at)}  {clean(entry.actor)} {clean(entry.what)}"))


@dataclass(frozen=True)
class Change:
    """An operator's change, made: the task after it, what was done (a line), whom it
    concerns with what they are told, and those of them who could not be told, and why."""

    task: Task
    said: str
    told: list[tuple[str, str]]
    unsent: dict[str, str]


async def apply_change(settings: Settings, board: TaskBoard, action: str, actor: str,
                       **params: Any) -> Change:
    """`bridge tasks add | assign | done` (and `bridge web`'s board) as ``actor``: the change,
    then whom it concerns told with a message from the actor (see ``_tell``)."""
    told: list[tuple[str, str]]
    if action == "add":
        task = await board.create(actor, params["title"], detail=params["detail"] or "",
                                  assignee=params["assignee"] or "",
                                  waits_for=params["waits_for"] or ())
        said = f"created {task.id}" + (f", assigned to {task.assignee}"
                                       if task.assignee else "")
        told = notices("create", None, task, actor)
    elif action == "assign":
        before = await board.get(params["task_id"])
        task = await board.assign(params["task_id"], params["assignee"], actor)
        said = f"{task.id} assigned to {task.assignee}"
        told = notices("assign", before, task, actor)
    elif action == "done":
        before = await board.get(params["task_id"])
        task = await board.update(params["task_id"], actor, status="done")
        said = f"{task.id} done"
        told = await done_notices(board, before, task, actor)
    else:  # the CLI offers no other
        raise BridgeError(f"unknown tasks action {action!r}: use add, assign or done")
    return Change(task, said, told, await _tell(settings, actor, told))


async def change_task(settings: Settings, action: str, *, actor: str | None,
                      as_json: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                      **params: Any) -> int:
    """`bridge tasks add | assign | done` as the operator (or --as NAME). Whom the change
    concerns is told with a message from the actor (see ``_tell``); said on stderr."""
    actor = check_name(actor or OPERATOR, "--as")
    async with redis_client(settings) as redis:
        board = TaskBoard.of(redis, settings)
        change = await apply_change(settings, board, action, actor, **params)
        task, said, told, unsent = change.task, change.said, change.told, change.unsent
        if as_json:
            record = task_record(task, signed=board.signer is not None)
            record["told"] = sorted({name for name, _ in told} - set(unsent))
            if unsent:
                record["not_told"] = unsent
            print(to_json(record), file=out)
            return 0
        Terminal(out).line(Text(f"{clean(said)}: {clean(task.title)}"))
        notes = Terminal(err)  # who was told is a note, not the command's output
        if told and not unsent:
            notes.line(dim(f"told {', '.join(sorted({name for name, _ in told}))}"))
        for name, why in unsent.items():
            notes.line(Text(f"the change stands, but {clean(name)} was not told: "
                            f"{clean(why)}", style="yellow"))
    return 0


async def _tell(settings: Settings, actor: str, told: list[tuple[str, str]]) -> dict[str, str]:
    """Send each notice as ``actor``, joining briefly and quietly like `bridge send --as`; the
    names that could not be told, and why. The board change stands either way."""
    from bridge.room.connection import Room

    if not told:
        return {}
    unsent: dict[str, str] = {}
    try:
        async with Room.connect(replace(settings, name=actor, delivery="pull", announce=False),
                                warn_unverified=False) as room:
            for name, text in told:
                try:
                    await room.send([name], text)
                except (BridgeError, RedisError, OSError) as e:
                    unsent[name] = str(e)[:200] or type(e).__name__
    except (BridgeError, RedisError, OSError) as e:
        for name, _ in told:
            unsent.setdefault(name, str(e)[:200] or type(e).__name__)
    return unsent


USAGE = {"list": "bridge tasks [--status S] [--assignee NAME] [--json]",
         "show": "bridge tasks show ID", "add": "bridge tasks add TITLE [--detail TEXT] "
         "[--assign NAME] [--waits-for ID ...]", "assign": "bridge tasks assign ID NAME",
         "done": "bridge tasks done ID"}
ARITY = {"list": 0, "show": 1, "add": 1, "assign": 2, "done": 1}


async def run(settings: Settings, action: str, words: list[str], flags: dict[str, Any]) -> int:
    """`bridge tasks ACTION ARG…` with the command's flags (a dict of them)."""
    if len(words) != ARITY[action]:
        raise BridgeError(f"{action} takes {ARITY[action]} argument(s), not {len(words)}: "
                          f"{USAGE[action]} (quote a title of several words)")
    as_json = bool(flags.get("json"))
    if action == "list":
        return await list_tasks(settings, status=flags.get("status"),
                                assignee=flags.get("assignee"), as_json=as_json)
    if action == "show":
        return await show_task(settings, words[0], as_json=as_json)
    params: dict[str, Any] = (
        {"title": words[0], "detail": flags.get("detail"), "assignee": flags.get("assign"),
         "waits_for": flags.get("waits_for")} if action == "add"
        else {"task_id": words[0], "assignee": words[1] if action == "assign" else None})
    return await change_task(settings, action, actor=flags.get("actor"), as_json=as_json,
                             **params)
