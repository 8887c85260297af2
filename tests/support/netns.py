"""Hosts made of Linux network namespaces, for the multi-host test.

Each host is a namespace with one interface, ``eth0``, whose veth peer is a port of a Linux
bridge device in a switch namespace of its own. Nothing is created in the root namespace, so
the test addresses exist only inside these namespaces, and namespaces named after the test
process' pid keep parallel runs apart. Pulling a host's cable is taking its switch port down:
packets then vanish, with no RST, as on a real network cut.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "br-"
SUBNET = "10.213.0"  # private; in the test's namespaces only
SWITCH = "br0"
LEFTOVER = re.compile(rf"^{PREFIX}(\d+)-")


def skip_reason() -> str | None:
    """Why the namespace tests cannot run here, or None if they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs it as root)"
    packages = {"ip": "iproute2", "unshare": "util-linux"}
    missing = [tool for tool in packages if shutil.which(tool) is None]
    if missing:
        return (f"needs {' and '.join(missing)} (apt-get install "
                f"{' '.join(packages[tool] for tool in missing)})")
    return None


def ip(*args: str) -> str:
    """Run `ip ARGS`; a failure raises with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def namespaces() -> list[str]:
    # `ip netns list` prints "name" or "name (id: N)"
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def destroy(namespace: str) -> None:
    """Kill every process in the namespace, then delete it (which destroys its veth ends)."""
    with contextlib.suppress(RuntimeError):
        for pid in ip("netns", "pids", namespace).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(RuntimeError):
        ip("netns", "del", namespace)


def running(pid: int) -> bool:
    """Whether the process lives. A killed run whose parent has not reaped it yet is a
    zombie, which os.kill(pid, 0) still finds: read its state instead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")  # after "pid (comm)"


def remove_leftovers() -> list[str]:
    """Delete the namespaces of earlier runs whose process is gone (a crash, a kill -9)."""
    removed = []
    for namespace in namespaces():
        match = LEFTOVER.match(namespace)
        if not match or int(match.group(1)) == os.getpid() or running(int(match.group(1))):
            continue
        destroy(namespace)
        removed.append(namespace)
    return removed


@dataclass
class Network:
    """A switch and the hosts plugged into it. Use as a context manager: it tears down."""

    prefix: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}-")
    hosts: dict[str, str] = field(default_factory=dict)  # host name -> address

    @property
    def switch(self) -> str:
        return self.prefix + "sw"

    def namespace(self, host: str) -> str:
        return self.prefix + host

    def __enter__(self) -> Network:
        remove_leftovers()
        for stale in (n for n in namespaces() if n.startswith(self.prefix)):
            destroy(stale)  # from an earlier test of this same process
        try:
            ip("netns", "add", self.switch)
            ip("-n", self.switch, "link", "set", "lo", "up")
            ip("-n", self.switch, "link", "add", SWITCH, "type", "bridge")
            ip("-n", self.switch, "link", "set", SWITCH, "up")
        except BaseException:
            self.close()  # __exit__ does not run when __enter__ fails
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for host in list(self.hosts):
            destroy(self.namespace(host))
        destroy(self.switch)
        self.hosts.clear()

    def add_host(self, host: str) -> str:
        """A namespace plugged into the switch; returns its address."""
        namespace, port = self.namespace(host), self.port(host)
        address = f"{SUBNET}.{len(self.hosts) + 1}"
        ip("netns", "add", namespace)
        self.hosts[host] = address
        ip("-n", namespace, "link", "set", "lo", "up")
        # both ends are born in their namespaces: no name can clash in the root namespace
        ip("-n", self.switch, "link", "add", port, "type", "veth",
           "peer", "name", "eth0", "netns", namespace)
        ip("-n", self.switch, "link", "set", port, "master", SWITCH, "up")
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        return address

    @staticmethod
    def port(host: str) -> str:
        return f"p-{host}"[:15]  # interface names are at most 15 characters

    def _link(self, host: str, where: str) -> list[str]:
        if where == "cable":
            return ["-n", self.switch, "link", "set", self.port(host)]
        if where == "interface":
            return ["-n", self.namespace(host), "link", "set", "eth0"]
        raise ValueError(f"cut where? {where!r}: 'cable' or 'interface'")

    def cut(self, host: str, where: str = "cable") -> None:
        """Cut the host off. ``cable``: its switch port goes down, and packets both ways
        vanish with no error. ``interface``: its own eth0 goes down, so the host's sends
        fail at once (no route) while Redis' packets to it still vanish."""
        ip(*self._link(host, where), "down")

    def restore(self, host: str, where: str = "cable") -> None:
        ip(*self._link(host, where), "up")

    def exec_prefix(self, host: str) -> list[str]:
        """The command prefix that runs a program on ``host``, with ``host`` as its hostname
        (its own UTS namespace), so presence records show the host they came from."""
        return ["ip", "netns", "exec", self.namespace(host), "unshare", "--uts",
                "sh", "-c", 'hostname "$0" && exec "$@"', host]

    def run_python(self, host: str, code: str, timeout: float = 30) -> str:
        """Run a Python snippet on ``host`` (the test's own process cannot reach it)."""
        done = subprocess.run([*self.exec_prefix(host), sys.executable, "-c", code],
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"python on {host} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def wait_for_redis(self, host: str, url: str, timeout: float = 20) -> None:
        """Wait until Redis at ``url`` answers PING from ``host``, up to ``timeout`` s."""
        self.run_python(host, f"""
import time, redis
deadline = time.monotonic() + {timeout}
while True:
    try:
        redis.Redis.from_url({url!r}, socket_connect_timeout=1, socket_timeout=1).ping()
        break
    except redis.RedisError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
""", timeout=timeout + 10)


def wait_gone(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if process.poll() is None:
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)


def deadline_left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
