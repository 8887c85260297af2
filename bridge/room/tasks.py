"""The room's task board: create, claim, assign and update tasks, and read them, for an agent
or an operator (the script and a task as read are ``bridge.room.task_records``).

Every change is one call of the TASK function, atomic on the Redis server. The writer reads
the task first, computes its new fields (and, when the room has a secret, their signature:
a task written with redis-cli has none, and is read back with a ``problem``), and the script
applies them only if nobody changed the task meanwhile; otherwise it reads again. A claim that
loses a race is refused at once, naming the holder (TaskTaken).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bridge.errors import BridgeError, TaskRefused, TaskTaken
from bridge.redis.cluster import publish_command
from bridge.redis.lua import reply_text
from bridge.room.board_news import BoardNews
from bridge.room.functions import Function
from bridge.room.keys import NAME_PATTERN, Keys
from bridge.room.signing import Signer, make_signer
from bridge.room.task_records import (
    ID_PATTERN,
    MAX_DETAIL,
    MAX_HISTORY,
    MAX_OPEN,
    MAX_PER_ASSIGNEE,
    MAX_TITLE,
    MAX_WAITS,
    READ_FIELDS,
    STATUSES,
    TASK,
    TASK_FIELDS,
    HistoryEntry,
    Task,
    TaskCall,
)
from bridge.room.untrusted import bounded
from bridge.settings import Settings

ATTEMPTS = 100  # reads again after a change by someone else; each loser of a claim stops at once
SHOWN_TITLE = 120  # a title's characters in a notice


def check_id(task_id: str) -> str:
    if not ID_PATTERN.match(task_id):
        raise TaskRefused(f"no task {task_id[:40]!r}: task ids are t1, t2, …; "
                          f"`bridge tasks` lists them")
    return task_id


def check_name(name: str, what: str) -> str:
    if not NAME_PATTERN.match(name):
        raise TaskRefused(f"bad {what} {name[:40]!r}: use 1-32 of a-z 0-9 _ . - starting with a "
                          f"letter or digit (an agent's name)")
    return name


def check_status(status: str) -> str:
    if status not in STATUSES:
        raise TaskRefused(f"bad status {status[:40]!r}: use one of {', '.join(STATUSES)}")
    return status


def check_title(title: str) -> str:
    title = title.strip()
    if not title:
        raise TaskRefused("a task needs a title: say in a line what is to be done")
    if len(title) > MAX_TITLE:
        raise TaskRefused(f"title of {len(title)} characters: at most {MAX_TITLE}; put the rest "
                          f"in the detail")
    return title


def check_detail(detail: str) -> str:
    if len(detail) > MAX_DETAIL:
        raise TaskRefused(f"detail of {len(detail)} characters: at most {MAX_DETAIL}; link to a "
                          f"document for more")
    return detail


def check_waits(waits_for: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(waits_for))
    if len(ids) > MAX_WAITS:
        raise TaskRefused(f"a task may wait for at most {MAX_WAITS} tasks, not {len(ids)}: "
                          f"split it")
    return [check_id(task_id) for task_id in ids]


@dataclass
class TaskBoard:
    """One room's board on one Redis client."""

    redis: Redis
    keys: Keys
    signer: Signer | None
    publish: str = "PUBLISH"  # of the board events (bridge.room.board_news)

    @classmethod
    def of(cls, redis: Redis, settings: Settings) -> TaskBoard:
        return cls(redis, Keys(settings.room),
                   make_signer(settings.secret, settings.room, settings.replay_window),
                   publish_command(settings.redis_url))

    def __post_init__(self) -> None:
        self._task = Function(self.redis, TASK)
        self.news = BoardNews(self.redis, self.keys, self.signer, self.publish)

    # ------------------------------------------------------------ changes
    async def create(self, actor: str, title: str, *, detail: str = "", assignee: str = "",
                     waits_for: Iterable[str] = ()) -> Task:
        check_name(actor, "name")
        title, detail = check_title(title), check_detail(detail)
        if assignee:
            check_name(assignee, "assignee")
        waits = " ".join(check_waits(waits_for))
        for _ in range(ATTEMPTS):
            number = int(reply_text(await self.redis.get(self.keys.task_seq)) or "0") + 1
            task_id = f"t{number}"
            record = {"id": task_id, "title": title, "detail": detail, "creator": actor,
                      "assignee": assignee, "status": "open", "waits_for": waits, "rev": "1",
                      "by": actor}
            note = f"{actor} created" + (f", assigned to {assignee}" if assignee else "")
            if await self._apply("create", record, number, "", note, set_waits=True):
                await self.news.tell(actor, f"created {task_id}"
                                     + (f" for {assignee}" if assignee not in ("", actor) else ""),
                                     title)
                return await self.get(task_id)
        raise self._busy()

    async def claim(self, task_id: str, actor: str) -> Task:
        """The task, now in progress for ``actor``; TaskTaken if somebody has it."""
        check_name(actor, "name")
        return await self._change("claim", check_id(task_id), actor,
                                  {"assignee": actor, "status": "in_progress"}, "claimed",
                                  f"claimed {task_id}")

    async def assign(self, task_id: str, assignee: str, actor: str) -> Task:
        check_name(actor, "name")
        check_name(assignee, "assignee")
        return await self._change("assign", check_id(task_id), actor, {"assignee": assignee},
                                  f"assigned to {assignee}", f"assigned {task_id} to {assignee}")

    async def update(self, task_id: str, actor: str, *, status: str | None = None,
                     title: str | None = None, detail: str | None = None,
                     waits_for: Iterable[str] | None = None) -> Task:
        """Set the status, the title, the detail and/or the tasks it waits for (refused if
        that makes a cycle). Starting a task nobody has (in progress) makes it the actor's."""
        check_name(actor, "name")
        change: dict[str, str] = {}
        if status is not None:
            change["status"] = check_status(status)
        if title is not None:
            change["title"] = check_title(title)
        if detail is not None:
            change["detail"] = check_detail(detail)
        if waits_for is not None:
            change["waits_for"] = " ".join(check_waits(waits_for))
        if not change:
            raise TaskRefused("nothing to change: give a status, a title, a detail or the "
                              "tasks it waits for")
        what = ", ".join(f"status {value}" if name == "status" else
                         f"waits for {value or 'nothing'}" if name == "waits_for" else
                         f"{name} changed" for name, value in change.items())
        said = f"set {task_id} to {status}" if status is not None else f"changed {task_id}"
        return await self._change("update", check_id(task_id), actor, change, what, said)

    async def _change(self, action: str, task_id: str, actor: str, change: dict[str, str],
                      note: str, said: str) -> Task:
        """Apply ``change``; ``note`` goes into the task's history, ``said`` into the board
        event (after the actor's name)."""
        for _ in range(ATTEMPTS):
            raw = await self._read(task_id)
            if not raw["status"]:
                raise self._missing(task_id)
            record = {name: raw[name] for name in TASK_FIELDS}
            record.update(change, rev=str(int(raw["rev"] or "0") + 1), by=actor)
            if record["status"] == "in_progress" and not record["assignee"]:
                record["assignee"] = actor
            if await self._apply(action, record, int(task_id[1:]), raw["rev"],
                                 f"{actor} {note}", set_waits="waits_for" in change):
                await self.news.tell(actor, said, record["title"])
                return await self.get(task_id)
        raise self._busy()

    async def _apply(self, action: str, record: dict[str, str], number: int, rev: str,
                     note: str, *, set_waits: bool) -> bool:
        """True once applied, False to read again; a refusal raises TaskRefused.
        ``set_waits``: the change sets what the task waits for (checked: they exist, no
        cycle)."""
        values = [record[name] for name in TASK_FIELDS]
        sig = self.signer.sign_record("task", values) if self.signer else ""
        pairs = tuple(item for pair in zip(TASK_FIELDS, values, strict=True) for item in pair)
        reply = await self._task(TaskCall(
            self.keys.task_seq, self.keys.tasks, self.keys.tasks_open, self.keys.task_prefix,
            self.keys.task_history_prefix, action, record["id"], number, rev, record["status"],
            record["assignee"], record["waits_for"], "1" if set_waits else "", sig, note,
            pairs))
        answer = [reply_text(part) for part in reply]
        if answer[0] == "ok":
            return True
        if answer[0] == "retry":
            return False
        raise self._refusal(record["id"], answer)

    def _refusal(self, task_id: str, answer: list[str]) -> TaskRefused:
        kind, detail = answer[0], answer[1:] + [""]
        if kind == "taken":
            holder = detail[0][:32]
            return TaskTaken(f"{task_id} is taken: {holder} has it ({detail[1][:20]}); pick "
                             f"another task, or ask {holder}", holder)
        if kind == "state":
            return TaskRefused(f"{task_id} is {detail[0][:20]}, not open: only an open task "
                               f"can be claimed")
        if kind == "waits":
            return TaskRefused(f"{task_id} waits for {detail[0][:200]}, not done yet: it "
                               f"cannot be started before they are")
        if kind == "missing" and detail[0] != task_id:  # a task it would wait for
            return TaskRefused(f"a task can only wait for tasks that exist: no task "
                               f"{detail[0][:40]} in room {self.keys.room!r}; `bridge tasks` "
                               f"lists them")
        if kind == "cycle":
            return TaskRefused(f"{task_id} cannot wait for those: {task_id} itself, or one "
                               f"that waits (through others) for {task_id}; none of them "
                               f"could ever start")
        if kind == "missing":
            return self._missing(detail[0][:40])
        if kind == "limit" and detail[0] == "open":
            return TaskRefused(f"the room has {MAX_OPEN} tasks not done, the most it holds: "
                               f"finish or close some first")
        if kind == "limit" and detail[0] == "assignee":
            return TaskRefused(f"{detail[1][:8]} tasks not done are assigned to that agent "
                               f"already, the most one may have ({MAX_PER_ASSIGNEE}): finish "
                               f"or reassign some first")
        return TaskRefused(f"the task script answered {answer[:3]!r}: is this bridge's version "
                           f"the same on every agent?")

    def _missing(self, task_id: str) -> TaskRefused:
        return TaskRefused(f"no task {task_id} in room {self.keys.room!r}; `bridge tasks` "
                           f"lists them")

    def _busy(self) -> BridgeError:
        return BridgeError(f"the board changed under us {ATTEMPTS} times in a row: others are "
                           f"writing it hard; try again")

    # ------------------------------------------------------------ reading
    async def _read(self, task_id: str) -> dict[str, str]:
        values = await self.redis.hmget(self.keys.task(task_id), list(READ_FIELDS))
        return {name: reply_text(value) for name, value in zip(READ_FIELDS, values, strict=True)}

    def _record(self, task_id: str, raw: dict[str, str]) -> Task:
        problem = ""
        if self.signer is not None:  # over the fields as written, before they are made safe
            problem = self.signer.record_problem(
                "task", [raw[name] for name in TASK_FIELDS], raw["sig"]) or ""
        return Task.from_fields(task_id, raw, problem)

    async def get(self, task_id: str) -> Task:
        raw = await self._read(check_id(task_id))
        if not raw["status"] and not raw["title"]:
            raise self._missing(task_id)
        return self._record(task_id, raw)

    async def tasks(self) -> list[Task]:
        """Every task of the board: the ones not done first, each group by id."""
        ids = [reply_text(raw) for raw in await self.redis.zrange(self.keys.tasks, 0, -1)]
        ids = [task_id for task_id in ids if ID_PATTERN.match(task_id)]
        found: list[Task] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            pipe: Any = self.redis.pipeline(transaction=False)
            for task_id in chunk:
                pipe.hmget(self.keys.task(task_id), list(READ_FIELDS))
            for task_id, values in zip(chunk, await pipe.execute(), strict=True):
                raw = {name: reply_text(value) for name, value in zip(READ_FIELDS, values,
                                                                    strict=True)}
                if raw["status"] or raw["title"]:
                    found.append(self._record(task_id, raw))
        return sorted(found, key=lambda task: (task.status == "done", task.number))

    async def history(self, task_id: str) -> list[HistoryEntry]:
        """The task's history, oldest first (the last MAX_HISTORY changes)."""
        entries = await self.redis.lrange(self.keys.task_history(check_id(task_id)), 0,
                                          MAX_HISTORY - 1)
        return [HistoryEntry.parse(reply_text(entry)) for entry in reversed(entries)]


