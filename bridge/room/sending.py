"""Sending: the SEND script and its typed call (SendCall), and the Sender that calls it and
reads its reply. What a send is checked for and told is bridge.room.send_checks; what the
log keeps for its readers, bridge.room.retention. Retrying through an outage and batching
the calls that overlap is bridge.room.batcher's: the Sender is given its ``call``."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bridge.errors import MessageRejected
from bridge.redis.cluster import publish_command
from bridge.redis.lua import NOW_MS, TAIL, Call, Script
from bridge.room.envelope import Envelope
from bridge.room.keys import Keys
from bridge.room.retention import LUA as RETENTION
from bridge.room.retention import CapWatch, backlogged, pairs
from bridge.room.send_checks import SendResult, check_message, future_log, rate_limited
from bridge.room.signing import Signer
from bridge.settings import Settings

__all__ = ["SEND", "SendCall", "SendResult", "Sender", "check_message"]


@dataclass  # (not frozen: a frozen init of 21 fields cost 4 us a send)
class SendCall(Call):
    """One call of SEND: an envelope, the room's keys and limits. ``recipients`` are the named
    ones (none for a broadcast): per recipient the script gets KEYS (agent hash, cursor) and
    ARGV (name, direct channel) after the named ones."""

    HEAD: ClassVar[str] = NOW_MS
    log_key: str
    agents_key: str
    seq_key: str
    dedupe_key: str  # makes a retried send return the first attempt's id
    rate_key: str  # the sender's rate bucket
    readers_key: str  # who holds the log (bridge.room.retention)
    unread_key: str  # what each of them still needs
    broadcasts_key: str  # the broadcasts in the log
    maxlen: int
    hard_maxlen: int
    backlog_max: int
    cursor_prefix: str  # a holder's cursor key is this and its name
    sender: str
    to: str
    text: str
    reply_to: str
    kind: str
    ts: str
    payload_tail: str
    broadcast: str  # the broadcast channel; '' if direct
    publish: str  # PUBLISH, or SPUBLISH on a cluster (bridge.redis.cluster.publish_command)
    max_age_ms: int | str  # '' for none
    dedupe_ttl_ms: int
    sig: str  # '' when signing is off
    rate: str  # messages/s, '0' for no limit
    burst: int
    replay_window_ms: int | str  # '' when signing is off
    # per named recipient: (agent key, cursor key, name, direct channel)
    recipients: tuple[tuple[str, str, str, str], ...] = field(metadata=TAIL)

    @classmethod
    def of(cls, settings: Settings, envelope: Envelope) -> SendCall:
        room = _room_args(settings)
        keys = room.keys
        names = () if envelope.is_broadcast else envelope.to
        return cls(
            log_key=room.log, agents_key=room.agents, seq_key=room.seq,
            dedupe_key=keys.sent(envelope.sender, os.urandom(16).hex()),
            rate_key=keys.rate(envelope.sender), readers_key=room.readers,
            unread_key=room.unread, broadcasts_key=room.broadcasts,
            maxlen=settings.log_maxlen, hard_maxlen=settings.log_hard_maxlen,
            backlog_max=settings.backlog_max, cursor_prefix=room.cursor_prefix,
            sender=envelope.sender, to=envelope.to_text(),
            text=envelope.text, reply_to=envelope.reply_to, kind=envelope.kind,
            ts=str(envelope.ts), payload_tail=envelope.payload_tail(),
            broadcast=room.broadcast if envelope.is_broadcast else "",
            publish=room.publish, max_age_ms=room.max_age_ms,
            dedupe_ttl_ms=int(settings.send_timeout * 3000), sig=envelope.sig,
            rate=room.rate, burst=settings.burst,
            replay_window_ms=int(settings.replay_window * 1000) if envelope.sig else "",
            recipients=tuple((keys.agent(name), keys.cursor(name), name, keys.direct(name))
                             for name in names))

    def more_keys(self) -> list[str]:
        return [key for agent, cursor, _, _ in self.recipients for key in (agent, cursor)]

    def more_args(self) -> list[Any]:
        return [arg for _, _, name, channel in self.recipients for arg in (name, channel)]


@dataclass(frozen=True)
class _RoomArgs:
    """What every send of one room passes alike, worked out once (keys, the publish command,
    limits as the script reads them): building a send's arguments 8.8 -> 6.7 us."""

    keys: Keys
    log: str
    agents: str
    seq: str
    readers: str
    unread: str
    broadcasts: str
    cursor_prefix: str
    broadcast: str
    publish: str
    max_age_ms: int | str
    rate: str


@functools.lru_cache(maxsize=16)
def _room_args_of(room: str, url: str | None, max_age: float, rate: float) -> _RoomArgs:
    keys = Keys(room)
    return _RoomArgs(keys=keys, log=keys.log, agents=keys.agents, seq=keys.seq,
                     readers=keys.readers, unread=keys.unread, broadcasts=keys.broadcasts,
                     cursor_prefix=keys.cursor_prefix,
                     broadcast=keys.broadcast, publish=publish_command(url),
                     max_age_ms=int(max_age * 1000) if max_age else "", rate=repr(rate))


