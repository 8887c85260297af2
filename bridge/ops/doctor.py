"""`bridge doctor`: checks, one line each, with a fix for each failure; run in order, each
printed as soon as it is known. The checks of where messages go and of the Redis behind the
URL are in doctor_topology, those of what its user may do in doctor_access."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import anyio
from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import RedisError, ResponseError
from rich.text import Text

from bridge.errors import BridgeError, RedisRefused
from bridge.ops.check import Check
from bridge.ops.commands import redis_now_ms
from bridge.ops.doctor_access import AccessChecks
from bridge.ops.doctor_topology import cluster_shard, delivery_checks, replication
from bridge.ops.human import Terminal
from bridge.redis import cluster, sentinel
from bridge.redis.clients import (
    check_not_a_cluster_node,
    make_client,
    resolve_url,
    shown,
    tls_failure,
    with_tls,
)
from bridge.room.keys import Keys
from bridge.room.presence import Presence
from bridge.settings import Settings, redact

MIN_VERSION = (6, 2)  # exclusive XRANGE bounds, XTRIM MINID


class Doctor:
    """Runs the checks in order, printing each line as it is known."""

    LABELS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "skip": "skip", "info": "info"}

    def __init__(self, settings: Settings, out: TextIO = sys.stdout,
                 env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.out = out
        self.env = dict(os.environ if env is None else env)
        self.terminal = Terminal(out)
        self.failed = False
        self.access = AccessChecks(settings, self.report)

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
                    client = await cluster_shard(client, self.settings, self.report)
                version: tuple[int, ...] = ()
                checks: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                    ("TLS", lambda: self._tls(client, url)),
                    ("server version", lambda: self._version(client)),
                    ("replication",
                     lambda: replication(client, url, self.settings, self.report)),
                    ("ACL", lambda: self.access.acl(client, version)),
                    ("ACL rights", lambda: self.access.least_privilege(client)),
                    ("bridge's functions", lambda: self.access.bridge_functions(client, version)),
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
        names = ", ".join(p.name + (f" ({p.client})" if p.client else "") for p in people) \
            or "nobody"
        self.report(Check("info", f"room {self.settings.room}: {len(people)} agent(s) "
                                  f"({names}), {messages} message(s) in the log"))


async def doctor(settings: Settings, out: TextIO = sys.stdout) -> int:
    return await Doctor(settings, out).run()

