"""Retention that honours readers: the room log keeps what its holders have not read, and a
send to an agent that has fallen too far behind is refused rather than lost later.

**Holders.** An agent holds the log while it is present, and for BRIDGE_AWAY_HOLD seconds
after it was last present: the `readers` zset (name -> until when, ms), written by the claim,
heartbeat and leave scripts (bridge.room.presence_records), pruned where the log is trimmed.
A holder without a cursor key holds nothing.

**What a holder still needs.** Its cursor moves only over what was addressed to it, so the
cursor of a quiet agent sits at its last message, however long ago: a cursor far back means
nothing by itself. The `unread` hash keeps per holder ``"FIRST LAST FLOOR"``: the seqs of the
first and the last message named to it since it last had nothing unread (the send script
sets LAST to each new one, and FIRST too when LAST was read), and FLOOR, how far its own
broadcasts show it had read (its cursor never passes its own messages, so a broadcaster
that receives nothing would otherwise seem to need the log from its first broadcast on). The
`broadcasts` zset has the broadcasts still in the log, with their senders. With
``read = max(cursor's seq, FLOOR)``, a holder needs the log from the first of: FIRST (or
read + 1) if LAST > read, and the first broadcast after read that it did not send; nothing if
neither. Its lag is the room's seq minus the seq before that: how many entries the log must
keep for it. It errs on the long side only while the holder is part way through a run of
named messages, by at most the gap between two of them.

**Retention.** Entries are added without a MAXLEN. Every TRIM_EVERY-th seq (and not more
often than once per holder, so that it costs O(1) a send) the script prunes the holders
that lapsed and the broadcasts no longer in the log, works out the largest lag, and trims
the log to ``max(BRIDGE_LOG_MAXLEN, largest lag)`` (approximately: whole stream nodes). A
log longer than BRIDGE_LOG_HARD_MAXLEN is trimmed to it at once, whoever has not read it:
the promise holds within the hard cap. The holder is told when it reads on (the
messages_expired notice, bridge.room.receiving), and the sender logs `log_hard_cap`.

**Backpressure.** A send to a named holder whose lag (clipped to the log's length) is at
least BRIDGE_BACKLOG_MAX is refused before anything is written. A broadcast is logged and
delivered to the others, and the answer names the holders that far behind (O(holders)).
Lags are worked out only when some holder may be that far behind: the log is at least that
long, and the largest lag found at the last trim (the `*` field of `unread`) plus the seqs
since reaches the bound (a lag grows by one a seq at most). So the common case is O(1),
also with BRIDGE_LOG_MAXLEN = BRIDGE_BACKLOG_MAX, where the log alone is always that long.
(An agent that came back since, with old messages unread, is counted at the next trim.)

A send costs a few O(1) commands more (a broadcast: one zset entry, and one listing of the
holders, for the away ones its answer names); see docs/design.md for the measured figures.
"""

from __future__ import annotations

import time

import structlog

from bridge.errors import MessageRejected
from bridge.settings import Settings

log = structlog.get_logger("bridge.retention")

TRIM_EVERY = 64  # seqs between two computations of what the holders need (O(holders))
CAP_LOG_EVERY = 60.0  # seconds between two `log_hard_cap` warnings of one sender

