"""Presence records on Redis: the scripts that write and read them, each with its typed call
(claim, heartbeat, leave, status: one agent's own, used by ``bridge.room.presence``; list and
prune: everyone's), and a record as read (Participant).

A presence record is stale when its holder has not refreshed it within its TTL (the `ttl`
field, honoured up to MAX_TTL), or when it would never expire by itself (no expiry, or one
beyond MAX_TTL): a crashed holder's, or one written by hand. LIST and PRUNE drop stale
records; the caller publishes their `left` (reason timeout), signed when the room has a
secret, which a script cannot do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from bridge.redis.lua import NOW_MS, TAIL, Call, Script
from bridge.room.envelope import MAX_HOST, MAX_ROLE, MAX_STATUS
from bridge.room.keys import NAME_PATTERN
from bridge.room.signing import PRESENCE_FIELDS, Signer
from bridge.room.untrusted import bounded
from bridge.settings import DELIVERY_PATHS, MAX_TTL

MAX_PID = 10  # digits

# lapses_in(key, last_seen, ttl): the ms until a record lapses, 0 when it is stale
STALE = NOW_MS + f"local MAX_TTL = {int(MAX_TTL * 1000)}\n" + """
local function lapses_in(key, seen, ttl)
  seen, ttl = tonumber(seen), math.min(tonumber(ttl) or MAX_TTL, MAX_TTL)
  if not seen or now - seen > ttl then return 0 end
  local left = redis.call('PTTL', key)
  if left == -1 or left > MAX_TTL then return 0 end
  return math.min(ttl - (now - seen), ttl)
end
"""


@dataclass(frozen=True)
class RosterCall(Call):
    """LIST and PRUNE: the agents zset, and the prefix of the agents' hashes (they share the
    room's hash tag, so they sit in the same cluster slot)."""

    HEAD: ClassVar[str] = STALE
    agents_key: str
    agent_prefix: str


# Prunes expired members (and a stale record left under one), collecting their names.
_PRUNE = """
local pruned = {}
local function prune(name)
  redis.call('DEL', agent_prefix .. name)
  if redis.call('ZREM', agents_key, name) == 1 then pruned[#pruned + 1] = name end
end
for _, name in ipairs(redis.call('ZRANGEBYSCORE', agents_key, '-inf', now)) do
  local key = agent_prefix .. name
  local record = redis.call('HMGET', key, 'last_seen', 'ttl')  -- none when it has expired
  if lapses_in(key, record[1], record[2]) == 0 then prune(name) end
end
"""

# Run with every heartbeat, so that a crash is announced within about ttl * 4/3.
# Returns the pruned names.
PRUNE = Script("prune", RosterCall, _PRUNE + "return pruned")

# One string per agent, its fields joined by the unit separator (0x1f): one decode and one
# split per agent in Python, where eight decodes were most of list_participants' time. The
# name is the index's (the key the record is at). Each field is cut to a bound far above what
# bridge writes, so a record of megabytes written by hand never crosses the wire; a stale one
# is pruned, not listed. Returns {now, records, pruned names}.
LIST_FIELDS = ("name", "role", "host", "pid", "status", "delivery", "joined_at", "last_seen",
               "session", "version", "ttl", "sig", "client")
# how much of each (LIST_FIELDS order) is read: a record of megabytes written by hand is cut
LIST_LIMITS = (64, 256, 512, 32, 800, 16, 20, 20, 64, 64, 20, 160, 128)
FREE_TEXT = ("status", "client")  # fields in which the separator (0x1f) is replaced
LIST = Script("list", RosterCall, _PRUNE + f"""
local LIMITS = {{{", ".join(map(str, LIST_LIMITS))}}}
local FREE_TEXT = {{{", ".join(str(LIST_FIELDS.index(name) + 1) for name in FREE_TEXT)}}}
""" + """
local US, out = string.char(31), {}
for _, name in ipairs(redis.call('ZRANGE', agents_key, 0, -1)) do
  local key = agent_prefix .. name
  local record = redis.call('HMGET', key, 'name', 'role', 'host', 'pid', 'status',
    'delivery', 'joined_at', 'last_seen', 'session', 'version', 'ttl', 'sig', 'client')
  if record[1] then
    if lapses_in(key, record[8], record[11]) == 0 then
      prune(name)
    else
      record[1] = name
      for i = 1, 13 do
        local value = record[i] or ''
        if #value > LIMITS[i] then value = string.sub(value, 1, LIMITS[i]) end
        record[i] = value
      end
      for _, i in ipairs(FREE_TEXT) do
        if string.find(record[i], US, 1, true) then
          record[i] = (string.gsub(record[i], US, ' '))
        end
      end
      out[#out + 1] = table.concat(record, US)
    end
  end
end
return {now, out, pruned}
""")


