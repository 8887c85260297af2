"""The MCP wire protocol, server side: JSON-RPC 2.0 over newline-delimited stdio.

bridge speaks the few methods it needs (``initialize``, ``ping``, ``tools/list``,
``tools/call``, and the ``initialized`` and ``cancelled`` notifications) with plain dicts and
``json``, as strictly as the specification asks: every request gets exactly one answer (an
error that says what was wrong when it cannot be served), and JSON-RPC batches are accepted in
the revisions that have them. The SDK's session layer validated every message with pydantic
and cost more CPU than everything else on the path of a message, and importing it took most
of start-up (docs/benchmarks.md). tests/test_protocol.py checks every reply against the
SDK's own models.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from bridge import trace
from bridge.mcp.nesting import MAX_NESTING, too_deep, top_level_id
from bridge.room.envelope import COMPACT_JSON

log = structlog.get_logger("bridge.protocol")

# The revisions of the classic `initialize` handshake, newest last (as mcp 1.x knows them).
# Claude Code registers a channel only on this handshake (docs/claude-code.md).
PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")

# The revisions in which a JSON-RPC batch (an array of messages on one line) is a message:
# 2025-03-26 says servers MUST accept them; 2024-11-05 builds on JSON-RPC 2.0, which defines
# them; 2025-06-18 removed them ("Remove support for JSON-RPC batching"), and 2025-11-25 has none.
BATCH_REVISIONS = ("2024-11-05", "2025-03-26")
# after stdin's EOF, the time the requests read before it have to be answered: a join or a
# send takes milliseconds; what waits (a long poll, a join) is told to answer at once
EOF_GRACE = 1.0

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND = -32700, -32600, -32601
INVALID_PARAMS, INTERNAL_ERROR = -32602, -32603

JSON = dict[str, Any]
ToolCall = Callable[[str, JSON], Awaitable[tuple[str, bool]]]
Write = Callable[[bytes], Awaitable[None]]
Deliver = Callable[[JSON | None], Awaitable[None]]  # an answer, or None: nothing to send


def encode(message: JSON | list[JSON]) -> bytes:
    try:
        return COMPACT_JSON.encode(message).encode()
    except UnicodeEncodeError:  # a lone surrogate (say, an id echoed back): escape it
        return json.dumps(message, separators=(",", ":")).encode()


def error_response(request_id: Any, code: int, message: str) -> JSON:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def tool_result(text: str, is_error: bool) -> JSON:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


def shown(name: str) -> str:
    """A client's name for something (a method, a tool), bounded for an error message."""
    return repr(name[:64]) + ("…" if len(name) > 64 else "")