def _room_args(settings: Settings) -> _RoomArgs:
    return _room_args_of(settings.room, settings.redis_url, settings.log_max_age, settings.rate)


# Returns {'ok', id, online, queued, not held, behind, capped} (names; behind and capped as
# {name, count, ...}: see bridge.room.retention); {'unknown', names} when a named recipient
# has never been in the room; {'behind', {name, lag, ...}} when one is too far behind;
# {'rate', ms to wait}; {'future', id} (see below).
# The rate limit is a token bucket per sender name kept here, in Redis, rather than in the
# sender's process: it then holds across every process that sends under that name (a shell
# loop of `bridge send --as`, a restarted agent) and runs on Redis' clock. It is refused
# before anything is written, and a refused send takes no token.
SEND = Script("send", SendCall, RETENTION + """
local prior = redis.call('GET', dedupe_key)
if prior then
  -- a write, so that a WAIT after this retry waits for the first attempt's entry too
  redis.call('PEXPIRE', dedupe_key, dedupe_ttl_ms)
  return {'ok', prior, {}, {}, {}, {}, {}}
end
local online, queued, unheld, unknown, behind = {}, {}, {}, {}, {}
local n = (#KEYS - nkeys) / 2
local xlen = redis.call('XLEN', log_key)
-- the entry before this one (any entry, also one added by hand): a receiver whose last read
-- entry it is knows that nothing lies in between (bridge.room.wakeup)
local last = redis.call('XREVRANGE', log_key, '+', '-', 'COUNT', 1)[1]
local prev, seq_now = last and last[1] or '0-0', nil
for i = 1, last and #last[2] or 0, 2 do
  if last[2][i] == 'seq' then seq_now = tonumber(last[2][i + 1]) end
end
seq_now = seq_now or tonumber(redis.call('GET', seq_key)) or 0
-- lags are worked out only if someone may be that far behind (bridge.room.retention)
local check = maybe_behind(seq_now, xlen)
local marks, floor = {}, nil  -- what the recipients' and the sender's unread become
if broadcast ~= '' then
  local late = {}
  if check then
    local names, seqs, unread = holders(sender)
    for i, name in ipairs(names) do
      local lag = math.min(need_of(name, seqs[i], unread[i], seq_now), xlen)
      if lag >= BOUND then late[name] = lag end
    end
  end
  local here = {}
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', agents_key, now, '+inf')) do
    if name ~= sender then here[name] = true end
  end
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', readers_key, '(' .. now, '+inf')) do
    if late[name] then
      behind[#behind + 1] = name
      behind[#behind + 1] = late[name]
    elseif name ~= sender and not here[name] then
      queued[#queued + 1] = name
    end
  end
  for name in pairs(here) do
    if not late[name] then online[#online + 1] = name end
  end
  -- a broadcaster does not read its own: if it had read all before, it has read up to here
  -- (the sender is present, so it holds the log if it has a cursor)
  local c = seq_of(redis.call('GET', cursor_prefix .. sender))
  if c then
    local unread = redis.call('HGET', unread_key, sender)
    if not unread_from(sender, c, unread) then
      local named_first, named_last = fields_of(unread)
      floor = named_first .. ' ' .. named_last
    end
  end
else
  for i = 1, n do
    local name = ARGV[nargs + 2 * i - 1]
    local c = seq_of(redis.call('GET', KEYS[nkeys + 2 * i]))
    local present = redis.call('EXISTS', KEYS[nkeys + 2 * i - 1]) == 1
    local held = c and (present or holds(name))  -- (a present agent holds the log)
    if held then
      local unread = redis.call('HGET', unread_key, name)
      local lag = check and math.min(need_of(name, c, unread, seq_now), xlen) or 0
      if lag >= BOUND then
        behind[#behind + 1] = name
        behind[#behind + 1] = lag
      end
      marks[#marks + 1] = {name, c, unread}
    end
    if present then online[#online + 1] = name
    elseif held then queued[#queued + 1] = name
    elseif c then unheld[#unheld + 1] = name
    else unknown[#unknown + 1] = name end
  end
end
if #unknown > 0 then return {'unknown', unknown} end
if #behind > 0 and broadcast == '' then return {'behind', behind} end
local rate, burst = tonumber(rate), tonumber(burst)
if rate > 0 then
  local bucket = redis.call('HMGET', rate_key, 'tokens', 'at')
  local tokens, at = tonumber(bucket[1]) or burst, tonumber(bucket[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
  if tokens < 1 then
    return {'rate', tostring(math.ceil((1 - tokens) * 1000 / rate))}
  end
  redis.call('HSET', rate_key, 'tokens', tostring(tokens - 1), 'at', now)
  -- kept only until the bucket would be full again: an idle sender leaves nothing behind
  redis.call('PEXPIRE', rate_key, math.ceil(burst * 1000 / rate) + 1000)
end
local seq = redis.call('INCR', seq_key)
local fields = {'from', sender, 'to', to, 'text', text, 'reply_to', reply_to,
  'kind', kind, 'ts', ts, 'seq', seq}
if sig ~= '' then
  fields[#fields + 1] = 'sig'
  fields[#fields + 1] = sig
end
-- no MAXLEN: trim() keeps what the holders have not read (bridge.room.retention)
local id = redis.call('XADD', log_key, '*', unpack(fields))
-- An entry added by hand with a future id makes the log hand out ids from that time on, and
-- receivers then drop every signed message as a replay: refuse, and leave no trace.
if replay_window_ms ~= ''
    and tonumber(string.match(id, '^(%d+)')) > now + tonumber(replay_window_ms) then
  redis.call('XDEL', log_key, id)
  redis.call('DECR', seq_key)
  return {'future', id}
end
-- what the holders now have unread (bridge.room.retention)
if broadcast ~= '' then
  redis.call('ZADD', broadcasts_key, seq, seq .. ' ' .. sender)
  newest = seq
  if floor then redis.call('HSET', unread_key, sender, floor .. ' ' .. seq) end
elseif #marks > 0 then
  local writes = {}
  for _, m in ipairs(marks) do
    writes[#writes + 1] = m[1]
    writes[#writes + 1] = named_to(m[2], m[3], seq)
  end
  redis.call('HSET', unread_key, unpack(writes))
end
if max_age_ms ~= '' then
  redis.call('XTRIM', log_key, 'MINID', '~', now - tonumber(max_age_ms))
end
local capped = trim(seq, xlen + 1)
redis.call('SET', dedupe_key, id, 'PX', dedupe_ttl_ms)
-- the whole entry, seq and prev too: a receiver with the room secret may deliver it from here
local payload = '{"id":"' .. id .. '","seq":"' .. seq .. '","prev":"' .. prev .. '",'
  .. payload_tail
if broadcast ~= '' then
  redis.call(publish, broadcast, payload)
else
  for i = 1, n do redis.call(publish, ARGV[nargs + 2 * i], payload) end
end
return {'ok', id, online, queued, unheld, behind, capped}
""")