@dataclass(frozen=True)
class ClaimCall(Call):
    """CLAIM. ``record``: our record's field/value pairs (the script adds the times)."""

    HEAD: ClassVar[str] = STALE
    agent_key: str
    agents_key: str
    cursor_key: str
    log_key: str
    epoch_key: str
    readers_key: str
    session: str
    ttl_ms: int
    name: str
    cursor_ttl_ms: int
    away_ms: int  # BRIDGE_AWAY_HOLD: the log holds our unread messages this long after we go
    events: str  # the events channel
    publish: str  # PUBLISH, or SPUBLISH on a cluster (bridge.redis.cluster.publish_command)
    joined_event: str  # '' for a quiet join
    stale_session: str  # a stale session that may be replaced ('' for none)
    new_epoch: str  # used if the room has none
    record: tuple[str, ...] = field(metadata=TAIL)

    def more_args(self) -> list[Any]:
        return list(self.record)


# Returns {1, cursor, fresh, cursor created, epoch, "<id> <seq>" of the log's last entry
# ("0-0 0" for an empty log)}.
# Refused while another session holds a claim that is not stale: {0, host, pid, session, ms
# until it lapses}. A stale claim is taken over, and what is left of its record deleted.
CLAIM = Script("claim", ClaimCall, """
local holder = redis.call('HMGET', agent_key, 'session', 'host', 'pid', 'last_seen', 'ttl')
if holder[1] and holder[1] ~= session and holder[1] ~= stale_session then
  local lapse = lapses_in(agent_key, holder[4], holder[5])
  if lapse > 0 then
    return {0, string.sub(holder[2] or '', 1, 512), string.sub(holder[3] or '', 1, 32),
      holder[1], lapse}
  end
end
local fresh = holder[1] ~= session
if fresh then redis.call('DEL', agent_key) end
redis.call('HSET', agent_key, 'last_seen', now, unpack(ARGV, nargs + 1))
if fresh then redis.call('HSET', agent_key, 'joined_at', now) end
redis.call('PEXPIRE', agent_key, ttl_ms)
redis.call('ZADD', agents_key, now + tonumber(ttl_ms), name)
redis.call('ZADD', readers_key, now + tonumber(ttl_ms) + tonumber(away_ms), name)
local epoch = redis.call('GET', epoch_key)
if not epoch then
  epoch = new_epoch
  redis.call('SET', epoch_key, epoch)
end
local last_id, last_seq = '0-0', '0'
local last = redis.call('XREVRANGE', log_key, '+', '-', 'COUNT', 1)
if last[1] then
  last_id = last[1][1]
  local fields = last[1][2]
  for i = 1, #fields, 2 do if fields[i] == 'seq' then last_seq = fields[i + 1] end end
end
local cursor = redis.call('GET', cursor_key)
local created = 0
if not cursor then
  -- a new name starts at the end of the log: it is not sent the room's history
  cursor = last_id .. ' ' .. last_seq .. ' ' .. epoch
  created = 1
  redis.call('SET', cursor_key, cursor, 'PX', cursor_ttl_ms)
else
  redis.call('PEXPIRE', cursor_key, cursor_ttl_ms)
end
if fresh and joined_event ~= '' then redis.call(publish, events, joined_event) end
return {1, cursor, fresh and 1 or 0, created, epoch, last_id .. ' ' .. last_seq}
""")


@dataclass(frozen=True)
class HeartbeatCall(Call):
    HEAD: ClassVar[str] = NOW_MS
    agent_key: str
    agents_key: str
    cursor_key: str
    readers_key: str
    session: str
    ttl_ms: int
    name: str
    cursor_ttl_ms: int
    away_ms: int