# Lua of the send script, after its locals (bridge.room.sending): needs log_key, readers_key,
# unread_key, broadcasts_key, cursor_prefix, maxlen, hard_maxlen, backlog_max and now.
LUA = f"""
local TRIM_EVERY, CHUNK, PAGE = {TRIM_EVERY}, 1000, 64  -- CHUNK: unpack's bound
local HARD, BOUND = tonumber(hard_maxlen), tonumber(backlog_max)
local function seq_of(cursor)  -- "<id> <seq> <epoch> [mac]" -> seq; nil for no cursor
  if not cursor then return nil end
  return tonumber(string.match(cursor, '^%S+ (%d+)')) or 0
end
local function fields_of(unread)  -- "FIRST LAST FLOOR" -> numbers, 0 for none
  local first, last, floor = string.match(unread or '', '^(%d+) (%d+) (%d+)$')
  return tonumber(first) or 0, tonumber(last) or 0, tonumber(floor) or 0
end
local newest  -- the seq of the last broadcast in the zset (looked up once)
-- the first broadcast after `from` (and before `stop`, if given) that `name` did not send
local function next_broadcast(name, from, stop)
  if not newest then
    local last = redis.call('ZRANGE', broadcasts_key, -1, -1, 'WITHSCORES')
    newest = tonumber(last[2]) or 0
  end
  if from >= newest then return nil end
  local upto = stop and ('(' .. stop) or '+inf'
  while true do
    local page = redis.call('ZRANGEBYSCORE', broadcasts_key, '(' .. from, upto,
      'LIMIT', 0, PAGE)
    for _, member in ipairs(page) do
      local seq, by = string.match(member, '^(%d+) (.*)$')
      if not seq then return nil end
      if by ~= name then return tonumber(seq) end
      from = seq
    end
    if #page < PAGE then return nil end
  end
end
-- the seq of the first message to a holder that it has not read (c: its cursor's seq)
local function unread_from(name, c, unread)
  local first, last, floor = fields_of(unread)
  local read = math.max(c, floor)
  local named = nil
  if last > read then named = math.max(first, read + 1) end
  return next_broadcast(name, read, named) or named
end
local function need_of(name, c, unread, seq)  -- entries the log must keep for it at seq
  local from = unread_from(name, c, unread)
  if not from then return 0 end
  return seq - from + 1
end
-- its unread after the message `seq` was named to it
local function named_to(c, unread, seq)
  local first, last, floor = fields_of(unread)
  if last <= math.max(c, floor) then first = seq end
  return first .. ' ' .. seq .. ' ' .. floor
end
local function holds(name)
  return (tonumber(redis.call('ZSCORE', readers_key, name)) or 0) > now
end
-- the holders but `skip`, with a cursor: names, cursor seqs, unread values
local function holders(skip)
  local all = redis.call('ZRANGEBYSCORE', readers_key, '(' .. now, '+inf')
  local names, seqs, unread = {{}}, {{}}, {{}}
  for i = 1, #all, CHUNK do
    local part, keys = {{}}, {{}}
    for j = i, math.min(#all, i + CHUNK - 1) do
      part[#part + 1] = all[j]
      keys[#keys + 1] = cursor_prefix .. all[j]
    end
    local cursors = redis.call('MGET', unpack(keys))
    local fields = redis.call('HMGET', unread_key, unpack(part))
    for j = 1, #part do
      if cursors[j] and part[j] ~= skip then
        names[#names + 1] = part[j]
        seqs[#seqs + 1] = seq_of(cursors[j])
        unread[#unread + 1] = fields[j]
      end
    end
  end
  return names, seqs, unread
end
-- whether a holder may be BOUND behind at seq (see the module's docstring)
local function maybe_behind(seq, xlen)
  if xlen < BOUND then return false end
  local most, at = string.match(redis.call('HGET', unread_key, '*') or '', '^(%d+) (%d+)$')
  return not most or tonumber(most) + seq - tonumber(at) >= BOUND
end
-- after the entry `seq` was added to a log now `xlen` long: trim what nobody needs. Returns
-- {{name, need, ...}} of the holders that need more than the hard cap keeps
local function trim(seq, xlen)
  local capped = {{}}
  if xlen > HARD then redis.call('XTRIM', log_key, 'MAXLEN', '~', HARD) end
  if seq % TRIM_EVERY ~= 0 then return capped end
  -- every TRIM_EVERY seqs a holder, at least: O(1) a send however many hold the log
  local count = redis.call('ZCARD', readers_key)
  if (seq / TRIM_EVERY) % math.ceil(math.max(count, 1) / TRIM_EVERY) ~= 0 then
    return capped
  end
  local gone = redis.call('ZRANGEBYSCORE', readers_key, '-inf', now)
  for i = 1, #gone, CHUNK do
    local part = {{unpack(gone, i, math.min(#gone, i + CHUNK - 1))}}
    redis.call('ZREM', readers_key, unpack(part))
    redis.call('HDEL', unread_key, unpack(part))
  end
  local head = redis.call('XRANGE', log_key, '-', '+', 'COUNT', 1)[1]
  for i = 1, head and #head[2] or 0, 2 do
    local first = head[2][i] == 'seq' and tonumber(head[2][i + 1])
    if first then redis.call('ZREMRANGEBYSCORE', broadcasts_key, '-inf', '(' .. first) end
  end
  if xlen <= tonumber(maxlen) and xlen < BOUND then return capped end
  local most = 0
  local names, seqs, unread = holders('')
  for i = 1, #names do
    local need = need_of(names[i], seqs[i], unread[i], seq)
    if need > most then most = need end
    if need > HARD then
      capped[#capped + 1] = names[i]
      capped[#capped + 1] = need
    end
  end
  redis.call('HSET', unread_key, '*', most .. ' ' .. seq)
  local keep = math.min(math.max(tonumber(maxlen), most), HARD)
  if xlen > keep then redis.call('XTRIM', log_key, 'MAXLEN', '~', keep) end
  return capped
end
"""


def pairs(flat: list[bytes]) -> dict[str, int]:
    """{name, count, name, count, ...} as a script returns them."""
    return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def backlogged(settings: Settings, behind: dict[str, int]) -> MessageRejected:
    """The error for a send refused because a named recipient is too far behind."""
    names = ", ".join(sorted(behind))
    lags = ", ".join(f"{name} is {lag} messages behind" for name, lag in sorted(behind.items()))
    return MessageRejected(
        f"NOT sent: {lags} in the room log (BRIDGE_BACKLOG_MAX={settings.backlog_max}), so "
        f"its client is not reading what it is sent. Nothing was sent. Try again once {names} "
        f"has caught up, or ask an operator to look at {names} (bridge who).")


class CapWatch:
    """Logs, at most once a minute, that the hard cap trims entries holders have not read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._logged_at = -CAP_LOG_EVERY

    def saw(self, capped: dict[str, int]) -> None:
        if not capped or time.monotonic() - self._logged_at < CAP_LOG_EVERY:
            return
        self._logged_at = time.monotonic()
        log.warning("log_hard_cap", room=self.settings.room, behind=capped,
                    hard_maxlen=self.settings.log_hard_maxlen,
                    hint="the room log reached BRIDGE_LOG_HARD_MAXLEN: its oldest entries are "
                         "trimmed although these agents have not read them (they are told "
                         "when they read on); see to their clients, or raise the cap")
