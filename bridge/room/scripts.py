"""The Lua scripts. Each runs atomically on the Redis server, in one round trip.

Time comes from Redis' TIME, so presence expiry does not depend on the agents' clocks.
Key names arrive through KEYS/ARGV: they are built in ``bridge.room.keys`` only.
"""

from bridge.settings import MAX_TTL

NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# A presence record is stale when its holder has not refreshed it within its TTL (the `ttl`
# field, honoured up to MAX_TTL), or when it would never expire by itself (no expiry, or one
# beyond MAX_TTL): a crashed holder's, or one written by hand. Returns the ms until it lapses.
STALE = f"local MAX_TTL = {int(MAX_TTL * 1000)}\n" + """
local function lapses_in(key, seen, ttl)
  seen, ttl = tonumber(seen), math.min(tonumber(ttl) or MAX_TTL, MAX_TTL)
  if not seen or now - seen > ttl then return 0 end
  local left = redis.call('PTTL', key)
  if left == -1 or left > MAX_TTL then return 0 end
  return math.min(ttl - (now - seen), ttl)
end
"""

# KEYS: agent hash, agents zset, cursor, log, log epoch
# ARGV: session, ttl_ms, name, cursor_ttl_ms, events channel, joined event ('' for a quiet
#       join), stale session that
#       may be replaced ('' for none), a new epoch (used if the room has none), field/value
#       pairs...
# Returns {1, cursor, fresh, cursor created, epoch, "<id> <seq>" of the log's last entry
# ("0-0 0" for an empty log)}.
# Refused while another session holds a claim that is not stale: {0, host, pid, session, ms
# until it lapses}. A stale claim is taken over, and what is left of its record deleted.
CLAIM = NOW_MS + STALE + """
local holder = redis.call('HMGET', KEYS[1], 'session', 'host', 'pid', 'last_seen', 'ttl')
if holder[1] and holder[1] ~= ARGV[1] and holder[1] ~= ARGV[7] then
  local lapse = lapses_in(KEYS[1], holder[4], holder[5])
  if lapse > 0 then
    return {0, string.sub(holder[2] or '', 1, 512), string.sub(holder[3] or '', 1, 32),
      holder[1], lapse}
  end
end
local fresh = holder[1] ~= ARGV[1]
if fresh then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'last_seen', now, unpack(ARGV, 9))
if fresh then redis.call('HSET', KEYS[1], 'joined_at', now) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  epoch = ARGV[8]
  redis.call('SET', KEYS[5], epoch)
end
local last_id, last_seq = '0-0', '0'
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
if last[1] then
  last_id = last[1][1]
  local fields = last[1][2]
  for i = 1, #fields, 2 do if fields[i] == 'seq' then last_seq = fields[i + 1] end end
end
local cursor = redis.call('GET', KEYS[3])
local created = 0
if not cursor then
  -- a new name starts at the end of the log: it is not sent the room's history
  cursor = last_id .. ' ' .. last_seq .. ' ' .. epoch
  created = 1
  redis.call('SET', KEYS[3], cursor, 'PX', ARGV[4])
else
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
if fresh and ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return {1, cursor, fresh and 1 or 0, created, epoch, last_id .. ' ' .. last_seq}
"""

# KEYS: agent hash, agents zset, cursor.  ARGV: session, ttl_ms, name, cursor_ttl_ms
# The cursor lives as long as its agent is present, however quiet: an agent that receives
# nothing for longer than BRIDGE_CURSOR_TTL must not become a stranger to its room.
HEARTBEAT = NOW_MS + """
if redis.call('HGET', KEYS[1], 'session') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'last_seen', now)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1
"""

# KEYS: agent hash, agents zset.  ARGV: session, name, events channel, left event ('' for a
# quiet leave)
LEAVE = """
if redis.call('HGET', KEYS[1], 'session') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
"""

# KEYS: agent hash.  ARGV: session, status, events channel, status event, record sig ('' when
#       signing is off)
SET_STATUS = """
if redis.call('HGET', KEYS[1], 'session') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'sig', ARGV[5]) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"""

# KEYS: agents zset.  ARGV: agent hash prefix
# Prunes expired members (and a stale record left under one) and returns their names: the
# caller publishes their `left` (reason timeout), signed when the room has a secret, which a
# script cannot do. The hashes share the room's hash tag, so they sit in the same cluster slot.
_PRUNE = STALE + """
local pruned = {}
local function prune(name)
  redis.call('DEL', ARGV[1] .. name)
  if redis.call('ZREM', KEYS[1], name) == 1 then pruned[#pruned + 1] = name end
end
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  local key = ARGV[1] .. name
  local record = redis.call('HMGET', key, 'last_seen', 'ttl')  -- none when it has expired
  if lapses_in(key, record[1], record[2]) == 0 then prune(name) end
end
"""

# Run with every heartbeat, so that a crash is announced within about ttl * 4/3.
PRUNE = NOW_MS + _PRUNE + "return pruned"