SCRIPTS = (SEND,)

# where bridge.redis.durability's ``attach`` put the count, after the send function's own reply
CONFIRMED_AT = 7


def confirmed(reply: list[Any]) -> int | None:
    """How many replicas confirmed a send's reply; None when sends do not wait."""
    return int(reply[CONFIRMED_AT]) if len(reply) > CONFIRMED_AT else None


class Sender:
    """One agent's sends. ``call`` runs a SendCall (the batcher: one agent's sends reach
    Redis in the order its calls arrived); ``who_is_here`` says who is, for an error."""

    def __init__(self, settings: Settings, signer: Signer | None,
                 call: Callable[[SendCall], Awaitable[Any]],
                 who_is_here: Callable[[], Awaitable[str]]) -> None:
        self.settings = settings
        self.signer = signer
        self.call = call
        self.who_is_here = who_is_here
        self.cap_watch = CapWatch(settings)

    async def send(self, to: str | list[str], text: str, reply_to: str = "") -> SendResult:
        """Log and publish one message. Retries through a Redis outage for up to
        ``send_timeout`` seconds; raises RedisUnavailable if it could not be logged."""
        recipients = check_message(self.settings, to, text, reply_to)
        envelope = Envelope(id="", sender=self.settings.name, to=recipients, text=text,
                            reply_to=reply_to, ts=int(time.time() * 1000))
        if self.signer:
            envelope = self.signer.sign(envelope)
        reply = await self.call(SendCall.of(self.settings, envelope))
        if reply[0] == b"unknown":
            unknown = [n.decode() for n in reply[1]]
            raise MessageRejected(
                f"unknown recipient(s): {', '.join(unknown)}. Nobody by that name has been in "
                f"room {self.settings.room!r}. {await self.who_is_here()} "
                f"Nothing was sent; check the name with list_participants and send again."
            )
        if reply[0] == b"behind":
            raise backlogged(self.settings, pairs(reply[1]))
        if reply[0] == b"rate":
            raise rate_limited(self.settings, reply[1])
        if reply[0] == b"future":
            raise future_log(self.settings, reply[1])
        self.cap_watch.saw(pairs(reply[6]))
        return SendResult(
            id=reply[1].decode(), online=sorted(n.decode() for n in reply[2]),
            queued=sorted(n.decode() for n in reply[3]),
            not_held=sorted(n.decode() for n in reply[4]), behind=pairs(reply[5]),
            replicas=confirmed(reply), wanted=self.settings.min_replicas,
            waited=self.settings.min_replicas_timeout,
        )
