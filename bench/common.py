"""Shared parts of the benchmark harness: our own redis-server, agent processes that are always
killed, statistics, and deadlines."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import redis

from tests.support.mcp_client import CAPABILITIES, PROTOCOL_VERSION, Agent, start_agent

REDIS_SERVER = shutil.which("redis-server") or "redis-server"
# signing on, as issue 16 asks ("with every guarantee kept"): it is also what lets a receiver
# deliver from the wake-up (bridge/room/wakeup.py)
SECRET = "bench-secret-0123456789-bench-secret"
QUIET = {"BRIDGE_LOG_LEVEL": "WARNING", "BRIDGE_LOG_MAXLEN": "20000", "BRIDGE_SECRET": SECRET}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def summary(values: list[float]) -> dict[str, float | int]:
    """min/p50/p90/p99/max (and n) of a list of milliseconds."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": min(values), "p50": percentile(values, 0.5),
            "p90": percentile(values, 0.9), "p99": percentile(values, 0.99),
            "max": max(values)}


def line(label: str, stats: dict[str, Any], unit: str = "ms") -> str:
    if not stats.get("n"):
        return f"  {label}: no samples"
    return (f"  {label} ({stats['n']} samples, {unit}): min {stats['min']:.3f}  "
            f"p50 {stats['p50']:.3f}  p90 {stats['p90']:.3f}  p99 {stats['p99']:.3f}  "
            f"max {stats['max']:.3f}")


@dataclass
class RedisServer:
    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.02)

    def version(self) -> str:
        return str(self.client().info("server")["redis_version"])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


class Processes:
    """Every process the harness starts, so that all of them die with it."""

    def __init__(self) -> None:
        self.agents: list[Agent] = []
        self.popens: list[subprocess.Popen[Any]] = []

    async def agent(self, tg: Any, name: str, url: str, tmp: Path, *args: str,
                    env: dict[str, str] | None = None, handshake: bool = True,
                    timeout: float = 60) -> Agent:
        with anyio.fail_after(timeout):
            agent = await start_agent(tg, name, url, tmp, *args, env={**QUIET, **(env or {})},
                                      handshake=False)
            self.agents.append(agent)
            if handshake:  # Agent.handshake() with our deadline instead of its 15 s
                agent.initialize_result = await agent.request("initialize", {
                    "protocolVersion": PROTOCOL_VERSION, "capabilities": CAPABILITIES,
                    "clientInfo": {"name": "bridge-bench", "version": "0"},
                }, timeout=timeout)
                await agent.notify("notifications/initialized")
        return agent

    def popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        process = subprocess.Popen(command, **kwargs)
        self.popens.append(process)
        return process

    async def stop_agents(self, agents: list[Agent], timeout: float = 10) -> None:
        """Close stdin (a clean leave); kill whatever has not exited by the deadline."""
        async def stop(agent: Agent) -> None:
            with contextlib.suppress(Exception):
                await agent.close_stdin()
            try:
                await agent.wait_exit(timeout)
            except TimeoutError:
                agent.process.kill()
                with contextlib.suppress(Exception), anyio.move_on_after(5):
                    await agent.process.wait()

        async with anyio.create_task_group() as tg:
            for agent in agents:
                tg.start_soon(stop, agent)

    def kill_all(self) -> None:
        for agent in self.agents:
            if agent.process.returncode is None:
                with contextlib.suppress(OSError):
                    os.kill(agent.process.pid, signal.SIGKILL)
        for process in self.popens:
            if process.poll() is None:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)


def machine() -> dict[str, Any]:
    import platform
    import sys

    model = "unknown"
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError):
        for text in Path("/proc/meminfo").read_text().splitlines():
            if text.startswith("MemTotal"):
                memory = f"{int(text.split()[1]) / 1024 / 1024:.1f} GiB"
    return {"cpu": model, "cores": os.cpu_count(), "memory": memory,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform(),
            "executable": sys.executable}
