"""Sending: checking a message, the SEND script and its typed call (SendCall), reading its
reply, and the errors for what it refuses (Sender). Retrying through an outage and batching
the calls that overlap is bridge.room.batcher's: the Sender is given its ``call``."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bridge.errors import MessageRejected
from bridge.room.cluster import publish_command
from bridge.room.durability import confirmed
from bridge.room.envelope import BROADCAST, Envelope, parse_id
from bridge.room.keys import NAME_PATTERN, Keys
from bridge.room.lua import NOW_MS, TAIL, Call, Script
from bridge.room.signing import Signer
from bridge.settings import Settings


@dataclass(frozen=True)
class SendResult:
    id: str
    online: list[str]
    offline: list[str]
    replicas: int | None = None  # replicas that confirmed it (BRIDGE_MIN_REPLICAS); None: not asked
    wanted: int = 0  # BRIDGE_MIN_REPLICAS
    waited: float = 0.0  # BRIDGE_MIN_REPLICAS_TIMEOUT

    @property
    def durable(self) -> bool | None:
        return None if self.replicas is None else self.replicas >= self.wanted

    def durability(self) -> str:
        """A sentence on whether the message survives a failover ('' when not asked). Not
        durable is no failure: the message is logged and will be delivered, and sending it
        again would deliver it twice, so it is said as a caveat, not an error."""
        if self.replicas is None:
            return ""
        if self.durable:
            return f"Durable: {self.replicas} replica(s) have it."
        return (f"Logged and will be delivered, but NOT known to be durable: {self.replicas} "
                f"of the {self.wanted} replica(s) asked for (BRIDGE_MIN_REPLICAS) confirmed it "
                f"within {self.waited:g} s, so a Redis failover now could lose it. Do not send "
                f"it again (it would arrive twice).")


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
    maxlen: int
    sender: str
    to: str
    text: str
    reply_to: str
    kind: str
    ts: str
    payload_tail: str
    broadcast: str  # the broadcast channel; '' if direct
    publish: str  # PUBLISH, or SPUBLISH on a cluster (bridge.room.cluster.publish_command)
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
            rate_key=keys.rate(envelope.sender),
            maxlen=settings.log_maxlen, sender=envelope.sender, to=envelope.to_text(),
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
    broadcast: str
    publish: str
    max_age_ms: int | str
    rate: str


@functools.lru_cache(maxsize=16)
def _room_args_of(room: str, url: str | None, max_age: float, rate: float) -> _RoomArgs:
    keys = Keys(room)
    return _RoomArgs(keys=keys, log=keys.log, agents=keys.agents, seq=keys.seq,
                     broadcast=keys.broadcast, publish=publish_command(url),
                     max_age_ms=int(max_age * 1000) if max_age else "", rate=repr(rate))


def _room_args(settings: Settings) -> _RoomArgs:
    return _room_args_of(settings.room, settings.redis_url, settings.log_max_age, settings.rate)


# Returns {'ok', id, online names, offline names}; {'unknown', names} when a named recipient
# has never been in the room; {'rate', ms to wait}; {'future', id} (see below).
# The rate limit is a token bucket per sender name kept here, in Redis, rather than in the
# sender's process: it then holds across every process that sends under that name (a shell
# loop of `bridge send --as`, a restarted agent) and runs on Redis' clock. It is refused
# before anything is written, and a refused send takes no token.
SEND = Script("send", SendCall, """
local prior = redis.call('GET', dedupe_key)
if prior then
  -- a write, so that a WAIT after this retry waits for the first attempt's entry too
  redis.call('PEXPIRE', dedupe_key, dedupe_ttl_ms)
  return {'ok', prior, {}, {}}
