"""Least-privilege Redis users: `bridge acl` prints the rule, and the doctor checks a user for
rights beyond it.

The rule is per room: every command bridge runs on a room's keys declares the keys of the
agents it names (the send function checks the recipients' presence and cursor keys), and Redis
asks read *and* write access for every key passed to a function. So alice's user can write to
any key of her room; what it cannot do is touch another room, or run anything bridge does not.

Lua is bridge's own only: the rule allows FCALL of this bridge version's functions, one
first-argument rule each (``+fcall|bridge_<version>_send``), and no EVAL, EVALSHA, SCRIPT or
FUNCTION, so a user cannot run (or load) code of its choice. That needs Redis 7.0 or newer.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, RedisError, ResponseError

from bridge.errors import SettingsError
from bridge.room.functions import NAMES, function_name
from bridge.room.keys import NAME_PATTERN, PREFIX, Keys
from bridge.settings import Settings

# Everything `bridge serve`, `who`, `tail`, `history`, `tasks`, `claims`, `guard` and
# `send --as` run, directly or inside bridge's functions (Redis checks their calls against the
# user too), and nothing else.
# Not here: CLIENT SETINFO, which redis-py sends on connect and whose refusal it ignores (the
# subcommand only exists from Redis 7.2, and naming it would make older servers refuse the
# whole rule); SCAN, for `who --all-rooms`, which would list every room.
COMMANDS = (
    "ping", "select",  # the connection; SELECT for a /N database in the URL
    # bridge's functions, this version's only; an admin loads them (bridge functions load)
    *(f"fcall|{name}" for name in NAMES),
    "time", "exists", "del", "pexpire", "pttl", "get", "mget", "set", "incr", "decr",
    "hget", "hmget", "hset", "hdel", "hgetall",
    "zadd", "zrem", "zrange", "zrangebyscore", "zremrangebyscore", "zscore", "zcard",
    "xadd", "xdel", "xtrim", "xrange", "xrevrange", "xread", "xlen",
    "lpush", "ltrim", "lrange",  # a task's history (bridge.room.tasks)
    "sadd", "srem", "smembers",  # an agent's file claims (bridge.room.claims)
    "publish", "subscribe", "unsubscribe",
    # a Redis Cluster (redis+cluster://): sharded pub/sub; redis-py's cluster client reads
    # the slot map (CLUSTER SLOTS) and the command table (COMMAND) when it starts, and sends
    # ASKING when a room's slot is being moved; CLUSTER INFO tells a cluster node given by
    # a plain URL (bridge.redis.clients.check_not_a_cluster_node)
    "spublish", "ssubscribe", "sunsubscribe", "cluster|slots", "cluster|info", "command",
    "asking",
    "wait",  # after a send, with BRIDGE_MIN_REPLICAS (bridge.redis.durability)
)


# A watcher that only reads (`bridge web`, `tail`, `history`): the log, the roster without
# pruning it (bridge.room.roster), the events channel. No function: each may write.
READ_COMMANDS = ("ping", "select", "time", "zrange", "hmget", "pttl", "xrange", "xrevrange",
                 "xread", "xlen", "subscribe", "unsubscribe",
                 "lrange",  # the task board: a task's history (bridge tasks show)
                 "zrangebyscore",  # the live file claims (bridge claims, bridge guard)
                 # every client asks CLUSTER INFO at connect (a cluster node by a plain URL?);
                 # on a cluster, what redis-py's cluster client and sharded pub/sub need
                 "cluster|info", "cluster|slots", "command", "asking", "ssubscribe",
                 "sunsubscribe")


def used_commands(keys: Keys, name: str) -> list[list[str]]:
    """Everything bridge runs, directly or inside its functions, as (command, arguments)
    with the room's real key and channel names: for ACL DRYRUN."""
    agent, cursor, rate = keys.agent(name), keys.cursor(name), keys.rate(name)
    sent = keys.sent(name, "0")

    def fcall(script: str, *script_keys: str) -> list[str]:
        return ["FCALL", function_name(script), str(len(script_keys)), *script_keys]

    return [
        ["PING"], ["TIME"],
        fcall("claim", agent, keys.agents, cursor, keys.log, keys.epoch, keys.readers),
        fcall("heartbeat", agent, keys.agents, cursor, keys.readers),
        fcall("leave", agent, keys.agents, keys.readers),
        fcall("set_status", agent), fcall("prune", keys.agents), fcall("list", keys.agents),
        fcall("send", keys.log, keys.agents, keys.seq, sent, rate, keys.readers, keys.unread,
              keys.broadcasts, agent, cursor),
        fcall("task", keys.task_seq, keys.tasks, keys.tasks_open),
        ["GET", keys.task_seq], ["HMGET", keys.task("t1"), "status"],
        ["ZRANGE", keys.tasks, "0", "-1"], ["LRANGE", keys.task_history("t1"), "0", "49"],
        fcall("claims", keys.claims, keys.claim_records, keys.claims_of(name)),
        ["ZRANGEBYSCORE", keys.claims, "0", "+inf"], ["HMGET", keys.claim_records, "x"],
        ["SADD", keys.claims_of(name), "x"], ["SREM", keys.claims_of(name), "x"],
        ["SMEMBERS", keys.claims_of(name)],
        fcall("version"),
        ["HSET", agent, "name", name], ["HMGET", agent, "session"], ["HGET", agent, "session"],
        ["HGETALL", agent], ["PEXPIRE", agent, "1000"], ["PTTL", agent], ["DEL", agent],
        ["EXISTS", agent],
        ["ZADD", keys.agents, "1", name], ["ZRANGE", keys.agents, "0", "-1"],
        ["ZRANGEBYSCORE", keys.agents, "-inf", "+inf"], ["ZREM", keys.agents, name],
        ["SET", cursor, "0-0 0"], ["GET", cursor], ["MGET", cursor],
        ["ZSCORE", keys.readers, name], ["ZCARD", keys.readers],
        ["ZRANGEBYSCORE", keys.readers, "-inf", "0"],
        ["ZREM", keys.readers, name], ["HGET", keys.unread, name],
        ["HMGET", keys.unread, name], ["HSET", keys.unread, name, "1 1 0"],
        ["HDEL", keys.unread, name], ["ZADD", keys.broadcasts, "1", "1 x"],
        ["ZRANGE", keys.broadcasts, "-1", "-1"],
        ["ZRANGEBYSCORE", keys.broadcasts, "(0", "+inf", "LIMIT", "0", "64"],
        ["ZREMRANGEBYSCORE", keys.broadcasts, "-inf", "(1"],
        ["GET", keys.epoch], ["SET", keys.epoch, "0"], ["INCR", keys.seq], ["DECR", keys.seq],
        ["SET", sent, "0-0"], ["GET", sent],
        ["HMGET", rate, "tokens"], ["HSET", rate, "tokens", "1"], ["PEXPIRE", rate, "1000"],
        ["XADD", keys.log, "*", "from", name], ["XDEL", keys.log, "0-1"],
        ["XRANGE", keys.log, "-", "+"],
        ["XREVRANGE", keys.log, "+", "-"], ["XTRIM", keys.log, "MAXLEN", "~", "100"],
        ["XLEN", keys.log], ["XREAD", "STREAMS", keys.log, "0-0"],
        ["WAIT", "0", "0"],
        ["PUBLISH", keys.events, "{}"], ["PUBLISH", keys.broadcast, "{}"],
        ["PUBLISH", keys.direct(name), "{}"],
        ["SUBSCRIBE", keys.direct(name), keys.broadcast, keys.events],
        ["SPUBLISH", keys.events, "{}"], ["SPUBLISH", keys.broadcast, "{}"],
        ["SPUBLISH", keys.direct(name), "{}"],
        ["SSUBSCRIBE", keys.direct(name), keys.broadcast, keys.events],
        ["CLUSTER", "SLOTS"], ["CLUSTER", "INFO"], ["COMMAND"], ["ASKING"],
    ]


