"""The life of one `bridge serve` process: when it joins the room, how it stops, and how
it holds up under many calls at once. Real redis-server and real `bridge serve` processes."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from tests.conftest import Agents, RedisServer
from tests.support.mcp_client import BRIDGE, PROTOCOL_VERSION, Agent

pytestmark = pytest.mark.anyio

STOP_DEADLINE = 5  # seconds: generous; the point is that the process ends, not how fast


async def logged(agent: Agent, event: str, timeout: float = 20) -> dict[str, Any]:
    """The first log line of ``event`` on the agent's stderr (a file: polled, with a
    deadline)."""
    with anyio.fail_after(timeout):
        while True:
            found = [e for e in agent.log_events() if e.get("event") == event]
            if found:
                return found[0]
            assert agent.process.returncode is None, agent.stderr()[-2000:]
            await anyio.sleep(0.05)


async def in_flight(agent: Agent, request_id: int, method: str, params: dict[str, Any]) -> None:
    """Send a request and make sure the server has taken it up: requests are taken up in
    the order they arrive, so once a ping sent after it is answered, it is running."""
    await agent.send_request(request_id, method, params)
    await agent.request("ping")


async def stop(agent: Agent, how: str) -> int:
    if how.startswith("SIG"):
        agent.process.send_signal(getattr(signal, how))
    else:
        await agent.close_stdin()
    code = await agent.wait_exit(STOP_DEADLINE)
    # the clean stop did it; the last resort (stop_forced) is for a starved event loop
    assert "stop_forced" not in agent.stderr(), agent.stderr()[-2000:]
    return code


def room_keys(r: redis.Redis, name: str) -> list[bytes]:
    return sorted(key for key in r.keys("bridge:*") if name.encode() in key)  # type: ignore[union-attr]


async def test_300_concurrent_tool_calls_all_succeed(agents: Agents) -> None:
    """More calls in flight than redis-py's pool has connections: they wait for one, and
    none is told that Redis is unreachable."""
    alice = await agents.start("alice")
    await agents.start("bob")
    calls = [("list_participants", {}) if i % 2 else
             ("send_message", {"to": "bob", "text": f"m{i}"}) for i in range(300)]
    for request_id, (tool, arguments) in enumerate(calls, start=1000):
        await alice.send_request(request_id, "tools/call",
                                 {"name": tool, "arguments": arguments})
    failures = []
    for request_id, (tool, _) in enumerate(calls, start=1000):
        result = await alice.response(request_id, timeout=60)
        if result.get("isError"):
            failures.append((tool, result["content"][0]["text"]))
    assert failures == []


def test_only_a_redis_that_does_not_answer_is_called_unreachable() -> None:
    from redis.exceptions import (
        AuthenticationError,
        BusyLoadingError,
        DataError,
        ResponseError,
    )
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from bridge.mcp.tools import redis_failure

    for down in (RedisConnectionError("Error 111 connecting"), RedisTimeoutError("Timeout"),
                 ConnectionRefusedError(111, "refused"), TimeoutError()):
        assert redis_failure(down).startswith("Redis is unreachable"), down
    answered = {
        ResponseError("NOPERM this user has no permissions"): "Redis refused the command",
        AuthenticationError("invalid password"): "Redis refused our login",
        BusyLoadingError("LOADING Redis is loading"): "still loading its data",
        DataError("Invalid input of type"): "Redis answered something bridge did not expect",
    }
    for error, needle in answered.items():
        text = redis_failure(error)
        assert needle in text and "unreachable" not in text, text


async def test_a_send_refused_at_login_says_so_at_once(agents: Agents, r: redis.Redis) -> None:
    """A password changed under a running agent: the send's reconnect is refused, which no
    retry can fix, so it is not reported as Redis not answering (after BRIDGE_SEND_TIMEOUT)."""
    alice = await agents.start("alice", env={"BRIDGE_SEND_TIMEOUT": "60"})
    await agents.start("bob")
    r.config_set("requirepass", "a-new-password-nobody-told-alice")
    r.execute_command("AUTH", "a-new-password-nobody-told-alice")
    r.client_kill_filter(_type="normal", skipme=True)  # alice must log in again
    with anyio.fail_after(30):  # far less than the 60 s it would retry an outage
        result = await alice.call("send_message", timeout=60, to="bob", text="hello")
    text = result["content"][0]["text"]
    assert result["isError"] and "refused the login" in text, text
    assert "did not answer" not in text


# ---------------------------------------------------------------------------- stopping
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "stdin EOF"])
async def test_stop_during_a_long_poll_leaves_the_room(agents: Agents, r: redis.Redis,
                                                         how: str) -> None:
    alice = await agents.start("alice", "--delivery", "pull")
    await in_flight(alice, 500, "tools/call",
                    {"name": "read_messages", "arguments": {"wait_seconds": 300}})
    assert await stop(alice, how) == 0
    assert not r.exists("bridge:{main}:agent:alice")  # a clean leave: the record is gone
    assert r.exists("bridge:{main}:cursor:alice")  # the cursor stays for the next session
    assert "left" in {e["event"] for e in alice.log_events()}


@pytest.mark.parametrize("how", ["SIGTERM", "stdin EOF"])
async def test_stop_while_sends_retry_against_a_stopped_redis(
        agents: Agents, redis_server: RedisServer, how: str) -> None:
    """The send batcher retries for BRIDGE_SEND_TIMEOUT (10 s), shielded from
    cancellation: a stop still ends the process at once."""
    alice = await agents.start("alice", env={"BRIDGE_SEND_TIMEOUT": "60"})
    await agents.start("bob")
    redis_server.stop()
    for request_id in range(600, 605):
        await alice.send_request(request_id, "tools/call", {
            "name": "send_message", "arguments": {"to": "bob", "text": f"m{request_id}"}})
    await logged(alice, "send_retry")
    assert await stop(alice, how) == 0


@pytest.mark.parametrize("how", ["SIGTERM", "stdin EOF"])
async def test_stop_while_redis_never_answers_at_start(agents: Agents, how: str) -> None:
    """A Redis address that takes the connection and never answers (a hung server): the
    first attempt takes seconds, and a stop does not wait for it."""
    with silent_listener() as url:
        alice = await agents.start("alice", redis_url=url, handshake=False)
        await in_flight(alice, 900, "initialize", {
            "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"}})
        assert await stop(alice, how) == 0


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # connections complete in the kernel and are never answered
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"


def test_a_starved_event_loop_still_stops_on_sigterm(tmp_path: Path) -> None:
    """The last resort: a coroutine that never yields keeps the event loop from running
    anything, so SIGTERM's clean stop never starts; the process still ends."""
    script = textwrap.dedent("""
        import asyncio, sys
        from bridge import logs
        from bridge.mcp.shutdown import Shutdown

        async def main():
            logs.configure()
            Shutdown().install()
            print("spinning", flush=True)
            while True:  # never yields: the event loop gets no turn
                pass

        asyncio.run(main())
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stdout.readline() == b"spinning\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=STOP_DEADLINE) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None and b"stop_forced" in process.stderr.read()


# ---------------------------------------------------------------------------- joining
async def test_a_probe_that_closes_stdin_never_joins(agents: Agents, r: redis.Redis) -> None:
    """Clients start a throwaway process to probe `server/discover` and close it: the room
    must not see it join or leave. Joining waits for the client's `initialize`."""
    alice = await agents.start("alice")
    probe = await agents.start("probe", handshake=False)
    await probe.send_request(900, "server/discover", {})
    with pytest.raises(RuntimeError, match="-32601"):
        await probe.response(900)
    await probe.close_stdin()
    assert await probe.wait_exit(STOP_DEADLINE) == 0
    await nobody_but_carol_came(agents, alice, r, "probe")


async def test_a_probe_that_is_killed_never_joins(agents: Agents, r: redis.Redis) -> None:
    alice = await agents.start("alice")
    probe = await agents.start("probe", handshake=False)
    await probe.request("ping")
    # a client that calls a tool before initialising is told so; it does not join either
    early = await probe.call("list_participants")
    assert early["isError"] and "`initialize`" in early["content"][0]["text"]
    probe.process.kill()
    await probe.wait_exit()
    await nobody_but_carol_came(agents, alice, r, "probe")


async def nobody_but_carol_came(agents: Agents, alice: Agent, r: redis.Redis,
                                absent: str) -> None:
    """A process that does initialise joins, as always; events reach alice in order, so
    once carol's has arrived, any of ``absent``'s would have too."""
    await agents.start("carol")
    await alice.wait_for(lambda: any(e["meta"]["from"] == "carol"
                                     for e in alice.channel("joined")), what="carol joined")
    assert {e["meta"]["from"] for e in alice.channel(None)} == {"carol"}
    assert room_keys(r, absent) == []  # no presence record, no cursor
    listing = await alice.tool("list_participants")
    assert "- carol" in listing and absent not in listing


# ---------------------------------------------------------------------------- stdin's EOF
async def written_at_once_then_eof(redis_url: str, tmp_path: Path, *lines: dict[str, Any],
                                   name: str = "alice") -> tuple[list[dict[str, Any]], int]:
    """Start `bridge serve`, write ``lines`` in one go, close stdin, and read every answer
    until it exits: (the answers in order, the exit status)."""
    import json
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(BRIDGE_REDIS_URL=redis_url, BRIDGE_LOG_LEVEL="DEBUG")
    with open(tmp_path / f"{name}.stderr", "wb") as stderr:
        process = await anyio.open_process([*BRIDGE, "serve", "--name", name], env=env,
                                           stderr=stderr)
        assert process.stdin is not None and process.stdout is not None
        await process.stdin.send(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
        await process.stdin.aclose()
        output = b""
        with anyio.fail_after(STOP_DEADLINE):
            async for chunk in process.stdout:
                output += chunk
            code = await process.wait()
    return [json.loads(line) for line in output.splitlines()], code


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
    "clientInfo": {"name": "all-at-once", "version": "0"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


async def test_requests_written_at_once_before_eof_are_all_answered_initialize_first(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """A client that writes initialize, initialized and tools/list at once and closes stdin
    used to get the tools/list answer alone: bridge answered it while still joining the
    room, and the join (so initialize) was cut off at EOF."""
    long_poll = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "read_messages", "arguments": {"wait_seconds": 300}}}
    answers, code = await written_at_once_then_eof(
        redis_server.url, tmp_path, INITIALIZE, INITIALIZED, TOOLS_LIST, long_poll)
    assert code == 0
    assert [answer.get("id") for answer in answers] == [1, 2, 3], answers
    assert answers[0]["result"]["serverInfo"]["name"] == "bridge"
    assert "send_message" in {tool["name"] for tool in answers[1]["result"]["tools"]}
    # the long poll answers with what it has, at once, instead of being dropped
    assert answers[2]["result"]["content"][0]["text"].startswith("No messages waiting")


async def test_at_eof_initialize_is_answered_even_while_redis_does_not(
        tmp_path: Path) -> None:
    with silent_listener() as url:
        answers, code = await written_at_once_then_eof(url, tmp_path, INITIALIZE, INITIALIZED,
                                                       TOOLS_LIST)
    assert code == 0
    assert [answer.get("id") for answer in answers] == [1, 2], answers
