"""The MCP wire protocol, server side: JSON-RPC 2.0 over newline-delimited stdio.

bridge speaks the few methods it needs (``initialize``, ``ping``, ``tools/list``,
``tools/call``, and the ``initialized`` and ``cancelled`` notifications) with plain dicts and
``json``. The SDK's session layer validated every message with pydantic and cost more CPU
than everything else on the path of a message, and importing it took most of start-up
(docs/benchmarks.md). tests/test_protocol.py checks every reply against the SDK's own models.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from bridge import trace

log = structlog.get_logger("bridge.protocol")

# The revisions of the classic `initialize` handshake, newest last (as mcp 1.x knows them).
# Claude Code registers a channel only on this handshake (CHANNELS.md).
PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND = -32700, -32600, -32601
INVALID_PARAMS, INTERNAL_ERROR = -32602, -32603

JSON = dict[str, Any]
ToolCall = Callable[[str, JSON], Awaitable[tuple[str, bool]]]
Write = Callable[[bytes], Awaitable[None]]


def encode(message: JSON) -> bytes:
    try:
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate (say, an id echoed back): escape it
        return json.dumps(message, separators=(",", ":")).encode()


def error_response(request_id: Any, code: int, message: str) -> JSON:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def tool_result(text: str, is_error: bool) -> JSON:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


@dataclass
class ServerInfo:
    name: str
    version: str
    instructions: str
    tools: list[JSON]
    experimental: JSON = field(default_factory=dict)

    def initialize_result(self, requested: Any) -> JSON:
        version = requested if requested in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1]
        capabilities: JSON = {"tools": {"listChanged": False}}
        if self.experimental:
            capabilities["experimental"] = self.experimental
        return {"protocolVersion": version, "capabilities": capabilities,
                "serverInfo": {"name": self.name, "version": self.version},
                "instructions": self.instructions}


class Session:
    """One client connection. Each request runs in its own task, started in arrival order,
    so a long `read_messages` wait never holds up a `send_message` behind it.

    The tasks are plain asyncio tasks, each inside its own anyio cancel scope: an anyio
    task group costs about 50 µs per task, a good part of a message's whole budget.
    """

    def __init__(self, info: ServerInfo, call_tool: ToolCall, write: Write,
                 before_initialize: Callable[[], Awaitable[None]] | None = None) -> None:
        self.info = info
        self.call_tool = call_tool
        self.write = write
        self.before_initialize = before_initialize
        self.initialized = anyio.Event()
        self._running: dict[Any, anyio.CancelScope] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, lines: Callable[[], Awaitable[bytes]]) -> None:
        """Answer requests until ``lines()`` returns b"" (the client closed stdin)."""
        try:
            while line := await lines():
                if not line.strip():
                    continue
                try:
                    await self.receive(line)
                except Exception:  # one bad line must cost one answer, never the server
                    log.exception("protocol_line_failed", line=line[:200])
        finally:
            for scope in list(self._running.values()):
                scope.cancel()
            if self._tasks:
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(*self._tasks, return_exceptions=True)

    async def receive(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            trace.mark("request_read")
        except ValueError as e:
            log.warning("protocol_parse_error", error=str(e), line=line[:200])
            await self.write(encode(error_response(None, PARSE_ERROR, f"Parse error: {e}")))
            return
        if isinstance(message, list):  # dropped by the 2025-06-18 revision; the SDK has none
            await self.write(encode(error_response(
                None, INVALID_REQUEST, "JSON-RPC batches are not supported; send one "
                "request per line")))
            return
        await self.dispatch(message)

    async def dispatch(self, message: Any) -> None:
        method = message.get("method") if isinstance(message, dict) else None
        if not isinstance(method, str):
            if isinstance(message, dict) and ("result" in message or "error" in message):
                return  # a response: we send no requests, so there is nothing to match
            request_id = message.get("id") if isinstance(message, dict) else None
            await self.write(encode(error_response(
                request_id, INVALID_REQUEST, "Invalid request: expected a JSON-RPC 2.0 object "
                "with a string `method`")))
            return
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        if "id" not in message:
            self.notified(method, params)
            return
        request_id = message["id"]
        if not isinstance(request_id, str | int) or isinstance(request_id, bool):
            await self.write(encode(error_response(
                None, INVALID_REQUEST, "Invalid request: `id` must be a string or a number")))
            return
        scope = anyio.CancelScope()
        self._running[request_id] = scope
        task = asyncio.get_running_loop().create_task(
            self.answer(request_id, method, params, scope))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def notified(self, method: str, params: JSON) -> None:
        if method == "notifications/initialized":
            self.initialized.set()
        elif method == "notifications/cancelled":
            request_id = params.get("requestId")
            scope = self._running.get(request_id) if isinstance(request_id, str | int) else None
            if scope is not None:  # the client wants no answer to it any more
                scope.cancel()
        # any other notification needs nothing from us

    async def answer(self, request_id: Any, method: str, params: JSON,
                     scope: anyio.CancelScope) -> None:
        response: JSON | None = None
        with scope:
            try:
                result = await self.handle(method, params)
            except ProtocolError as e:
                response = error_response(request_id, e.code, str(e))
            except Exception as e:  # a bug must cost one answer, never the whole server
                log.exception("request_failed", method=method)
                response = error_response(request_id, INTERNAL_ERROR,
                                          f"Internal error in bridge: {e!r}; it keeps serving")
            else:
                response = {"jsonrpc": "2.0", "id": request_id, "result": result}
        self._running.pop(request_id, None)
        if response is not None and not scope.cancelled_caught:
            await self.write(encode(response))

    async def handle(self, method: str, params: JSON) -> JSON:
        if method == "tools/call":
            name, arguments = params.get("name"), params.get("arguments")
            if not isinstance(name, str):
                raise ProtocolError(INVALID_PARAMS, "tools/call needs a string `name`")
            if arguments is None:
                arguments = {}
            if not isinstance(arguments, dict):
                return tool_result("`arguments` must be an object", True)
            return tool_result(*await self.call_tool(name, arguments))
        if method == "initialize":
            if self.before_initialize is not None:
                await self.before_initialize()
            return self.info.initialize_result(params.get("protocolVersion"))
        if method == "tools/list":
            return {"tools": self.info.tools}
        if method == "ping":
            return {}
        raise ProtocolError(METHOD_NOT_FOUND, f"Method not found: {method}")


class ProtocolError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