# ------------------------------------------------------------ notices
def notices(action: str, before: Task | None, after: Task, actor: str) -> list[tuple[str, str]]:
    """Whom a change concerns and what they are told: (name, text) pairs. The assignee of a
    task assigned (or created assigned) to them by someone else; the previous holder of a
    task assigned away from them. (Done tasks: ``done_notices``, which reads the board.)"""
    title = bounded(after.title, SHOWN_TITLE)
    told: list[tuple[str, str]] = []
    if action in ("create", "assign") and after.assignee and after.assignee != actor and (
            before is None or before.assignee != after.assignee):
        told.append((after.assignee, f"[task {after.id}] assigned to you by {actor}: {title}"))
    if (action == "assign" and before is not None and before.assignee
            and before.assignee not in (after.assignee, actor) and before.status != "done"):
        told.append((before.assignee, f"[task {after.id}] taken over: assigned to "
                                      f"{after.assignee} by {actor}: {title}"))
    return told


async def done_notices(board: TaskBoard, before: Task, after: Task,
                       actor: str) -> list[tuple[str, str]]:
    """A task just done: the assignees of the tasks that wait for it are told (not the one
    who closed it)."""
    if after.status != "done" or before.status == "done":
        return []
    told: list[tuple[str, str]] = []
    for task in await board.tasks():
        if after.id in task.waits_for and task.assignee and task.assignee != actor \
                and task.status != "done":
            told.append((task.assignee, f"[task {task.id}] {after.id} it waits for is done "
                                        f"({actor}): {bounded(task.title, SHOWN_TITLE)}"))
    return told
