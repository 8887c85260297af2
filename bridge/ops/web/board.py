"""The room's task board and file claims, for the page; and the operator's changes to the board.

Read as `bridge tasks` and `bridge claims` read them (TaskBoard, ClaimBook: every field a peer
wrote cleaned and bounded; with a room secret, each task and claim marked ``verified``, or with
its ``problem`` and the marker `bridge history` uses). Changed as `bridge tasks add | assign |
done` changes it (``bridge.ops.tasks.apply_change``), as ``operator`` and without joining the
room: whom a change concerns is told by a message, joining only to send it, quietly.

The page reads the board again when a ``board`` event arrives (the hub passes them on), when
its stream (re)connects, and when the soonest claim it shows would expire; it never polls.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from bridge.errors import BridgeError, RedisRefused, TaskRefused, TaskTaken
from bridge.ops.claims import claim_record
from bridge.ops.commands import MARKERS
from bridge.ops.tasks import OPERATOR, apply_change, task_record
from bridge.ops.web.security import Refused
from bridge.room.claim_records import FileClaim
from bridge.room.claims import ClaimBook
from bridge.room.task_records import ID_PATTERN, Task
from bridge.room.tasks import TaskBoard
from bridge.settings import Settings

MAX_DONE = 100  # done tasks sent to the page (the newest); the ones not done all are
ACTIONS = ("add", "assign", "done")
FIELDS = ("title", "detail", "assignee", "task_id", "waits_for")


def shown_task(task: Task, *, signed: bool) -> dict[str, Any]:
    """A task for the board's table: as `bridge tasks --json` has it, without its detail
    (up to 4000 characters each: sent with the task's history, when it is opened)."""
    record = task_record(task, signed=signed)
    record["has_detail"] = bool(record.pop("detail"))
    record["marker"] = MARKERS.get(task.problem, "")
    return record


def shown_claim(claim: FileClaim, *, signed: bool) -> dict[str, Any]:
    record = claim_record(claim, signed=signed)
    record["marker"] = MARKERS.get(claim.problem, "")
    return record


async def board(redis: Redis, settings: Settings, room: str) -> dict[str, Any]:
    """``{now, signed, tasks, done_hidden, claims}``: the tasks not done (by id), then the
    newest MAX_DONE done ones; the live claims by agent and path. ``now`` is Redis' clock."""
    settings = replace(settings, room=room)
    tasks_board, book = TaskBoard.of(redis, settings), ClaimBook.of(redis, settings)
    signed = tasks_board.signer is not None
    tasks = await tasks_board.tasks()
    now, claims = await book.claims()
    open_tasks = [task for task in tasks if task.status != "done"]
    done = [task for task in tasks if task.status == "done"]
    shown = open_tasks + done[-MAX_DONE:]
    return {"now": now, "signed": signed,
            "tasks": [shown_task(task, signed=signed) for task in shown],
            "done_hidden": len(done) - min(len(done), MAX_DONE),
            "claims": [shown_claim(claim, signed=signed) for claim in claims]}


async def task(redis: Redis, settings: Settings, room: str, task_id: str) -> dict[str, Any]:
    """One task with its detail and history (oldest first), as `bridge tasks show --json`."""
    if not ID_PATTERN.match(task_id):
        raise Refused(400, "not a task id: task ids are t1, t2, …")
    tasks_board = TaskBoard.of(redis, replace(settings, room=room))
    try:
        found = await tasks_board.get(task_id)
    except TaskRefused as e:
        raise Refused(404, str(e)) from None
    record = task_record(found, signed=tasks_board.signer is not None)
    record["marker"] = MARKERS.get(found.problem, "")
    record["history"] = [{"at": entry.at, "actor": entry.actor, "what": entry.what}
                         for entry in await tasks_board.history(task_id)]
    return record


def _params(data: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(data, dict):
        raise Refused(400, "send a JSON object {action, title, detail, assignee, task_id}")
    action = data.get("action")
    if action not in ACTIONS:
        raise Refused(400, f"action: one of {', '.join(ACTIONS)}")
    values: dict[str, str] = {}
    for name in FIELDS:
        value = data.get(name, "")
        if not isinstance(value, str):
            raise Refused(400, f"{name}: a string")
        values[name] = value
    if action == "add":
        return action, {"title": values["title"], "detail": values["detail"],
                        "assignee": values["assignee"].strip(),
                        "waits_for": values["waits_for"].replace(",", " ").split()}
    return action, {"task_id": values["task_id"].strip(),
                    "assignee": values["assignee"].strip() if action == "assign" else None}


async def change(redis: Redis, settings: Settings, room: str, data: Any) -> dict[str, Any]:
    """``data``: the page's JSON ``{action: add | assign | done, title, detail, assignee,
    waits_for, task_id}``. Returns ``{task, said, told, not_told}``; a refusal raises Refused
    with the board's own words (TaskRefused's message)."""
    action, params = _params(data)
    settings = replace(settings, room=room)
    tasks_board = TaskBoard.of(redis, settings)
    try:
        made = await apply_change(settings, tasks_board, action, OPERATOR, **params)
    except NoPermissionError as e:
        raise Refused(403, _read_only(e, room)) from None
    except RedisRefused as e:
        raise Refused(403, _read_only(e, room)) from None
    except TaskTaken as e:
        raise Refused(409, str(e)) from None
    except TaskRefused as e:
        raise Refused(400, str(e)) from None
    except BridgeError as e:  # the board changed under us too often
        raise Refused(409, str(e)) from None
    told = sorted({name for name, _ in made.told} - set(made.unsent))
    return {"task": shown_task(made.task, signed=tasks_board.signer is not None),
            "said": made.said, "told": told, "not_told": made.unsent}


def _read_only(error: Exception, room: str) -> str:
    return (f"this Redis user may not change the board ({error}). bridge web changes it with "
            f"the user of its --redis URL: give it one made by `bridge acl --room {room} "
            f"--agent NAME`, not a read-only one")