# The cursor lives as long as its agent is present, however quiet: an agent that receives
# nothing for longer than BRIDGE_CURSOR_TTL must not become a stranger to its room. So does
# its hold on the log (bridge.room.retention), and for BRIDGE_AWAY_HOLD after.
HEARTBEAT = Script("heartbeat", HeartbeatCall, """
if redis.call('HGET', agent_key, 'session') ~= session then return 0 end
redis.call('HSET', agent_key, 'last_seen', now)
redis.call('PEXPIRE', agent_key, ttl_ms)
redis.call('ZADD', agents_key, now + tonumber(ttl_ms), name)
redis.call('ZADD', readers_key, now + tonumber(ttl_ms) + tonumber(away_ms), name)
redis.call('PEXPIRE', cursor_key, cursor_ttl_ms)
return 1
""")


@dataclass(frozen=True)
class LeaveCall(Call):
    HEAD: ClassVar[str] = NOW_MS
    agent_key: str
    agents_key: str
    readers_key: str
    session: str
    name: str
    away_ms: int
    events: str
    publish: str
    left_event: str  # '' for a quiet leave


LEAVE = Script("leave", LeaveCall, """
if redis.call('HGET', agent_key, 'session') ~= session then return 0 end
redis.call('DEL', agent_key)
redis.call('ZREM', agents_key, name)
redis.call('ZADD', readers_key, now + tonumber(away_ms), name)
if left_event ~= '' then redis.call(publish, events, left_event) end
return 1
""")


@dataclass(frozen=True)
class SetStatusCall(Call):
    agent_key: str
    session: str
    status: str
    events: str
    publish: str
    status_event: str
    sig: str  # the record's new signature ('' when signing is off)


SET_STATUS = Script("set_status", SetStatusCall, """
if redis.call('HGET', agent_key, 'session') ~= session then return 0 end
redis.call('HSET', agent_key, 'status', status)
if sig ~= '' then redis.call('HSET', agent_key, 'sig', sig) end
redis.call(publish, events, status_event)
return 1
""")

SCRIPTS = (CLAIM, HEARTBEAT, LEAVE, SET_STATUS, PRUNE, LIST)


MAX_CLIENT = 64  # a client's "NAME VERSION", as shown


def pid_text(text: str) -> str:
    """A pid as written by a peer: digits, or '?'."""
    return text if 0 < len(text) <= MAX_PID and text.isascii() and text.isdigit() else "?"


def _ms(text: str) -> int:
    return int(text) if 0 < len(text) <= 20 and text.isascii() and text.isdigit() else 0


@dataclass(frozen=True)
class Participant:
    """One presence record as read: every field bounded and one printable line, whoever
    wrote it. ``problem`` is why its signature fails ("" when good, or the room has no
    secret)."""

    name: str
    role: str
    host: str
    pid: str
    status: str
    delivery: str
    joined_at: int  # ms since epoch, Redis clock
    last_seen: int
    problem: str = ""
    client: str = ""  # "NAME VERSION" of its MCP client (unsigned: a label, not a claim)

    @classmethod
    def from_fields(cls, joined: bytes, signer: Signer | None = None) -> Participant | None:
        """From one record of the LIST script: its fields (LIST_FIELDS) joined by 0x1f; None
        for a record that does not split into them or has no valid name (written by hand).
        A string split, no dict per record: at 1,000 agents, parsing was most of
        list_participants' time (docs/benchmarks.md)."""
        fields = joined.decode(errors="replace").split("\x1f")
        if len(fields) != len(LIST_FIELDS):
            return None
        name, role, host, pid, status, delivery, joined_at, last_seen = fields[:8]
        if not NAME_PATTERN.match(name):
            return None
        problem = ""
        if signer is not None:  # over the fields as written, before they are made safe
            signed = dict(zip(LIST_FIELDS, fields, strict=True))
            problem = signer.record_problem(
                "presence", [signed[field] for field in PRESENCE_FIELDS], signed["sig"]) or ""
        return cls(name, bounded(role, MAX_ROLE), bounded(host, MAX_HOST), pid_text(pid),
                   bounded(status, MAX_STATUS), delivery if delivery in DELIVERY_PATHS else "?",
                   _ms(joined_at), _ms(last_seen), problem, bounded(fields[12], MAX_CLIENT))