end
local online, offline, unknown = {}, {}, {}
local n = (#KEYS - nkeys) / 2
if broadcast ~= '' then
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', agents_key, now, '+inf')) do
    if name ~= sender then online[#online + 1] = name end
  end
else
  for i = 1, n do
    local name = ARGV[nargs + 2 * i - 1]
    if redis.call('EXISTS', KEYS[nkeys + 2 * i - 1]) == 1 then online[#online + 1] = name
    elseif redis.call('EXISTS', KEYS[nkeys + 2 * i]) == 1 then offline[#offline + 1] = name
    else unknown[#unknown + 1] = name end
  end
end
if #unknown > 0 then return {'unknown', unknown} end
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
-- the entry before this one (any entry, also one added by hand): a receiver whose last read
-- entry it is knows that nothing lies in between (bridge.room.wakeup)
local last = redis.call('XREVRANGE', log_key, '+', '-', 'COUNT', 1)
local prev = last[1] and last[1][1] or '0-0'
local seq = redis.call('INCR', seq_key)
local fields = {'from', sender, 'to', to, 'text', text, 'reply_to', reply_to,
  'kind', kind, 'ts', ts, 'seq', seq}
if sig ~= '' then
  fields[#fields + 1] = 'sig'
  fields[#fields + 1] = sig
end
local id = redis.call('XADD', log_key, 'MAXLEN', '~', maxlen, '*', unpack(fields))
-- An entry added by hand with a future id makes the log hand out ids from that time on, and
-- receivers then drop every signed message as a replay: refuse, and leave no trace.
if replay_window_ms ~= ''
    and tonumber(string.match(id, '^(%d+)')) > now + tonumber(replay_window_ms) then
  redis.call('XDEL', log_key, id)
  redis.call('DECR', seq_key)
  return {'future', id}
end
if max_age_ms ~= '' then
  redis.call('XTRIM', log_key, 'MINID', '~', now - tonumber(max_age_ms))
end
redis.call('SET', dedupe_key, id, 'PX', dedupe_ttl_ms)
-- the whole entry, seq and prev too: a receiver with the room secret may deliver it from here
local payload = '{"id":"' .. id .. '","seq":"' .. seq .. '","prev":"' .. prev .. '",'
  .. payload_tail
if broadcast ~= '' then
  redis.call(publish, broadcast, payload)
else
  for i = 1, n do redis.call(publish, ARGV[nargs + 2 * i], payload) end
end
return {'ok', id, online, offline}
""")

SCRIPTS = (SEND,)


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
        if reply[0] == b"rate":
            raise rate_limited(self.settings, reply[1])
        if reply[0] == b"future":
            raise future_log(self.settings, reply[1])
        return SendResult(
            id=reply[1].decode(),
            online=sorted(n.decode() for n in reply[2]),
            offline=sorted(n.decode() for n in reply[3]),
            replicas=confirmed(reply), wanted=self.settings.min_replicas,
            waited=self.settings.min_replicas_timeout,
        )


def check_message(settings: Settings, to: str | list[str], text: str,
                  reply_to: str) -> tuple[str, ...]:
    """The recipients, de-duplicated; or MessageRejected with what to do instead."""
    if not isinstance(text, str) or not text.strip():
        raise MessageRejected("the message text is empty; write something to send")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:  # a lone surrogate ("\ud800") survives JSON, not UTF-8
        raise MessageRejected(
            f"the message text is not valid Unicode (a lone surrogate at character "
            f"{e.start}); send plain UTF-8 text"
        ) from e
    if size > settings.max_bytes:
        raise MessageRejected(
            f"the message is {size} bytes, over the limit of {settings.max_bytes} "
            f"(--max-bytes / BRIDGE_MAX_BYTES). Send it in parts, or write it to a file "
            f"you both can read and send the path."
        )
    if reply_to:
        try:
            parse_id(reply_to)
        except ValueError as e:
            raise MessageRejected(
                f"reply_to {reply_to!r:.40} is not a message id; use the message_id of "
                f"the message you answer (like 1732400000000-0), or leave it out"
            ) from e
    names = [to] if isinstance(to, str) else list(to)
    if names == [BROADCAST]:
        return (BROADCAST,)
    if not names:
        raise MessageRejected("no recipient given; use a name, a list of names, or '*'")
    if len(names) > settings.max_recipients:
        raise MessageRejected(
            f"{len(names)} recipients is over the limit of {settings.max_recipients} "
            f"(BRIDGE_MAX_RECIPIENTS); use '*' to reach everyone in the room, or send it "
            f"in several messages"
        )
    bad = [n for n in names if not isinstance(n, str) or not NAME_PATTERN.match(n)]
    if bad:
        raise MessageRejected(
            f"not a valid agent name: {bad[0]!r:.40}. Names are 1-32 of a-z 0-9 _ . - "
            f"(use '*' alone for everyone)"
        )
    if settings.name in names:
        raise MessageRejected(f"you are {settings.name}; send to another agent, not yourself")
    return tuple(dict.fromkeys(names))


def future_log(settings: Settings, entry_id: bytes) -> MessageRejected:
    """The error for a send refused because the log's ids run ahead of Redis' clock."""
    return MessageRejected(
        f"the message was NOT sent: room {settings.room!r}'s log would have given it the id "
        f"{entry_id.decode()}, dated in the future, so every receiver would drop it as a "
        f"replay. Someone added an entry with a future id to the log by hand. An operator "
        f"must reset the room's log (README, Security: 'A log dated in the future')."
    )


def rate_limited(settings: Settings, retry_ms: bytes) -> MessageRejected:
    """The error for a send the rate limit refused (nothing was logged)."""
    retry = max(int(retry_ms), 1) / 1000
    return MessageRejected(
        f"rate limit: {settings.name} may send {settings.rate:g} messages per second, in "
        f"bursts of up to {settings.burst} (BRIDGE_RATE / BRIDGE_BURST). This message was "
        f"NOT sent; send it again in {retry:.3g} s or later."
    )