def id_problem(value: Any) -> str | None:
    """What is wrong with a request's `id`, or None. MCP's RequestId is a string or an
    integer; a number with a fraction or exponent is neither (Python reads it as a float)."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return None
    if isinstance(value, float):
        got = ("NaN" if math.isnan(value) else "-Infinity" if value == -math.inf
               else "Infinity" if value == math.inf else repr(value))
        return f"`id` must be a string or an integer (no fraction or exponent), not {got}"
    kinds = {bool: "a boolean", type(None): "null", list: "an array", dict: "an object"}
    return f"`id` must be a string or an integer, not {kinds.get(type(value), 'that')}"


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
    so a long `read_messages` wait never holds up a `send_message` behind it; the requests of
    a batch each run in their own task too, and one line carries all their answers.

    The tasks are plain asyncio tasks, each inside its own anyio cancel scope: an anyio
    task group costs about 50 µs per task, a good part of a message's whole budget.
    """

    def __init__(self, info: ServerInfo, call_tool: ToolCall, write: Write,
                 before_initialize: Callable[[JSON], Awaitable[None]] | None = None,
                 saw_call_meta: Callable[[Any], None] | None = None) -> None:
        self.info = info
        self.call_tool = call_tool
        self.write = write
        self.before_initialize = before_initialize  # given the initialize params
        self.saw_call_meta = saw_call_meta  # given each tools/call's `_meta` (Codex: its thread)
        self.initialized = anyio.Event()
        self.input_closed = anyio.Event()  # the client closed stdin: answer what was read
        self.on_input_closed: Callable[[], None] = lambda: None  # e.g. end the long polls
        self.protocol_version: str | None = None  # what this session answered in initialize
        # set once an `initialize` in flight is answered: requests read after it wait for
        # that, so that a client that writes several at once hears `initialize` first
        self._initialize_answered: asyncio.Event | None = None
        self._tool_names = {tool["name"] for tool in info.tools}
        self._running: dict[Any, anyio.CancelScope] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, lines: Callable[[], Awaitable[bytes]]) -> None:
        """Answer requests until ``lines()`` returns b"" (the client closed stdin); then
        answer what was read before, for up to EOF_GRACE (``input_closed`` tells a waiting
        handler to answer now)."""
        try:
            while line := await lines():
                if not line.strip():
                    continue
                try:
                    await self.receive(line)
                except Exception:  # one bad line must cost one answer, never the server
                    log.exception("protocol_line_failed", line=line[:200])
            self.input_closed.set()
            self.on_input_closed()
            with anyio.move_on_after(EOF_GRACE):
                while self._tasks:
                    await asyncio.wait(set(self._tasks))
        finally:
            for scope in list(self._running.values()):
                scope.cancel()
            if self._tasks:
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(*self._tasks, return_exceptions=True)

    async def receive(self, line: bytes) -> None:
        if too_deep(line):
            await self.write(encode(self.too_deep_error(line)))
            return
        try:
            message = json.loads(line)
            trace.mark("request_read")
        except RecursionError:  # MAX_NESTING is far below the limit; kept as a backstop
            await self.write(encode(self.too_deep_error(line)))
            return
        except ValueError as e:
            log.warning("protocol_parse_error", error=str(e), line=line[:200])
            await self.write(encode(error_response(None, PARSE_ERROR, f"Parse error: {e}")))
            return
        if isinstance(message, list):
            await self.receive_batch(message)
            return
        response = self.dispatch(message, self.reply)
        if isinstance(response, dict):
            await self.write(encode(response))

    def too_deep_error(self, line: bytes) -> JSON:
        request_id = top_level_id(line)
        if id_problem(request_id) is not None:
            request_id = None
        log.warning("protocol_too_deep", limit=MAX_NESTING, id=str(request_id)[:100],
                    line=line[:200])
        what = (f"arrays/objects nested more than {MAX_NESTING} deep; no MCP request needs "
                f"that, so it was not read. Send the arguments less deeply nested")
        if request_id is None:  # no id to answer to: as JSON-RPC says, a parse error
            return error_response(None, PARSE_ERROR, f"Parse error: the message has {what}")
        return error_response(request_id, INVALID_REQUEST,
                              f"Invalid request: the request has {what}")

    async def receive_batch(self, batch: list[Any]) -> None:
        """A JSON-RPC batch: each element is handled as if it came alone; the answers to its
        requests go out together, as one array, once the last of them is ready."""
        refusal = self.batch_refusal(batch)
        if refusal is not None:
            await self.write(encode(error_response(None, INVALID_REQUEST, refusal)))
            return
        replies = BatchReplies(self.write)
        for message in batch:
            try:
                if isinstance(message, dict) and message.get("method") == "initialize":
                    response: JSON | asyncio.Task[None] | None = error_response(
                        message.get("id") if id_problem(message.get("id")) is None else None,
                        INVALID_REQUEST, "Invalid request: `initialize` must not be part of a "
                        "JSON-RPC batch; send it alone")
                else:
                    response = self.dispatch(message, replies.deliver)
            except Exception:  # one bad element must cost one answer, never the batch
                log.exception("protocol_batch_element_failed")
                response = error_response(None, INTERNAL_ERROR,
                                          "Internal error in bridge; it keeps serving")
            if isinstance(response, dict):
                replies.responses.append(response)
            elif response is not None:
                replies.waiting += 1
        await replies.all_dispatched()

    def batch_refusal(self, batch: list[Any]) -> str | None:
        version = self.protocol_version
        if version is None:
            return ("Invalid request: a JSON-RPC batch before `initialize`; send `initialize` "
                    "alone first (batches are accepted once a session has negotiated "
                    f"protocol {' or '.join(BATCH_REVISIONS)})")
        if version not in BATCH_REVISIONS:
            return (f"Invalid request: this session negotiated MCP protocol {version}, which "
                    f"has no JSON-RPC batches (2025-06-18 removed them); send one request "
                    f"per line")
        if not batch:
            return "Invalid request: an empty JSON-RPC batch; a batch needs at least one message"
        return None

    async def reply(self, response: JSON | None) -> None:
        if response is not None:
            await self.write(encode(response))

    def dispatch(self, message: Any, deliver: Deliver) -> JSON | asyncio.Task[None] | None:
        """Handle one message: returns an error to send at once, or the task that answers the
        request (it hands its answer to ``deliver``), or None when nothing is to be sent."""
        if not isinstance(message, dict):
            return error_response(None, INVALID_REQUEST,
                                  "Invalid request: expected a JSON-RPC 2.0 object")
        method = message.get("method")
        has_id = "id" in message
        request_id = message.get("id")
        problem = id_problem(request_id) if has_id else None
        echoed = request_id if has_id and problem is None else None
        if not isinstance(method, str):
            if "result" in message or "error" in message:
                return None  # a response: we send no requests, so there is nothing to match
            return error_response(echoed, INVALID_REQUEST, "Invalid request: expected a "
                                  "JSON-RPC 2.0 object with a string `method`")
        if message.get("jsonrpc") != "2.0":
            return error_response(echoed, INVALID_REQUEST, 'Invalid request: `"jsonrpc": '
                                  '"2.0"` is missing; bridge speaks JSON-RPC 2.0 only, and '
                                  "nothing was done")
        params = message.get("params")
        if not has_id:
            self.notified(method, params if isinstance(params, dict) else {})
            return None
        if problem is not None:
            return error_response(None, INVALID_REQUEST, f"Invalid request: {problem}")
        if params is None:
            params = {}
        elif not isinstance(params, dict):
            return error_response(request_id, INVALID_PARAMS,
                                  f"Invalid params: `params` of {method} must be an object")
        if request_id in self._running:  # its cancellation could not tell the two apart
            return error_response(request_id, INVALID_REQUEST,
                                  f"Invalid request: id {request_id!r:.40} is already used by a "
                                  f"request still in flight; use a new id for each request")
        if method == "initialize":
            self._initialize_answered = asyncio.Event()
        scope = anyio.CancelScope()
        self._running[request_id] = scope
        task = asyncio.get_running_loop().create_task(
            self.answer(request_id, method, params, scope, deliver))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
                     scope: anyio.CancelScope, deliver: Deliver) -> None:
        response: JSON | None = None
        first = self._initialize_answered
        with scope:
            try:
                if method not in ("initialize", "ping") and first is not None:
                    await first.wait()  # (a ping is answered at once: it asks if we live)
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
        # a cancelled request gets no answer (the client wants none)
        await deliver(None if scope.cancelled_caught else response)
        if method == "initialize" and first is not None:
            first.set()

    async def handle(self, method: str, params: JSON) -> JSON:
        if method == "tools/call":
            name, arguments = params.get("name"), params.get("arguments")
            if not isinstance(name, str):
                raise ProtocolError(INVALID_PARAMS, "tools/call needs a string `name`")
            if name not in self._tool_names:
                raise ProtocolError(INVALID_PARAMS, f"Unknown tool: {shown(name)}; bridge's tools "
                                    f"are {', '.join(sorted(self._tool_names))}")
            if arguments is None:
                arguments = {}
            if not isinstance(arguments, dict):
                raise ProtocolError(INVALID_PARAMS, "tools/call `arguments` must be an object "
                                    "(argument names to values)")
            if self.saw_call_meta is not None and "_meta" in params:
                self.saw_call_meta(params["_meta"])
            return tool_result(*await self.call_tool(name, arguments))
        if method == "initialize":
            if self.before_initialize is not None:
                await self.before_initialize(params)
            result = self.info.initialize_result(params.get("protocolVersion"))
            self.protocol_version = result["protocolVersion"]
            return result
        if method == "tools/list":
            if params.get("cursor") is not None:  # we never hand one out: any cursor is invalid
                raise ProtocolError(INVALID_PARAMS, "Invalid cursor: bridge lists all its "
                                    "tools in one page and hands out no cursors; call "
                                    "tools/list without one")
            return {"tools": self.info.tools}
        if method == "ping":
            return {}
        raise ProtocolError(METHOD_NOT_FOUND, f"Method not found: {method[:100]}")


class BatchReplies:
    """The answers to one batch's requests, written as one JSON array when the last is in.
    A batch of notifications (or of requests all cancelled) gets no answer at all."""

    def __init__(self, write: Write) -> None:
        self.write = write
        self.responses: list[JSON] = []
        self.waiting = 0  # requests still running
        self._dispatched = False

    async def deliver(self, response: JSON | None) -> None:
        self.waiting -= 1
        if response is not None:
            self.responses.append(response)
        await self._write_when_complete()

    async def all_dispatched(self) -> None:
        self._dispatched = True
        await self._write_when_complete()

    async def _write_when_complete(self) -> None:
        if self._dispatched and self.waiting == 0 and self.responses:
            responses, self.responses = self.responses, []
            await self.write(encode(responses))


class ProtocolError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
