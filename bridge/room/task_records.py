"""The room's task board on Redis: the one script that changes it (TASK, atomic: create, claim,
assign, update), its typed call, and a task as read (Task). What an agent or operator does with
them is ``bridge.room.tasks``.

Why a compare-and-set: with a room secret a task carries a signature over its fields as they
are after the change, and only the writer can make it (Redis never sees the secret). So the
writer reads the task (its ``rev``), computes the new fields and their signature, and the
script applies them only if ``rev`` is unchanged; otherwise it answers ``retry`` and the writer
reads again. The script checks everything that must hold at the moment of the change: a claim
of a task somebody holds is refused with who holds it (before the rev is compared, so the
losers of a race are told at once), a task that waits for unfinished ones cannot be started,
the ids it waits for exist and (when they change) make no cycle, the limits per room and per
assignee. A full board makes room by removing its oldest done task: a removed task counts as
done for the tasks that waited for it (only done ones are removed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bridge.redis.lua import NOW_MS, TAIL, Call, Script
from bridge.room.keys import NAME_PATTERN
from bridge.room.untrusted import bounded

STATUSES = ("open", "in_progress", "blocked", "done")
ID_PATTERN = re.compile(r"^t[1-9][0-9]{0,8}\Z")
MAX_TITLE, MAX_DETAIL, MAX_WAITS = 200, 4000, 20
MAX_OPEN = 1000  # tasks not done, per room
MAX_TASKS = 10_000  # every task the board keeps; past it the oldest done ones go
MAX_PER_ASSIGNEE = 100  # tasks not done, per assignee
MAX_HISTORY = 50  # entries kept per task
# the fields a writer sets, in signed order; created and updated are Redis' time, not signed
TASK_FIELDS = ("id", "title", "detail", "creator", "assignee", "status", "waits_for", "rev",
               "by")
READ_FIELDS = (*TASK_FIELDS, "created", "updated", "sig")


@dataclass(frozen=True)
class TaskCall(Call):
    """TASK. ``record``: the task's new field/value pairs (TASK_FIELDS), as signed."""

    HEAD: ClassVar[str] = NOW_MS
    task_seq_key: str
    tasks_key: str
    open_key: str
    task_prefix: str
    history_prefix: str
    action: str  # create, claim, assign, update
    id: str
    number: int
    rev: str  # the rev the writer read ('' for create)
    status: str  # the new status
    assignee: str  # the new assignee ('' for none)
    waits_for: str  # the ids it waits for, space-separated, when set (create, or a change)
    set_waits: str  # '1' when waits_for is set by this change
    sig: str  # '' when the room has no secret
    note: str  # the history entry after "MS "
    record: tuple[str, ...] = field(metadata=TAIL)

    def more_args(self) -> list[Any]:
        return list(self.record)


