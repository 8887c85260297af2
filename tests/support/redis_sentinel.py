"""Real replication for the tests: a primary and its replica, and three `redis-server --sentinel`
processes watching them, on free ports; everything started is stopped at the end."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.conftest import REDIS_SERVER, RedisServer, free_port

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000  # how long the primary must be silent before a sentinel calls it down
FAILOVER_TIMEOUT_MS = 3000


def poll(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Until ``condition()`` is true (exceptions count as not yet), with a deadline."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (redis.RedisError, OSError) as e:
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"no {what} within {timeout} s (last error: {last})")


# A primary starts a replica's full sync at once, not after the default 5 s wait for more
PRIMARY = ("--repl-diskless-sync-delay", "0")


def start_replica(server: RedisServer, primary: RedisServer, *extra: str) -> None:
    server.start("--replicaof", "127.0.0.1", str(primary.port), *PRIMARY, *extra)
    poll(lambda: server.client().info("replication").get("master_link_status") == "up",
         15, f"replica {server.port} in sync")


@dataclass
class SentinelProcess:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)

    def start(self, primary_port: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "sentinel.conf"  # Sentinel rewrites its config: a file
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n")
        self.process = subprocess.Popen([REDIS_SERVER, str(config), "--sentinel"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        poll(lambda: self.client().ping(), 10, f"sentinel {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class SentinelGroup:
    """A primary, one replica, three sentinels."""

    primary: RedisServer
    replica: RedisServer
    sentinels: list[SentinelProcess] = field(default_factory=list)

    def url(self, scheme: str = "redis+sentinel", db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"{scheme}://{hosts}/{SERVICE}/{db}"

    def state(self) -> dict[str, Any]:
        """What the first sentinel that answers says of the primary."""
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                return dict(sentinel.client().sentinel_master(SERVICE))
        raise redis.ConnectionError("no sentinel answers")

    def primary_port(self) -> int:
        return int(self.state()["port"])

    def wait_ready(self, timeout: float = 30) -> None:
        """Every sentinel sees the primary up, its replica and the two other sentinels: only
        then can they agree on a failover."""
        def ready() -> bool:
            for sentinel in self.sentinels:
                state = sentinel.client().sentinel_master(SERVICE)
                if (int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1
                        or state["is_sdown"] or state["is_odown"]
                        or int(state["port"]) != self.primary.port):
                    return False
            return True
        poll(ready, timeout, "sentinels that know each other and the replica")

    def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        """Until the sentinels name a new primary that answers as one; its port."""
        def promoted() -> int | None:
            port = self.primary_port()
            if port == old_port:
                return None
            role = redis.Redis(port=port, socket_timeout=2).info("replication")["role"]
            return port if role == "master" else None
        return int(poll(promoted, timeout, "failover to the replica"))

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        self.replica.stop()
        self.primary.stop()


@contextlib.contextmanager
def sentinel_group(tmp: Path) -> Iterator[SentinelGroup]:
    primary = RedisServer(free_port(), tmp / "primary")
    replica = RedisServer(free_port(), tmp / "replica")
    group = SentinelGroup(primary, replica)
    try:
        for server in (primary, replica):
            server.directory.mkdir(parents=True, exist_ok=True)
        primary.start(*PRIMARY)
        start_replica(replica, primary)
        for n in range(3):
            sentinel = SentinelProcess(free_port(), tmp / f"sentinel{n}")
            group.sentinels.append(sentinel)
            sentinel.start(primary.port)
        group.wait_ready()
        yield group
    finally:
        group.stop()
