"""Fixtures that own real parts: a redis-server on a free port, and `bridge serve` agents."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from tests.support.mcp_client import Agent, start_agent
from tests.support.ports import free_port

REDIS_SERVER = shutil.which("redis-server") or "redis-server"




def wait_for_ping(client: Callable[[], redis.Redis], timeout: float = 10,
                  process: subprocess.Popen[bytes] | None = None) -> None:
    """Until a redis-server just started answers PING (ConnectionError past ``timeout``).
    Given its ``process``, the server that answers must be that one: a test must never run
    against another test's Redis that holds the port (its own then exits: bind failed)."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode} at start "
                               f"(its port taken?): {process.args}")
        try:
            if client().ping():
                break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    if process is not None:
        answering = int(client().info("server")["process_id"])
        assert answering == process.pid, f"another redis-server (pid {answering}) has the port"


@dataclass
class RedisServer:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self, *extra: str) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "everysec",
             *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_ping(self.client, process=self.process)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# `make check` (the inner loop: lint and these, about a minute) runs these modules: the wire
# protocol checked by the official SDK, messaging, the session inbox, bad input, the layers
# and the settings. The rest (retention, presence, cursor, loops, real Claude Code, Codex,
# clusters, images) run in make test.
QUICK_MODULES = {
    "test_cli_commands", "test_clients_doc", "test_codex_units", "test_inbox", "test_lane",
    "test_layers", "test_messaging", "test_protocol", "test_protocol_strict", "test_quickwrite",
    "test_readme", "test_robustness", "test_settings", "test_subscriber",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the quick modules, and put the slow tests first (a stable sort): on several
    workers (make test) the long end-to-end ones then overlap the many short ones instead
    of trailing alone at the end of the run."""
    for item in items:
        if item.path.stem in QUICK_MODULES:
            item.add_marker(pytest.mark.quick)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(redis.ConnectionError):
            server.client().flushall()
        server.stop()


@pytest.fixture
def r(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()


class Agents:
    """Starts `bridge serve` processes; kills whatever is left at the end of the test."""

    def __init__(self, tg: Any, redis_url: str, tmp: Path) -> None:
        self.tg, self.redis_url, self.tmp = tg, redis_url, tmp
        self.started: list[Agent] = []

    async def start(self, name: str | None, *args: str, **kwargs: Any) -> Agent:
        kwargs.setdefault("env", {})
        kwargs["env"].setdefault("BRIDGE_LOG_LEVEL", "DEBUG")
        # most tests watch joined/left/status arrive; test_events.py checks the default
        kwargs["env"].setdefault("BRIDGE_PUSH_EVENTS", "1")
        agent = await start_agent(self.tg, name, kwargs.pop("redis_url", self.redis_url),
                                  self.tmp, *args, **kwargs)
        self.started.append(agent)
        return agent


@contextlib.asynccontextmanager
async def agent_pool(redis_url: str, tmp: Path) -> AsyncIterator[Agents]:
    """Agents on ``redis_url``; whatever is still running at the end is killed."""
    async with anyio.create_task_group() as tg:
        pool = Agents(tg, redis_url, tmp)
        try:
            yield pool
        finally:
            for agent in pool.started:
                if agent.process.returncode is None:
                    agent.process.kill()
                    with anyio.move_on_after(5):
                        await agent.process.wait()
            tg.cancel_scope.cancel()


@pytest.fixture
async def agents(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Agents]:
    async with agent_pool(redis_server.url, tmp_path) as pool:
        yield pool


@pytest.fixture(scope="session")
def claude_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Claude Code, installed from npm on first use (skips without npm)."""
    from tests.support.claude_code import ensure_claude

    return ensure_claude(tmp_path_factory)


@pytest.fixture(scope="session")
def tmux() -> str:
    from tests.support.claude_code import require_tmux

    return require_tmux()