PASSWORD = re.compile(r"^[!#-&(-\[\]-~]{1,256}$")  # printable ASCII, no space, quote or \
SAFE_WORD = re.compile(r"^[A-Za-z0-9@+_.:/-]+$")  # needs no quotes in redis-cli or a shell


@dataclass(frozen=True)
class AclUser:
    room: str
    agent: str
    password: str
    read_only: bool = False

    @property
    def name(self) -> str:
        return f"{PREFIX}-{self.room}-{self.agent}"

    def rules(self, *, hashed: bool = False) -> list[str]:
        pattern = Keys(self.room).pattern  # bridge:{room}:* covers every key and channel
        secret = ("#" + hashlib.sha256(self.password.encode()).hexdigest() if hashed
                  else ">" + self.password)
        # reset: no earlier rights survive; resetchannels again, because on Redis 6.2 reset
        # grants every channel (acl-pubsub-default allchannels)
        if self.read_only:  # %R~: its keys may be read, never written, whatever the command
            return ["reset", "on", secret, "resetchannels", f"%R~{pattern}", f"&{pattern}",
                    "-@all", *(f"+{command}" for command in READ_COMMANDS)]
        return ["reset", "on", secret, "resetchannels", f"~{pattern}", f"&{pattern}", "-@all",
                *(f"+{command}" for command in COMMANDS)]

    def command(self) -> str:
        """The ACL SETUSER line, for redis-cli's prompt, its stdin, or a shell after it."""
        words = ["ACL", "SETUSER", self.name, *self.rules()]
        return " ".join(word if SAFE_WORD.match(word) else f"'{word}'" for word in words)

    def file_line(self) -> str:
        """A line for a users.acl file (aclfile), with the password's SHA-256, not itself."""
        return " ".join(["user", self.name, *self.rules(hashed=True)])

    def url(self, base: str | None) -> str:
        """The agent's BRIDGE_REDIS_URL: base's scheme, host, port and database."""
        parts = urlsplit(base if base and not base.startswith("unix://")
                         else "redis://HOST:6379/0")
        host = parts.netloc.rpartition("@")[2]
        credentials = f"{quote(self.name, safe='')}:{quote(self.password, safe='')}"
        # the admin's own credentials, if the URL carries them, are not the agent's
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query)
                           if k.lower() not in ("username", "password")])
        return urlunsplit(parts._replace(netloc=f"{credentials}@{host}", query=query))