# Returns {'ok'}, or a refusal: {'retry'} (changed since read), {'taken', holder, status},
# {'state', status}, {'waits', ids}, {'missing', id}, {'cycle', id}, {'limit', 'open'},
# {'limit', 'assignee', count}.
TASK = Script("task", TaskCall, f"""
local MAX_OPEN, MAX_TASKS, MAX_HISTORY = {MAX_OPEN}, {MAX_TASKS}, {MAX_HISTORY}
local MAX_PER_ASSIGNEE = {MAX_PER_ASSIGNEE}
""" + """
local key = task_prefix .. id
local old_status, old_assignee, waits = '', '', waits_for
if action == 'create' then
  if (tonumber(redis.call('GET', task_seq_key)) or 0) + 1 ~= tonumber(number) then
    return {'retry'}
  end
  if redis.call('ZCARD', open_key) >= MAX_OPEN then return {'limit', 'open'} end
else
  local old = redis.call('HMGET', key, 'rev', 'status', 'assignee', 'waits_for')
  if not old[2] then return {'missing', id} end
  if action == 'claim' then
    if old[3] and old[3] ~= '' and old[2] ~= 'done' then return {'taken', old[3], old[2]} end
    if old[2] ~= 'open' then return {'state', old[2]} end
  end
  if (old[1] or '') ~= rev then return {'retry'} end
  old_status, old_assignee = old[2], old[3] or ''
  if set_waits ~= '1' then waits = old[4] or '' end
end
if set_waits == '1' then
  for w in string.gmatch(waits, '%S+') do
    if w == id then return {'cycle', id} end
    if redis.call('EXISTS', task_prefix .. w) == 0 then return {'missing', w} end
  end
  if action ~= 'create' then  -- a new task waits for older ones only: no cycle possible
    local seen, stack = {}, {}
    for w in string.gmatch(waits, '%S+') do stack[#stack + 1] = w end
    while #stack > 0 do
      local w = table.remove(stack)
      if w == id then return {'cycle', id} end
      if not seen[w] then
        seen[w] = true
        local further = redis.call('HGET', task_prefix .. w, 'waits_for') or ''
        for v in string.gmatch(further, '%S+') do stack[#stack + 1] = v end
      end
    end
  end
end
if status == 'in_progress' and old_status ~= 'in_progress' then
  local unfinished = {}
  for w in string.gmatch(waits, '%S+') do
    local done = redis.call('HGET', task_prefix .. w, 'status')
    if done and done ~= 'done' then unfinished[#unfinished + 1] = w end  -- removed: was done
  end
  if #unfinished > 0 then return {'waits', table.concat(unfinished, ' ')} end
end
if assignee ~= '' and status ~= 'done' and (assignee ~= old_assignee or old_status == 'done') then
  local count = 0
  for _, other in ipairs(redis.call('ZRANGE', open_key, 0, -1)) do
    if other ~= id and redis.call('HGET', task_prefix .. other, 'assignee') == assignee then
      count = count + 1
    end
  end
  if count >= MAX_PER_ASSIGNEE then return {'limit', 'assignee', count} end
end
if action == 'create' then
  -- a full board removes its oldest done tasks (at most MAX_OPEN of MAX_TASKS are not done)
  local excess = redis.call('ZCARD', tasks_key) - MAX_TASKS + 1
  local start = 0
  while excess > 0 do
    local oldest = redis.call('ZRANGE', tasks_key, start, start + 99)
    if #oldest == 0 then break end
    for _, old_id in ipairs(oldest) do
      if excess > 0 and not redis.call('ZSCORE', open_key, old_id) then
        redis.call('DEL', task_prefix .. old_id, history_prefix .. old_id)
        redis.call('ZREM', tasks_key, old_id)
        excess = excess - 1
      else
        start = start + 1
      end
    end
  end
  redis.call('INCR', task_seq_key)
end
redis.call('HSET', key, 'updated', now, unpack(ARGV, nargs + 1))
if action == 'create' then
  redis.call('HSET', key, 'created', now)
  redis.call('ZADD', tasks_key, number, id)
end
if status == 'done' then
  redis.call('ZREM', open_key, id)
else
  redis.call('ZADD', open_key, number, id)
end
if sig ~= '' then redis.call('HSET', key, 'sig', sig) else redis.call('HDEL', key, 'sig') end
local history = history_prefix .. id
redis.call('LPUSH', history, now .. ' ' .. note)
redis.call('LTRIM', history, 0, MAX_HISTORY - 1)
return {'ok'}
""")

SCRIPTS = (TASK,)


def _ms(text: str) -> int:
    return int(text) if 0 < len(text) <= 20 and text.isascii() and text.isdigit() else 0


def _ids(text: str) -> tuple[str, ...]:
    return tuple(w for w in text.split()[:MAX_WAITS] if ID_PATTERN.match(w))


def _name(text: str) -> str:
    return text if NAME_PATTERN.match(text) else ("?" if text else "")


@dataclass(frozen=True)
class Task:
    """One task as read: every field bounded and cleaned, whoever wrote it. ``problem`` is why
    its signature fails ("" when good, or the room has no secret)."""

    id: str
    title: str
    detail: str
    creator: str
    assignee: str
    status: str
    waits_for: tuple[str, ...]
    rev: int
    by: str  # who changed it last
    created: int  # ms since epoch, Redis' clock
    updated: int
    problem: str = ""

    @property
    def number(self) -> int:
        return int(self.id[1:])

    @classmethod
    def from_fields(cls, task_id: str, raw: dict[str, str], problem: str = "") -> Task:
        """From the task's hash as read (READ_FIELDS; missing ones are '')."""
        status = raw["status"] if raw["status"] in STATUSES else "?"
        rev = _ms(raw["rev"])
        return cls(task_id, bounded(raw["title"], MAX_TITLE), bounded(raw["detail"], MAX_DETAIL),
                   _name(raw["creator"]), _name(raw["assignee"]), status,
                   _ids(raw["waits_for"]), rev, _name(raw["by"]), _ms(raw["created"]),
                   _ms(raw["updated"]), problem)


@dataclass(frozen=True)
class HistoryEntry:
    """One entry of a task's history, as read: when, who, and what (cleaned, bounded)."""

    at: int
    actor: str
    what: str

    @classmethod
    def parse(cls, entry: str) -> HistoryEntry:
        at, _, rest = entry.partition(" ")
        actor, _, what = rest.partition(" ")
        return cls(_ms(at), _name(actor), bounded(what, 300))
