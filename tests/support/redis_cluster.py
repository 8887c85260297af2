"""A real Redis Cluster for tests and benchmarks: six redis-server processes on free ports
(three primaries, three replicas), made into a cluster by ``redis-cli --cluster create``.

    with RedisCluster.started(tmp_path) as cluster:
        cluster.url  # redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/

Every process it starts is killed when the block ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.conftest import wait_for_ping
from tests.support import ports

REDIS_SERVER = shutil.which("redis-server") or "redis-server"
REDIS_CLI = shutil.which("redis-cli") or "redis-cli"
NODE_TIMEOUT_MS = 1500  # how long a primary may be silent before its replica takes over


def free_ports(n: int) -> list[int]:
    """n distinct free ports (each port + 10000 is the cluster bus: it must be free too)."""
    return ports.free_ports(n, cluster_bus=True)


@dataclass
class Node:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # its log beside its data, for a failure's post-mortem (the child keeps the file open)
        with open(self.directory / "log", "ab") as log:
            self.process = self._popen(log)

    def _popen(self, log: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory),
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             # a replica takes over however long it lost its primary (the default refuses
             # after ten node timeouts: a test machine that stalls must not block a failover)
             "--cluster-replica-validity-factor", "0"],
            stdout=log, stderr=subprocess.STDOUT)  # type: ignore[arg-type]

    def wait_up(self, timeout: float = 10) -> None:
        wait_for_ping(self.client, timeout, process=self.process)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Cluster:
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The seed list of bridge's cluster URL form (the first three nodes)."""
        seeds = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:3])
        return f"redis+cluster://{seeds}/"

    def live(self) -> list[Node]:
        return [node for node in self.nodes if node.alive]

    def info(self) -> dict[str, str]:
        for node in self.live():
            with contextlib.suppress(redis.RedisError):
                text = node.client().execute_command("CLUSTER", "INFO").decode()
                return dict(line.split(":", 1) for line in text.split() if ":" in line)
        raise RuntimeError("no live cluster node answers")

    def owner(self, key: str) -> Node:
        """The live primary that serves ``key``'s slot, by a live node's view."""
        slot = self.slot(key)
        for node in self.live():
            with contextlib.suppress(redis.RedisError):
                for start, end, primary, *_ in node.client().execute_command(
                        "CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return self.node(int(primary[1]))
        raise RuntimeError(f"no owner of slot {slot}")

    def slot(self, key: str) -> int:
        return int(self.live()[0].client().execute_command("CLUSTER", "KEYSLOT", key))

    def node(self, port: int) -> Node:
        return next(node for node in self.nodes if node.port == port)

    def node_id(self, node: Node) -> str:
        return str(node.client().execute_command("CLUSTER", "MYID").decode())

    def primaries(self) -> list[Node]:
        return [node for node in self.live()
                if node.client().info("replication")["role"] == "master"]

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says cluster_state:ok and agrees on three primaries."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError):
                states = [node.client().execute_command("CLUSTER", "INFO").decode()
                          for node in self.live()]
                if all("cluster_state:ok" in state for state in states) and \
                        len(self.primaries()) == 3:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    @classmethod
    @contextlib.contextmanager
    def started(cls, directory: Path, size: int = 6) -> Iterator[Cluster]:
        cluster = cls([Node(port, directory / f"node-{port}") for port in free_ports(size)])
        try:
            for node in cluster.nodes:
                node.start()
            for node in cluster.nodes:
                node.wait_up()
            subprocess.run(
                [REDIS_CLI, "--cluster", "create",
                 *(f"127.0.0.1:{node.port}" for node in cluster.nodes),
                 "--cluster-replicas", "1", "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
            cluster.wait_ok()
            # the replicas replicate before a test may count on them
            cluster.wait_replicas()
            yield cluster
        finally:
            cluster.stop()

    def wait_replicas(self, timeout: float = 30) -> None:
        """Until every replica has synced with its primary (link up, no sync under way)."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError):
                infos = [node.client().info("replication") for node in self.live()]
                replicas = [i for i in infos if i["role"] == "slave"]
                if len(replicas) == len(infos) - 3 and all(
                        i["master_link_status"] == "up" and not i["master_sync_in_progress"]
                        for i in replicas):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("the replicas did not connect to their primaries")
            time.sleep(0.1)