def print_rule(settings: Settings, *, agent: str, password: str | None,
               file_format: bool, read_only: bool = False) -> int:
    """`bridge acl`: the rule for user bridge-ROOM-AGENT on stdout (an ACL SETUSER command, or
    with ``file_format`` a users.acl line), and how to use it on stderr."""
    if not NAME_PATTERN.match(agent):
        raise SettingsError(f"bad value for --agent: {agent!r}; use 1-32 of a-z 0-9 _ . - "
                            f"starting with a letter or digit")
    password = password if password is not None else secrets.token_urlsafe(24)
    if not PASSWORD.match(password):
        raise SettingsError("bad value for --password: use printable ASCII without spaces, "
                            "quotes or backslashes (or leave it out for a random one)")
    user = AclUser(settings.room, agent, password, read_only)
    print(user.file_line() if file_format else user.command())
    create = ("add this line to the aclfile, then ACL LOAD" if file_format else
              "pipe this line into redis-cli as an admin (bridge acl ... | redis-cli -u URL)")
    rights = ("reads of room {room}'s log, agents and events only: for bridge web, tail and "
              "history that watch without sending (Redis 7.0 or newer)" if read_only else
              "room {room}'s keys and channels only, and only the commands bridge runs; of "
              "Lua, only FCALL of this bridge version's functions (Redis 7.0 or newer)")
    functions = "" if read_only else ("\n# once per bridge version, as an admin: "
                                      "bridge functions load --redis ADMIN_URL")
    print(f"# user {user.name}: {rights.format(room=settings.room)}\n# {create}{functions}"
          f"\n# agent {agent}: BRIDGE_REDIS_URL='{user.url(settings.redis_url)}'",
          file=sys.stderr)
    return 0


