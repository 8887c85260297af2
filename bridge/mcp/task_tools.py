"""The task board's two tools: ``task`` (create, claim, assign, update) and ``tasks`` (the
board, filtered, or one task with its history). The board's rules are the room layer's
(``bridge.room.tasks``); a refusal there (taken, waits, a limit, a bad value) is raised as a
BridgeError and so answered as a tool error with its message.

Told, not polled: the agent that makes a change tells whom it concerns (whom:
``bridge.room.tasks.notices``) with an ordinary room message, sent after the change through
the room's send path, so it arrives like any message and counts as one for turns. The board
is the truth: if this process dies between the change and the message, the change stands and
the notice is missing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from redis.exceptions import RedisError

from bridge.errors import BridgeError, TaskTaken
from bridge.room.connection import Room
from bridge.room.task_records import MAX_WAITS, STATUSES, HistoryEntry, Task
from bridge.room.tasks import TaskBoard, check_status, done_notices, notices
from bridge.room.untrusted import clean

ACTIONS = ("create", "claim", "assign", "update")
MAX_LISTED = 100  # tasks one `tasks` answer shows; the rest are counted

TASK_TOOLS: list[dict[str, Any]] = [
    {
        "name": "task",
        "description": (
            "Change the room's task board. create: title (detail, assignee, waits_for "
            "optional). claim: take open task id. assign: id to assignee. update: id's "
            "status, title, detail or waits_for."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "action": {"enum": list(ACTIONS)},
                "id": {"type": "string", "description": "e.g. t3"},
                "title": {"type": "string"},
                "detail": {"type": "string"},
                "assignee": {"type": "string"},
                "status": {"enum": list(STATUSES)},
                "waits_for": {"type": "array", "items": {"type": "string"},
                              "maxItems": MAX_WAITS},
            },
            "required": ["action"],
        },
    },
    {
        "name": "tasks",
        "description": ("List the room's tasks, filtered by status, assignee or mine; with id, "
                        "one task's detail and history."),
        "inputSchema": {
            "type": "object",
            "properties": {
                "status": {"enum": list(STATUSES)},
                "assignee": {"type": "string"},
                "mine": {"type": "boolean"},
                "id": {"type": "string"},
            },
        },
    },
]
TASK_TOOL_NAMES = frozenset(tool["name"] for tool in TASK_TOOLS)

# (recipients, text): sends one room message; the tools module gives the room's send path
Send = Callable[[list[str], str], Awaitable[None]]


def _string(arguments: dict[str, Any], name: str) -> str | None:
    value = arguments.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BridgeError(f"`{name}` must be a string, not {type(value).__name__}")
    return value


def _needed(arguments: dict[str, Any], name: str, action: str) -> str:
    value = _string(arguments, name)
    if not value:
        raise BridgeError(f"task action {action} needs `{name}`")
    return value


def line(task: Task) -> str:
    """One task as one line: id, status, assignee, what it waits for, the title."""
    waits = f" (waits for {' '.join(task.waits_for)})" if task.waits_for else ""
    marked = f" [{task.problem}]" if task.problem else ""
    return (f"{task.id} [{task.status}] {task.assignee or 'nobody'}{waits}{marked}: "
            f"{clean(task.title)}")


def shown(task: Task, history: list[HistoryEntry]) -> str:
    """One task in full, with its history."""
    lines = [line(task), f"created by {task.creator or '-'}; last change by {task.by or '-'}"]
    if task.problem:
        lines.append(f"signature: {task.problem} (not written by a holder of the room secret)")
    if task.detail:
        lines.append(f"detail: {task.detail}")
    lines += ["history:", *(f"- {entry.actor} {entry.what}" for entry in history)]
    return "\n".join(lines)


async def change(board: TaskBoard, actor: str, arguments: dict[str, Any]
                 ) -> tuple[Task, list[tuple[str, str]]]:
    """The ``task`` tool's change, and the notices it calls for."""
    action = arguments.get("action")
    if action not in ACTIONS:
        raise BridgeError(f"`action` must be one of {', '.join(ACTIONS)}, not {action!r:.40}")
    waits = arguments.get("waits_for")
    if waits is not None and (not isinstance(waits, list)
                              or not all(isinstance(w, str) for w in waits)):
        raise BridgeError("`waits_for` must be a list of task ids, like [\"t1\", \"t2\"]")
    if action == "create":
        task = await board.create(actor, _needed(arguments, "title", action),
                                  detail=_string(arguments, "detail") or "",
                                  assignee=_string(arguments, "assignee") or "",
                                  waits_for=waits or ())
        return task, notices(action, None, task, actor)
    task_id = _needed(arguments, "id", action)
    if action == "claim":
        try:
            return await board.claim(task_id, actor), []
        except TaskTaken as e:  # a task assigned to the claimer: claiming it starts it
            if e.holder != actor:
                raise
            return await board.update(task_id, actor, status="in_progress"), []
    before = await board.get(task_id)
    if action == "assign":
        task = await board.assign(task_id, _needed(arguments, "assignee", action), actor)
        return task, notices(action, before, task, actor)
    task = await board.update(task_id, actor, status=_string(arguments, "status"),
                              title=_string(arguments, "title"),
                              detail=_string(arguments, "detail"), waits_for=waits)
    return task, await done_notices(board, before, task, actor)


