"""File claims on Redis: the one script that changes them (CLAIMS, atomic: claim, release,
release every claim of an agent, renew), its typed call, a claim as read (FileClaim), and the
rule for when two patterns overlap. What an agent or operator does with them is
``bridge.room.claims``.

A claim is a path or a glob relative to the repository's root (``src/api``, ``src/*.py``,
``docs/**``), held by one agent, exclusive or shared, until its expiry. A plain path covers
itself and everything under it; a glob covers what it matches (as ``fnmatch``: ``*`` also
matches ``/``) and everything under that.

When two patterns overlap (the script's ``overlaps``, and ``overlaps`` here, the same rule):
- two plain paths overlap when they are equal or one lies under the other (``src`` and
  ``src/a.py``; not ``src`` and ``src2``): exact;
- when either is a glob, they overlap when the literal part of each (what comes before its
  first ``*``, ``?`` or ``[``) is a prefix of the other's. Sound: a path both could cover
  starts with both literal parts, so one is a prefix of the other. Coarse on purpose (claims
  are advisory; a false "overlaps" costs a question, a false "free" a clash): ``src/*.py``
  overlaps ``src/a.md``, and ``*.md`` overlaps everything.

The script prunes expired claims first, refuses a claim that overlaps another agent's
exclusive one (or, exclusive itself, anyone else's) and answers the conflicting records, so
the caller can check their signatures (with a room secret, a claim written with redis-cli is
not genuine: the caller calls again with it in ``ignore``, and it blocks nobody).
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bridge.redis.lua import NOW_MS, TAIL, Call, Script
from bridge.room.keys import NAME_PATTERN
from bridge.room.untrusted import bounded

MODES = ("exclusive", "shared")
MAX_PATH, MAX_REASON = 512, 200
MAX_PER_AGENT, MAX_PER_ROOM = 100, 2000
MIN_TTL, MAX_TTL, DEFAULT_TTL = 1.0, 86400.0, 3600.0  # seconds
MAX_CONFLICTS = 20  # records the script answers with a refusal
# the fields a claim's signature covers, in order (its times are Redis', not signed)
SIGNED_FIELDS = ("agent", "pattern", "mode", "reason")
GLOB = re.compile(r"[*?\[]")


def literal_part(pattern: str) -> tuple[str, bool]:
    """What comes before the first wildcard, and whether there is one."""
    found = GLOB.search(pattern)
    return (pattern[:found.start()], True) if found else (pattern, False)


def overlap_key(pattern: str) -> str:
    """What every path a pattern covers starts with: a plain path and ``/`` (itself, or
    anything under it), or a glob's literal part."""
    literal, glob = literal_part(pattern)
    return literal if glob else pattern + "/"


def overlaps(a: str, b: str) -> bool:
    """Whether two claims' patterns may cover a common path (the module's rule): one's key
    starts with the other's. Exact for two plain paths; with a glob it may find an overlap
    where none can be (towards "overlaps"), and never misses one."""
    ka, kb = overlap_key(a), overlap_key(b)
    return ka.startswith(kb) or kb.startswith(ka)


def covers(pattern: str, path: str) -> bool:
    """Whether a claim's pattern covers a path (both relative to the repository's root)."""
    if not literal_part(pattern)[1]:
        return path == pattern or path.startswith(pattern + "/")
    parts = path.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:n]), pattern)
               for n in range(1, len(parts) + 1))


@dataclass(frozen=True)
class ClaimsCall(Call):
    """CLAIMS. ``items``: claim: pattern, sig pairs; release: patterns; else none."""

    HEAD: ClassVar[str] = NOW_MS
    claims_key: str
    records_key: str
    held_key: str  # the agent's set of claims
    held_prefix: str  # + a name: any agent's set (pruning)
    action: str  # claim, release, release_all, renew
    agent: str
    mode: str
    ttl_ms: int
    reason: str
    ignore: str  # claim: ids ("AGENT PATTERN") not to count, newline-separated (not genuine)
    items: tuple[str, ...] = field(default=(), metadata=TAIL)

    def more_args(self) -> list[Any]:
        return list(self.items)


