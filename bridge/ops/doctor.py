"""`bridge doctor`: checks, one line each, with a fix for each failure."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

import anyio
from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import NoPermissionError, RedisError, ResponseError
from rich.text import Text

from bridge.delivery import SOCKET_VAR, offered, probe
from bridge.errors import BridgeError, RedisRefused
from bridge.ops.acl import excess_rights, used_commands
from bridge.ops.commands import redis_now_ms
from bridge.ops.human import Terminal
from bridge.room import cluster, functions, sentinel
from bridge.room.clients import (
    check_not_a_cluster_node,
    make_client,
    resolve_url,
    shown,
    tls_failure,
    with_tls,
)
from bridge.room.keys import PREFIX, Keys
from bridge.room.presence import Presence
from bridge.settings import Settings, redact

MIN_VERSION = (6, 2)  # exclusive XRANGE bounds, XTRIM MINID
CHANNEL_KILLERS = ("DISABLE_TELEMETRY", "DO_NOT_TRACK", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")


def delivery_checks(env: dict[str, str]) -> list[Check]:
    """How messages can reach a Claude Code conversation from here: its session inbox (no
    flag), else the channel (whose one blind spot is said plainly), else pull."""
    checks = []
    address = offered(env)
    if address is None:
        checks.append(Check(
            "info", "delivery: not run by Claude Code here, so its session inbox cannot be "
                    "checked; an agent's list_participants (and `bridge who`) shows the path "
                    "each agent took: inbox, channel or pull",
            "Claude Code 2.1.224 or later gives every bridge serve it starts its session "
            "inbox: nothing to do. Older versions need `claude "
            "--dangerously-load-development-channels server:bridge`; Claude Code does not "
            "tell bridge whether it loaded the channel, so a message pushed to a session "
            "started without the flag is lost: use --delivery pull there"))
    else:
        problem = probe(address)
        checks.append(Check(
            "ok", f"delivery: Claude Code's session inbox accepts connections "
                  f"({address.path}): messages reach the conversation with no flag") if
            problem is None else Check(
            "warn", f"delivery: {SOCKET_VAR} is set but the inbox does not answer "
                    f"({problem}): agents fall back to the channel",
            "restart Claude Code; with --delivery auto the agents use the inbox again"))
    for var in CHANNEL_KILLERS:
        if env.get(var):
            checks.append(Check(
                "warn", f"{var} is set: it switches Claude Code channels off (the session "
                        f"inbox keeps working), so an agent on the channel path gets nothing",
                f"use Claude Code 2.1.224 or later (the inbox), unset {var}, or run such "
                f"agents with --delivery pull (they then call read_messages)"))
    return checks


@dataclass
class Check:
    status: str  # ok / warn / fail / skip / info
    what: str
    fix: str = ""


class Doctor:
    """Runs the checks in order, printing each line as it is known."""

    LABELS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "skip": "skip", "info": "info"}

    commands = staticmethod(used_commands)  # what the ACL check asks ACL DRYRUN about

    def __init__(self, settings: Settings, out: TextIO = sys.stdout,
                 env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.out = out
        self.env = dict(os.environ if env is None else env)
        self.terminal = Terminal(out)
        self.failed = False
        self.user = ""  # the ACL user we are, once known
        self.dryrun = False  # whether it may ask ACL DRYRUN about itself

    def report(self, check: Check) -> None:
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}.get(check.status, "dim")
        rows: list[tuple[Text | str, Text | str]] = [
            (Text(self.LABELS[check.status], style=colour), check.what)]
        if check.fix:
            rows.append(("    ", f"fix: {check.fix}"))
        self.terminal.labelled(rows)
        self.failed = self.failed or check.status == "fail"

    async def run(self) -> int:
        for found in delivery_checks(self.env):
            self.report(found)
        url = await self._url()
        if url is None:
            return 1
        client = make_client(url, retries=0)
        whole = client  # on a cluster: the cluster client; `client` becomes the room's node
        try:
            if await self._reachable(client, url):
                if cluster.is_cluster(client):
                    client = await self._cluster(client)
                version: tuple[int, ...] = ()
                checks: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                    ("TLS", lambda: self._tls(client, url)),
                    ("server version", lambda: self._version(client)),
                    ("replication", lambda: self._replication(client, url)),
                    ("ACL", lambda: self._acl(client, version)),
                    ("ACL rights", lambda: self._least_privilege(client)),
                    ("bridge's functions", lambda: self._functions(client, version)),
                    ("AOF", lambda: self._persistence(client)),
                    ("clock", lambda: self._clock(client)),
                    ("room", lambda: self._room(client)),
                ]
                for what, check in checks:
                    try:
                        result = await check()
                    except ResponseError as e:
                        self.report(Check("skip", f"{what}: Redis refused the check ({e})"))
                        continue
                    except (RedisError, OSError) as e:
                        self.report(Check("fail", f"{what}: Redis stopped answering "
                                                  f"({e or type(e).__name__})",
                                          "check the network and Redis' log, then run "
                                          "bridge doctor again"))
                        break
                    if what == "server version":
                        version = result
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()
                if whole is not client:
                    await whole.aclose()
        return 1 if self.failed else 0

    async def _cluster(self, client: Redis) -> Redis:
        """Where the room lives (its slot, the primary that serves it, the cluster's state);
        then the checks that follow run on that primary."""
        shard = await cluster.room_shard(client, Keys(self.settings.room).log)
        replicas = ", ".join(shard.replicas) or "none: a failure of it stops the room"
        self.report(Check(
            "ok" if shard.state == "ok" and shard.replicas else "warn",
            f"Redis Cluster, cluster_state {shard.state}, {shard.primaries} primaries; room "
            f"{self.settings.room} is in slot {shard.slot}, served by {shard.owner} "
            f"(replicas: {replicas}); the checks below ask that node",
            "" if shard.state == "ok" else "see CLUSTER INFO and CLUSTER NODES on that node"))
        return cluster.node_client(await cluster.owner(client, Keys(self.settings.room).log))

    def bad_settings(self, error: BridgeError) -> int:
        self.report(Check("fail", str(error),
                          "redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://… (TLS) or "
                          "unix:///path/redis.sock; a room is 1-32 of a-z 0-9 _ . -"))
        return 1

    async def _url(self) -> str | None:
        if self.settings.redis_url:
            self.report(Check("ok", f"Redis URL parses: {redact(self.settings.redis_url)}"))
            return with_tls(self.settings.redis_url, self.settings)
        try:
            url = await resolve_url(self.settings)
        except BridgeError as e:
            self.report(Check("fail", f"embedded Redis: {e}",
                              "set --redis / BRIDGE_REDIS_URL to a running Redis"))
            return None
        self.report(Check("ok", f"no --redis / BRIDGE_REDIS_URL: the embedded Redis at {url}"))
        return url

    async def _reachable(self, client: Redis, url: str) -> bool:
        try:
            await client.ping()  # connects (and authenticates)
            await sentinel.refuse_a_sentinel(client, url)
            rtts = []
            for _ in range(5):
                start = time.perf_counter()
                await client.ping()
                rtts.append((time.perf_counter() - start) * 1000)
            if not cluster.is_cluster(client):
                await check_not_a_cluster_node(client, url)
        except RedisRefused as e:  # a sentinel's address given as a plain URL
            self.report(Check("fail", str(e).partition(". Use ")[0],
                              "use " + str(e).partition(". Use ")[2]))
            return False
        except BridgeError as e:  # a cluster node by a plain URL
            self.report(Check("fail", str(e).partition(": set ")[0],
                              "set " + str(e).partition(": set ")[2]))
            return False
        except (RedisError, OSError) as e:
            if isinstance(e, MasterNotFoundError):
                explained = await sentinel.explain(e, url)
                self.report(Check("fail", str(explained).partition("; ")[0],
                                  str(explained).partition("; ")[2]))
                return False
            tls = tls_failure(e, url)
            if tls:
                self.report(Check("fail", tls.partition("; ")[0], tls.partition("; ")[2]))
                return False
            self.report(Check(
                "fail", f"Redis at {shown(url)} cannot be reached: "
                        f"{e or type(e).__name__}",
                "start Redis, or fix the host, port, password or TLS scheme in --redis / "
                "BRIDGE_REDIS_URL (redis://:PASSWORD@HOST:6379/0)"))
            return False
        rtts.sort()
        status = "ok" if rtts[2] < 50 else "warn"
        self.report(Check(status, f"Redis reachable: round trip {rtts[2]:.2f} ms "
                                  f"(median of 5 PINGs; min {rtts[0]:.2f} ms)",
                          "" if status == "ok" else "a slow link: every send waits one round "
                                                    "trip; put Redis closer to the agents"))
        return True

    async def _version(self, client: Redis) -> tuple[int, ...]:
        try:
            info = await client.info("server")
        except ResponseError as e:
            self.report(Check("skip", f"server version unknown: INFO is not allowed ({e})"))
            return ()
        text = str(info.get("redis_version", "0"))
        version = tuple(int(part) for part in text.split(".")[:3] if part.isdigit())
        server = str(info.get("server_name", "redis"))
        features = [
            f"sharded pub/sub {'yes' if version >= (7, 0) else 'no (Redis >= 7.0)'}",
            f"hash-field TTL {'yes' if version >= (7, 4) else 'no (Redis >= 7.4)'}",
        ]
        if version < MIN_VERSION:
            self.report(Check(
                "fail", f"{server} {text}: bridge needs Redis 6.2 or newer",
                "upgrade Redis (exclusive XRANGE ranges and XTRIM MINID came in 6.2)"))
        else:
            self.report(Check("ok", f"{server} {text}; " + ", ".join(features)))
        return version

    async def _replication(self, client: Redis, url: str) -> None:
        """Who the primary is and how many replicas it has; whether BRIDGE_MIN_REPLICAS can
        be met."""
        if sentinel.is_sentinel_url(url):
            try:
                watched = await sentinel.describe(url)
            except (RedisError, OSError) as e:
                self.report(Check("fail", f"Sentinel: no sentinel in the URL answers about the "
                                          f"primary ({e})", "check the sentinels' addresses "
                                          "and that they run"))
                return
            listed = len(sentinel.parse(url).sentinels)
            replicas = watched.replicas
            if watched.sentinels < watched.quorum:
                self.report(Check("warn", f"Sentinel: {watched.sentinels} sentinel(s) watch "
                                          f"{watched.service!r}, fewer than its quorum "
                                          f"({watched.quorum}): no failover can happen",
                                  "run at least three sentinels, on separate hosts"))
            self.report(Check(
                "ok" if watched.sentinels_up == listed else "warn",
                f"Sentinel-watched primary {watched.service!r} at {watched.primary}: "
                f"{replicas} replica(s) up, {watched.sentinels} sentinel(s) watch it (quorum "
                f"{watched.quorum}); {watched.sentinels_up} of the {listed} in the URL answer",
                "" if watched.sentinels_up == listed else
                "a sentinel in the URL does not answer: start it, or drop it from the URL"))
        else:
            info = await client.info("replication")
            replicas = int(info.get("connected_slaves", 0))
            if info.get("role") != "master":
                self.report(Check(
                    "fail", f"replication: this Redis is a replica (of "
                            f"{info.get('master_host')}:{info.get('master_port')}): it refuses "
                            f"bridge's writes",
                    "point --redis / BRIDGE_REDIS_URL at the primary, or at its sentinels "
                    "(redis+sentinel://…) so that bridge follows a failover"))
                return
            self.report(Check("info", f"replication: a primary with {replicas} replica(s) "
                                      f"connected"))
        wanted = self.settings.min_replicas
        if wanted > replicas:
            self.report(Check(
                "warn", f"BRIDGE_MIN_REPLICAS={wanted}, but the primary has {replicas} "
                        f"replica(s): every send waits {self.settings.min_replicas_timeout:g} "
                        f"s and is answered 'not known to be durable'",
                "start the replicas, or lower BRIDGE_MIN_REPLICAS"))

    async def _acl(self, client: Redis, version: tuple[int, ...]) -> None:
        if version and version < (6, 0):
            self.report(Check("skip", "ACL: Redis before 6.0 has no ACLs"))
            return
        try:
            user = (await client.execute_command(  # type: ignore[no-untyped-call]
                "ACL", "WHOAMI")).decode()
        except ResponseError:  # a least-privilege user may not ask: the URL says who it is
            user = client.connection_pool.connection_kwargs.get("username") or "default"
        self.user = user
        if version and version < (7, 0):
            self.report(Check("skip", f"ACL: user {user}; checking its permissions needs "
                                      f"ACL DRYRUN (Redis >= 7.0)"))
            return
        keys = Keys(self.settings.room)
        name = self.settings.name or "agent"
        commands: set[str] = set()
        denied_keys: set[str] = set()
        denied_channels: set[str] = set()
        other: set[str] = set()
        checked = self.commands(keys, name)
        for command in checked:
            try:
                reply = await client.execute_command(  # type: ignore[no-untyped-call]
                    "ACL", "DRYRUN", user, *command)
            except ResponseError as e:
                if "dryrun" in str(e).lower():
                    self.report(Check("skip", f"ACL: user {user} may not run ACL DRYRUN (nor "
                                              f"may those that bridge acl makes), so whether "
                                              f"it may run every command bridge uses cannot "
                                              f"be checked"))
                    return
                reply = str(e)
            self.dryrun = True
            text = reply.decode() if isinstance(reply, bytes) else str(reply)
            if text == "OK":
                continue
            quoted = re.search(r"'([^']*)' (command|key|channel)", text)
            if quoted is None:
                other.add(text)
            elif quoted.group(2) == "command" and command[0] == "FCALL":
                commands.add(f"fcall|{command[1]}")  # +fcall would allow every function
            else:
                {"command": commands, "key": denied_keys,
                 "channel": denied_channels}[quoted.group(2)].add(quoted.group(1))
        if not (commands or denied_keys or denied_channels or other):
            self.report(Check("ok", f"ACL: user {user} may run every command bridge uses "
                                    f"({len(checked)} checked) on the keys and channels of "
                                    f"room {self.settings.room}"))
            return
        problems, fix = [], [f"ACL SETUSER {user}"]
        pattern = f"{PREFIX}:{{{self.settings.room}}}:*"
        if commands:
            problems.append("may not run " + ", ".join(sorted(commands)))
            fix += [f"+{command}" for command in sorted(commands)]
        if denied_keys:
            problems.append("may not access keys " + ", ".join(sorted(denied_keys)))
            fix.append(f"'~{pattern}'")
        if denied_channels:
            problems.append("may not use channels " + ", ".join(sorted(denied_channels)))
            fix.append(f"'&{pattern}'")
        problems += sorted(other)
        self.report(Check("fail", f"ACL: user {user} " + "; ".join(problems),
                          " ".join(fix)))

    async def _least_privilege(self, client: Redis) -> None:
        """A warning, not a failure: bridge works, but a leaked URL could do more harm."""
        if not self.user:
            return
        room = self.settings.room
        rights = await excess_rights(client, self.user, room, dryrun=self.dryrun)
        if rights.excess:
            self.report(Check(
                "warn", f"ACL rights: user {self.user} can do more than bridge needs: "
                        + ", ".join(rights.excess),
                f"give each agent a least-privilege user: bridge acl --room {room} --agent "
                f"NAME | redis-cli (as an admin), then the agent's URL it prints"))
            return
        unchecked = (f"; not checked without ACL DRYRUN: {', '.join(rights.unchecked)}"
                     if rights.unchecked else "")
        self.report(Check("ok", f"ACL rights: user {self.user} has none beyond bridge's: "
                                f"refused {', '.join(rights.refused)}{unchecked}"))

    async def _functions(self, client: Redis, version: tuple[int, ...]) -> None:
        """Whether this bridge version's library is loaded: by calling its version function,
        which every user bridge works under may call."""
        user = self.user or functions.Library.of(client).user
        by_evalsha = Check(
            "info", "bridge's functions: Redis before 7.0 has none, so bridge runs its Lua "
                    "scripts by EVALSHA (its user must be allowed EVALSHA and SCRIPT LOAD, "
                    "and so can run Lua of its own; bridge acl's rules need Redis 7.0)")
        if version and version < (7, 0):
            self.report(by_evalsha)
            return
        try:
            reply = await client.execute_command(  # type: ignore[no-untyped-call]
                "FCALL", functions.VERSION_FUNCTION, 0)
        except ResponseError as e:
            if functions.is_unknown_command(e, "fcall"):
                self.report(by_evalsha)
            elif isinstance(e, NoPermissionError):
                self.report(Check(
                    "fail", f"bridge's functions: {functions.not_allowed_message(user)}",
                    f"as a Redis admin: bridge acl --room {self.settings.room} --agent NAME | "
                    f"redis-cli -u ADMIN_URL"))
            elif not functions.is_missing(e):
                raise
            elif await self._may_load_functions(client):
                others = self._other_versions(await functions.loaded_libraries(client))
                self.report(Check(
                    "ok", f"bridge's functions: library {functions.LIBRARY} (this version's) "
                          f"is not loaded yet; bridge loads it when it first needs it, as "
                          f"user {user} may{others}"))
            else:
                self.report(Check(
                    "fail", f"bridge's functions: library {functions.LIBRARY} (this bridge "
                            f"version's) is not loaded, and user {user} may not load it: "
                            f"agents under it cannot start",
                    f"as a Redis admin, once per bridge version: {functions.LOAD_COMMAND}"))
            return
        answered = reply.decode() if isinstance(reply, bytes) else str(reply)
        if answered != functions.VERSION:
            self.report(Check(
                "fail", f"bridge's functions: library {functions.LIBRARY} answers version "
                        f"{answered!r}, not {functions.VERSION}: something else was loaded "
                        f"under bridge's name",
                f"as a Redis admin: {functions.LOAD_COMMAND} (replaces it with bridge's)"))
            return
        others = self._other_versions(await functions.loaded_libraries(client))
        self.report(Check("ok", f"bridge's functions: library {functions.LIBRARY} is loaded "
                                f"(this bridge's version){others}"))

    @staticmethod
    async def _may_load_functions(client: Redis) -> bool:
        """FUNCTION LOAD of a library that cannot load: NOPERM, or the loader's complaint."""
        try:
            await client.execute_command("FUNCTION", "LOAD", "x")  # type: ignore[no-untyped-call]
        except NoPermissionError:
            return False
        except ResponseError as e:
            return "unknown command" not in str(e).lower()
        return True

    @staticmethod
    def _other_versions(loaded: list[str] | None) -> str:
        others = [name for name in loaded or [] if name != functions.LIBRARY]
        if not others:
            return ""
        return (f"; other bridge versions' libraries loaded too: {', '.join(others)} (an admin "
                f"may FUNCTION DELETE each once no agent runs that version)")

    async def _tls(self, client: Redis, url: str) -> None:
        if not url.startswith(("rediss://", "rediss+sentinel://")):
            return
        details = ""
        connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        try:  # the live connection's TLS session (a private attribute: absent, we say less)
            writer = getattr(connection, "_writer", None)
            session = writer.get_extra_info("ssl_object") if writer else None
            if session is not None:
                details = f"{session.version()}, {session.cipher()[0]}; "
        finally:
            await client.connection_pool.release(connection)
        ca = self.settings.tls_ca or "the system's CAs"
        cert = (f"; client certificate {self.settings.tls_cert}" if self.settings.tls_cert
                else "; no client certificate")
        self.report(Check("ok", f"TLS: {details}server certificate and host name verified "
                                f"against {ca}{cert}"))

    async def _persistence(self, client: Redis) -> None:
        enabled: bool | None = None
        fsync = ""
        try:
            info = await client.info("persistence")
            if "aof_enabled" in info:
                enabled = bool(int(info["aof_enabled"]))
        except ResponseError:
            pass
        try:
            config = await client.config_get("append*")
            if enabled is None and "appendonly" in config:
                enabled = config["appendonly"] == "yes"
            fsync = str(config.get("appendfsync", ""))
        except ResponseError as e:
            if enabled is None:
                self.report(Check("skip", f"AOF: unknown; neither INFO persistence nor CONFIG "
                                          f"GET is allowed ({e})"))
                return
        fix = ("CONFIG SET appendonly yes (and appendonly yes, appendfsync everysec in "
               "redis.conf, or --appendonly yes)")
        if not enabled:
            self.report(Check("warn", "AOF persistence is off: a Redis restart loses the room "
                                      "log, cursors and queued messages", fix))
        elif fsync == "no":
            self.report(Check("warn", "AOF persistence is on, with appendfsync no: a power "
                                      "loss can lose the last ~30 s of messages",
                              "CONFIG SET appendfsync everysec"))
        else:
            how = f", appendfsync {fsync}" if fsync else ""
            self.report(Check("ok", f"AOF persistence is on{how}: messages survive a Redis "
                                    f"restart"))

    async def _clock(self, client: Redis) -> None:
        before = time.time()
        server = await redis_now_ms(client)
        after = time.time()
        skew_ms = (before + after) / 2 * 1000 - server
        text = f"clock skew against Redis TIME: {skew_ms:+.0f} ms"
        if abs(skew_ms) > 2000:
            self.report(Check(
                "warn", text + " (message times shown use the sender's clock; presence and "
                               "ids use Redis')", "run NTP on this host and Redis' host "
                                                  "(timedatectl set-ntp true)"))
        else:
            self.report(Check("ok", text))

    async def _room(self, client: Redis) -> None:
        keys = Keys(self.settings.room)
        try:
            _, people = await Presence(client, self.settings).participants()
            messages = int(await client.xlen(keys.log))
        except (ResponseError, BridgeError) as e:
            self.report(Check("fail", f"room {self.settings.room}: cannot list it ({e})",
                              "see the ACL and functions lines above"))
            return
        names = ", ".join(p.name for p in people) or "nobody"
        self.report(Check("info", f"room {self.settings.room}: {len(people)} agent(s) "
                                  f"({names}), {messages} message(s) in the log"))


async def doctor(settings: Settings, out: TextIO = sys.stdout) -> int:
    return await Doctor(settings, out).run()