async def listing(board: TaskBoard, me: str, arguments: dict[str, Any]) -> str:
    """The ``tasks`` tool's answer."""
    task_id = _string(arguments, "id")
    if task_id:
        return shown(await board.get(task_id), await board.history(task_id))
    status, assignee = _string(arguments, "status"), _string(arguments, "assignee")
    if status is not None:
        check_status(status)
    mine = arguments.get("mine")
    if mine is not None and not isinstance(mine, bool):
        raise BridgeError("`mine` must be true or false")
    if mine:
        assignee = me
    found = [task for task in await board.tasks()
             if (status is None or task.status == status)
             and (assignee is None or task.assignee == assignee)]
    if not found:
        filtered = " matching that" if status or assignee else ""
        return f"No tasks{filtered} on the board."
    lines = [line(task) for task in found[:MAX_LISTED]]
    if len(found) > MAX_LISTED:
        lines.append(f"… and {len(found) - MAX_LISTED} more: filter by status or assignee")
    return "\n".join(lines)


async def answer(board: TaskBoard, me: str, name: str, arguments: dict[str, Any],
                 send: Send) -> str:
    """Answer ``task`` or ``tasks`` as agent ``me``; ``send`` tells whom a change concerns."""
    if name == "tasks":
        return await listing(board, me, arguments)
    task, told = await change(board, me, arguments)
    said = {"create": "created", "claim": "claimed", "assign": "assigned",
            "update": "updated"}[arguments["action"]]
    text = f"{said}: {line(task)}"
    reached, undelivered = [], []
    for recipient, notice in told:
        try:
            await send([recipient], notice)
            reached.append(recipient)
        except (BridgeError, RedisError, OSError) as e:  # the change stands: the board is
            undelivered.append(f"{recipient} ({str(e)[:200]})")  # the truth
    if reached:
        text += f"\n(told {', '.join(sorted(set(reached)))})"
    if undelivered:
        text += f"\n(the change stands, but could not tell: {'; '.join(undelivered)})"
    return text


async def answer_task(room: Room, name: str, arguments: dict[str, Any]) -> str:
    """``task`` or ``tasks`` for the agent of ``room``; its notices go through the room's
    ordinary send path (shielded like send_message's: a stop lets a send under way finish)."""
    async def send(to: list[str], text: str) -> None:
        with anyio.CancelScope(shield=True):
            await room.send(to, text)

    return await answer(TaskBoard.of(room.redis, room.settings), room.name, name, arguments,
                        send)