# Returns {'ok', n} (n claims made, released or renewed), or for a claim a refusal:
# {'conflict', id, record, id, record, ...} or {'limit', 'agent' | 'room', count}.
CLAIMS = Script("claims", ClaimsCall, f"""
local MAX_AGENT, MAX_ROOM, MAX_CONFLICTS = {MAX_PER_AGENT}, {MAX_PER_ROOM}, {MAX_CONFLICTS}
""" + """
local function key_of(p)  -- overlap_key: what every path it covers starts with
  local i = string.find(p, '[%*%?%[]')
  if i then return string.sub(p, 1, i - 1) end
  return p .. '/'
end
local sub = string.sub
local function split(id)
  local s = string.find(id, ' ', 1, true)
  if not s then return id, '' end
  return string.sub(id, 1, s - 1), string.sub(id, s + 1)
end
local function record(id)
  local raw = redis.call('HGET', records_key, id)
  if not raw then return nil, '' end
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' then return rec, raw end
  return {}, raw
end
local function drop(id)
  redis.call('ZREM', claims_key, id)
  redis.call('HDEL', records_key, id)
  redis.call('SREM', held_prefix .. (split(id)), id)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', claims_key, '-inf', now)) do drop(id) end
if action == 'renew' then
  local n = 0
  for _, id in ipairs(redis.call('SMEMBERS', held_key)) do
    local rec = record(id)
    if rec and redis.call('ZSCORE', claims_key, id) then
      local ttl = tonumber(rec.ttl) or 0
      if ttl > 0 then redis.call('ZADD', claims_key, 'GT', now + ttl, id) end
      n = n + 1
    else
      redis.call('SREM', held_key, id)
    end
  end
  return {'ok', n}
end
if action == 'release' or action == 'release_all' then
  local ids = {}
  if action == 'release_all' then
    ids = redis.call('SMEMBERS', held_key)
  else
    for i = nargs + 1, #ARGV do ids[#ids + 1] = agent .. ' ' .. ARGV[i] end
  end
  local n = 0
  for _, id in ipairs(ids) do
    if redis.call('ZSCORE', claims_key, id) then n = n + 1 end
    drop(id)
  end
  return {'ok', n}
end
local ignored = {}
for id in string.gmatch(ignore, '[^\\n]+') do ignored[id] = true end
local exclusive = mode == 'exclusive'
local wanted, lengths = {}, {}  -- the keys of the wanted patterns, and their lengths
for i = nargs + 1, #ARGV, 2 do
  wanted[#wanted + 1] = key_of(ARGV[i])
  lengths[#wanted] = #wanted[#wanted]
end
local all = redis.call('ZRANGE', claims_key, 0, -1)
local mine, conflicts = 0, {}
for _, id in ipairs(all) do
  local who, pattern = split(id)
  if who == agent then
    mine = mine + 1
  elseif not ignored[id] and #conflicts < 2 * MAX_CONFLICTS then
    local k = key_of(pattern)
    local n = #k
    for j, w in ipairs(wanted) do
      local m = lengths[j]
      -- one key starts with the other (the shorter one compared with the longer's start)
      if (m <= n and sub(k, 1, m) == w) or (n < m and sub(w, 1, n) == k) then
        local rec, raw = record(id)
        -- a record that is not plainly shared counts as exclusive (towards "overlaps")
        if exclusive or not rec or rec.mode ~= 'shared' then
          conflicts[#conflicts + 1] = id
          conflicts[#conflicts + 1] = raw
          break
        end
      end
    end
  end
end
if #conflicts > 0 then return {'conflict', unpack(conflicts)} end
local new = 0
for i = nargs + 1, #ARGV, 2 do
  if not redis.call('ZSCORE', claims_key, agent .. ' ' .. ARGV[i]) then new = new + 1 end
end
if mine + new > MAX_AGENT then return {'limit', 'agent', mine} end
if #all + new > MAX_ROOM then return {'limit', 'room', #all} end
for i = nargs + 1, #ARGV, 2 do
  local id = agent .. ' ' .. ARGV[i]
  local old = record(id)
  local since = (old and tonumber(old.since)) or now
  redis.call('HSET', records_key, id, cjson.encode({mode = mode, reason = reason,
    since = since, ttl = tonumber(ttl_ms), sig = ARGV[i + 1]}))
  redis.call('ZADD', claims_key, now + tonumber(ttl_ms), id)
  redis.call('SADD', held_key, id)
end
return {'ok', #wanted}
""")

SCRIPTS = (CLAIMS,)


def _ms(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and 0 <= value < 10**15 else 0


@dataclass(frozen=True)
class FileClaim:
    """One claim as read: every field bounded and cleaned, whoever wrote it. ``problem`` is
    why its signature fails ("" when good, or the room has no secret)."""

    agent: str
    pattern: str
    mode: str  # exclusive, shared, or "?" (unreadable: counted as exclusive)
    reason: str
    since: int  # ms since epoch, Redis' clock
    expires: int
    problem: str = ""

    @property
    def exclusive(self) -> bool:
        return self.mode != "shared"

    def covers(self, path: str) -> bool:
        return covers(self.pattern, path)

    @staticmethod
    def parse_id(claim_id: str) -> tuple[str, str]:
        agent, _, pattern = claim_id.partition(" ")
        return agent, pattern

    @staticmethod
    def parse_record(raw: str) -> dict[str, Any]:
        try:
            record = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    @classmethod
    def read(cls, claim_id: str, raw: str, expires: int, problem: str = "") -> FileClaim:
        agent, pattern = cls.parse_id(claim_id)
        record = cls.parse_record(raw)
        mode = record.get("mode")
        reason = record.get("reason")
        return cls(agent if NAME_PATTERN.match(agent) else "?", bounded(pattern, MAX_PATH),
                   mode if mode in MODES else "?",
                   bounded(reason, MAX_REASON) if isinstance(reason, str) else "",
                   _ms(record.get("since")), expires, problem)


def signed_values(claim_id: str, raw: str) -> tuple[list[str], str]:
    """The values a claim's signature covers, as written, and its sig."""
    agent, pattern = FileClaim.parse_id(claim_id)
    record = FileClaim.parse_record(raw)
    values = [agent, pattern, *(str(record.get(name, "")) for name in ("mode", "reason"))]
    sig = record.get("sig")
    return values, sig if isinstance(sig, str) else ""