# ---------------------------------------------------------------- checking a user's rights
def probe_room(room: str) -> Keys:
    """A room other than ours, for asking whether the user may touch other rooms."""
    return Keys("doctor-probe" if room != "doctor-probe" else "doctor-probe-2")


def probes(room: str) -> list[tuple[str, list[str]]]:
    """(what, command): rights bridge never needs. Only ever run through ACL DRYRUN."""
    other = probe_room(room)
    return [("FLUSHALL", ["FLUSHALL"]), ("FLUSHDB", ["FLUSHDB"]),
            ("CONFIG", ["CONFIG", "GET", "maxmemory"]), ("KEYS", ["KEYS", "*"]),
            ("MONITOR", ["MONITOR"]), ("ACL SETUSER", ["ACL", "SETUSER", "x"]),
            (f"other rooms' keys ({other.base}:…)", ["XLEN", other.log]),
            (f"other rooms' channels ({other.base}:…)", ["PUBLISH", other.events, "x"]),
            # Lua of its own: a script that loops stops every room on the Redis
            ("EVAL", ["EVAL", "return 1", "0"]), ("SCRIPT LOAD", ["SCRIPT", "LOAD", "return 1"]),
            ("FUNCTION LOAD", ["FUNCTION", "LOAD", "x"])]


@dataclass
class Rights:
    excess: list[str]  # what the user may do and bridge never needs
    refused: list[str]
    unchecked: list[str]


async def excess_rights(client: Redis, user: str, room: str, *, dryrun: bool) -> Rights:
    """Which of `probes` the user may do: by ACL DRYRUN if it may run it; otherwise by
    running the few probes that are harmless when allowed (CONFIG GET, MONITOR on a throwaway
    connection, a read of another room's key, SUBSCRIBE on a throwaway connection)."""
    rights = Rights([], [], [])
    if dryrun:
        for what, command in probes(room):
            reply = await client.execute_command(  # type: ignore[no-untyped-call]
                "ACL", "DRYRUN", user, *command)
            allowed = (reply.decode() if isinstance(reply, bytes) else str(reply)) == "OK"
            (rights.excess if allowed else rights.refused).append(what)
        return rights
    other = probe_room(room)
    checks: dict[str, Callable[[Redis], Awaitable[Any]]] = {
        "CONFIG": _config, "MONITOR": _monitor,
        f"other rooms' keys ({other.base}:…)": lambda c: c.exists(other.log),
        f"other rooms' channels ({other.base}:…)": lambda c: _subscribe(c, other.events),
        "EVAL": lambda c: c.eval("return 1", 0),
        "SCRIPT LOAD": lambda c: c.script_load("return 1"), "FUNCTION LOAD": _function_load}
    for what, _ in probes(room):
        if what not in checks:
            rights.unchecked.append(what)
            continue
        try:
            await checks[what](client)
        except ResponseError:  # NOPERM, or a command renamed away: either way, not allowed
            rights.refused.append(what)
        else:
            rights.excess.append(what)
    return rights


async def _config(client: Redis) -> None:
    await client.config_get("maxmemory")


async def _monitor(client: Redis) -> None:
    async with client.monitor():  # raises if refused; leaving it closes the connection
        pass


async def _function_load(client: Redis) -> None:
    """A library that cannot load ("x"): refused by the ACL, or by the loader (allowed)."""
    try:
        await client.execute_command("FUNCTION", "LOAD", "x")  # type: ignore[no-untyped-call]
    except ResponseError as e:
        if isinstance(e, NoPermissionError) or "unknown command" in str(e).lower():
            raise


async def _subscribe(client: Redis, channel: str) -> None:
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(channel)
        # the refusal comes back as the reply to SUBSCRIBE
        while (message := await pubsub.get_message(timeout=5)) is not None:
            if message.get("type") == "subscribe":
                return
        raise RedisError(f"no reply to SUBSCRIBE {channel}")
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