# One string per agent, its fields joined by the unit separator (0x1f): one decode and one
# split per agent in Python, where eight decodes were most of list_participants' time. The
# name is the index's (the key the record is at). Each field is cut to a bound far above what
# bridge writes, so a record of megabytes written by hand never crosses the wire; a stale one
# is pruned, not listed. Returns {now, records, pruned names}.
LIST_FIELDS = ("name", "role", "host", "pid", "status", "delivery", "joined_at", "last_seen",
               "session", "version", "ttl", "sig")
LIST = NOW_MS + _PRUNE + """
local US, out = string.char(31), {}
local LIMITS = {64, 256, 512, 32, 800, 16, 20, 20, 64, 64, 20, 160}
for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. name
  local record = redis.call('HMGET', key, 'name', 'role', 'host', 'pid', 'status',
    'delivery', 'joined_at', 'last_seen', 'session', 'version', 'ttl', 'sig')
  if record[1] then
    if lapses_in(key, record[8], record[11]) == 0 then
      prune(name)
    else
      record[1] = name
      for i = 1, 12 do
        local value = record[i] or ''
        if #value > LIMITS[i] then value = string.sub(value, 1, LIMITS[i]) end
        record[i] = value
      end
      if string.find(record[5], US, 1, true) then  -- a status is free text
        record[5] = (string.gsub(record[5], US, ' '))
      end
      out[#out + 1] = table.concat(record, US)
    end
  end
end
return {now, out, pruned}
"""

# KEYS: log, agents zset, seq counter, dedupe key, sender's rate bucket, then (agent hash,
#       cursor) per named recipient
# ARGV: maxlen, from, to, text, reply_to, kind, ts, payload tail, broadcast channel ('' if
#       direct), max age ms ('' for none), dedupe ttl ms, sig ('' when signing is off),
#       rate (messages/s, '0' for no limit), burst, replay window ms ('' when signing is
#       off), then (name, direct channel) per named recipient
# The dedupe key makes a retried send (after a lost reply) return the first attempt's id
# instead of logging the message twice.
# The rate limit is a token bucket per sender name kept here, in Redis, rather than in the
# sender's process: it then holds across every process that sends under that name (a shell
# loop of `bridge send --as`, a restarted agent) and runs on Redis' clock. It is refused
# before anything is written, and a refused send takes no token.
SEND = NOW_MS + """
local prior = redis.call('GET', KEYS[4])
if prior then return {'ok', prior, {}, {}} end
local online, offline, unknown = {}, {}, {}
local n = (#KEYS - 5) / 2
if ARGV[9] ~= '' then
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')) do
    if name ~= ARGV[2] then online[#online + 1] = name end
  end
else
  for i = 1, n do
    local name = ARGV[14 + 2 * i]
    if redis.call('EXISTS', KEYS[4 + 2 * i]) == 1 then online[#online + 1] = name
    elseif redis.call('EXISTS', KEYS[5 + 2 * i]) == 1 then offline[#offline + 1] = name
    else unknown[#unknown + 1] = name end
  end
end
if #unknown > 0 then return {'unknown', unknown} end
local rate, burst = tonumber(ARGV[13]), tonumber(ARGV[14])
if rate > 0 then
  local bucket = redis.call('HMGET', KEYS[5], 'tokens', 'at')
  local tokens, at = tonumber(bucket[1]) or burst, tonumber(bucket[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
  if tokens < 1 then
    return {'rate', tostring(math.ceil((1 - tokens) * 1000 / rate))}
  end
  redis.call('HSET', KEYS[5], 'tokens', tostring(tokens - 1), 'at', now)
  -- kept only until the bucket would be full again: an idle sender leaves nothing behind
  redis.call('PEXPIRE', KEYS[5], math.ceil(burst * 1000 / rate) + 1000)
end
local seq = redis.call('INCR', KEYS[3])
local fields = {'from', ARGV[2], 'to', ARGV[3], 'text', ARGV[4], 'reply_to', ARGV[5],
  'kind', ARGV[6], 'ts', ARGV[7], 'seq', seq}
if ARGV[12] ~= '' then
  fields[#fields + 1] = 'sig'
  fields[#fields + 1] = ARGV[12]
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
-- An entry added by hand with a future id makes the log hand out ids from that time on, and
-- receivers then drop every signed message as a replay: refuse, and leave no trace.
if ARGV[15] ~= '' and tonumber(string.match(id, '^(%d+)')) > now + tonumber(ARGV[15]) then
  redis.call('XDEL', KEYS[1], id)
  redis.call('DECR', KEYS[3])
  return {'future', id}
end
if ARGV[10] ~= '' then
  redis.call('XTRIM', KEYS[1], 'MINID', '~', now - tonumber(ARGV[10]))
end
redis.call('SET', KEYS[4], id, 'PX', ARGV[11])
local payload = '{"id":"' .. id .. '",' .. ARGV[8]
if ARGV[9] ~= '' then
  redis.call('PUBLISH', ARGV[9], payload)
else
  for i = 1, n do redis.call('PUBLISH', ARGV[15 + 2 * i], payload) end
end
return {'ok', id, online, offline}
"""
