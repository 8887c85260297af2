"""A small MCP client over stdio, of our own: it keeps every notification, including the
custom `notifications/claude/channel` that the SDK's ClientSession drops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

BRIDGE = [str(Path(sys.executable).with_name("bridge"))]
PROTOCOL_VERSION = "2025-06-18"
# what the tests' client says it can take: channel notifications (it reads them), so that
# bridge pushes to it through the channel (bridge.mcp.clients.takes_channel)
CAPABILITIES = {"experimental": {"claude/channel": {}}}
CHANNEL = "notifications/claude/channel"


class ToolError(Exception):
    pass


@dataclass
class Agent:
    name: str
    process: Process
    stderr_path: Path
    notifications: list[dict[str, Any]] = field(default_factory=list)
    raw_stdout: list[bytes] = field(default_factory=list)
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    initialize_result: dict[str, Any] = field(default_factory=dict)
    _pending: dict[int, Any] = field(default_factory=dict)
    _next_id: int = 0
    _changed: anyio.Event = field(default_factory=anyio.Event)
    stdout_closed: bool = False
    message_times: list[float] = field(default_factory=list)  # perf_counter at arrival
    response_times: dict[Any, float] = field(default_factory=dict)  # perf_counter at arrival
    # one event per awaited reply: with many calls in flight, a line wakes only its waiter
    _reply_waiters: dict[Any, anyio.Event] = field(default_factory=dict)
    # cleared by pause_reading: a client that stops reading the server's stdout
    _reading: anyio.Event = field(default_factory=anyio.Event)

    def __post_init__(self) -> None:
        self._reading.set()

    def pause_reading(self) -> None:
        self._reading = anyio.Event()

    def resume_reading(self) -> None:
        self._reading.set()

    # ------------------------------------------------------------ wire
    async def _write(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send((json.dumps(message) + "\n").encode())

    async def read_forever(self) -> None:
        assert self.process.stdout is not None
        reader = BufferedByteReceiveStream(self.process.stdout)
        try:
            while True:
                await self._reading.wait()
                line = await reader.receive_until(b"\n", 16 * 1024 * 1024)
                self.raw_stdout.append(line)
                message = json.loads(line)  # a non-JSON line on stdout fails the test
                if isinstance(message, list):  # the answers to a JSON-RPC batch
                    self.batches.append(message)
                elif "id" in message and ("result" in message or "error" in message):
                    self._pending[message["id"]] = message
                    self.response_times[message["id"]] = time.perf_counter()
                    waiter = self._reply_waiters.pop(message["id"], None)
                    if waiter is not None:
                        waiter.set()
                else:
                    self.notifications.append(message)
                    if message.get("method") == CHANNEL and \
                            message["params"]["meta"].get("kind") == "message":
                        self.message_times.append(time.perf_counter())
                if self._changed.statistics().tasks_waiting:  # a new Event costs ~10 µs
                    self._changed.set()
                    self._changed = anyio.Event()
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
            self.stdout_closed = True
            self._changed.set()
            for waiter in self._reply_waiters.values():
                waiter.set()

    async def request(self, method: str, params: dict[str, Any] | None = None,
                      timeout: float = 15) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        await self.send_request(request_id, method, params)
        return await self.response(request_id, timeout)

    async def send_request(self, request_id: int, method: str,
                           params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self._write(message)

    async def response(self, request_id: int, timeout: float = 15) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            while request_id not in self._pending:
                if self.process.returncode is not None or self.stdout_closed:
                    raise RuntimeError(f"{self.name} exited: {self.stderr()[-2000:]}")
                await self._reply_waiters.setdefault(request_id, anyio.Event()).wait()
        message = self._pending.pop(request_id)
        if "error" in message:
            raise RuntimeError(f"JSON-RPC error: {message['error']}")
        return dict(message["result"])

    async def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        await self._write(message)

    async def handshake(self) -> None:
        self.initialize_result = await self.request("initialize", {
            "protocolVersion": PROTOCOL_VERSION, "capabilities": CAPABILITIES,
            "clientInfo": {"name": "bridge-tests", "version": "0"},
        })
        await self.notify("notifications/initialized")

    # ------------------------------------------------------------ tools
    async def call(self, tool: str, timeout: float = 15, **arguments: Any) -> dict[str, Any]:
        return await self.request("tools/call", {"name": tool, "arguments": arguments}, timeout)

    async def tool(self, tool: str, timeout: float = 15, **arguments: Any) -> str:
        """Call a tool; return its text, or raise ToolError when isError is set."""
        result = await self.call(tool, timeout, **arguments)
        text = "".join(part.get("text", "") for part in result["content"])
        if result.get("isError"):
            raise ToolError(text)
        return text

    # ------------------------------------------------------------ channel pushes
    def channel(self, kind: str | None = "message") -> list[dict[str, Any]]:
        return [n["params"] for n in self.notifications
                if n.get("method") == CHANNEL
                and (kind is None or n["params"]["meta"].get("kind") == kind)]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 15,
                       what: str = "condition") -> Any:
        with anyio.fail_after(timeout):
            while not (value := predicate()):
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited while waiting for {what}: "
                                       f"{self.stderr()[-2000:]}")
                await self._changed.wait()
        return value

    async def wait_messages(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        await self.wait_for(lambda: len(self.message_times) >= count, timeout,
                            f"{count} channel messages")
        return self.channel()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.stderr().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    async def close_stdin(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.aclose()

    async def wait_exit(self, timeout: float = 10) -> int:
        with anyio.fail_after(timeout):
            return await self.process.wait()


async def start_agent(tg: Any, name: str | None, redis_url: str | None, tmp: Path,
                      *args: str, env: dict[str, str] | None = None,
                      handshake: bool = True, prefix: Sequence[str] = (),
                      cwd: Path | None = None) -> Agent:
    """``prefix`` runs the server through another command, e.g. `ip netns exec NS`; ``cwd``
    is its working directory (as a client starts it in the user's project)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    if redis_url:
        full_env["BRIDGE_REDIS_URL"] = redis_url
    full_env.update(env or {})
    command = [*prefix, *BRIDGE, "serve", *(["--name", name] if name else []), *args]
    label = name or "agent"
    stderr_path = tmp / f"{label}-{os.urandom(3).hex()}.stderr"
    stderr_file = open(stderr_path, "wb")  # noqa: SIM115 - lives as long as the process
    process = await anyio.open_process(command, env=full_env, stderr=stderr_file, cwd=cwd,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    agent = Agent(label, process, stderr_path)
    tg.start_soon(agent.read_forever)
    if handshake:
        await agent.handshake()
    return agent


async def serve_until_it_exits(*args: str, env: dict[str, str],
                               timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `bridge serve` as a client starts it, `initialize` sent and stdin held open,
    until it exits by itself: for the errors that must stop it (bridge joins the room only
    once `initialize` has arrived, and a closed stdin would stop it anyway)."""
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
        "clientInfo": {"name": "bridge-tests", "version": "0"}}}
    output: dict[str, bytes] = {}

    async def drain(name: str, stream: Any) -> None:
        output[name] = b"".join([chunk async for chunk in stream])

    with anyio.fail_after(timeout):
        process = await anyio.open_process([*BRIDGE, "serve", *args], env=env,
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE)
        async with process, anyio.create_task_group() as tg:
            tg.start_soon(drain, "stdout", process.stdout)
            tg.start_soon(drain, "stderr", process.stderr)
            assert process.stdin is not None
            await process.stdin.send((json.dumps(initialize) + "\n").encode())
            await process.wait()
    assert process.returncode is not None
    return subprocess.CompletedProcess([*BRIDGE, "serve", *args], process.returncode,
                                       output["stdout"].decode(), output["stderr"].decode())
