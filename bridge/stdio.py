"""A direct stdio transport for the MCP server, without the SDK's worker threads.

The SDK's stdio transport reads stdin in a worker thread. That costs a thread hop per
message, and a thread blocked in read() cannot be cancelled, so SIGTERM would wait for the
client's next line. Here stdin and stdout are non-blocking pipes on the event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import mcp.types as types
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage

log = structlog.get_logger("bridge.stdio")

MAX_LINE = 64 * 1024 * 1024

ReadStream = MemoryObjectReceiveStream[SessionMessage | Exception]
WriteStream = MemoryObjectSendStream[SessionMessage]


class PipeTransport:
    """The SDK session's streams, plus a direct line writer for channel pushes.

    Every byte to stdout goes through ``write_lines``: a plain non-blocking ``os.write``
    in the calling task, under a lock, so lines never interleave and a push is in the
    kernel's pipe when the call returns, with no event-loop turn in between.
    """

    def __init__(self, read_stream: ReadStream, write_stream: WriteStream, fd: int) -> None:
        self.read_stream = read_stream
        self.write_stream = write_stream
        self._fd = fd
        self._lock = anyio.Lock(fast_acquire=True)  # no event-loop turn when it is free

    async def write_lines(self, lines: list[bytes]) -> None:
        """Write JSON-RPC lines in one write. When this returns they are in the kernel's
        pipe: a crash after it cannot take them back, so the caller may move its cursor."""
        data = memoryview(b"".join(line + b"\n" for line in lines))
        async with self._lock:
            while data:
                try:
                    written = os.write(self._fd, data)
                except BlockingIOError:
                    await anyio.wait_writable(self._fd)
                    continue
                data = data[written:]


@asynccontextmanager
async def pipe_transport(stdin_fd: int, stdout_fd: int) -> AsyncIterator[PipeTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(stdin_fd, "rb", buffering=0)
    )
    os.set_blocking(stdout_fd, False)

    incoming_send, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](64)
    outgoing, outgoing_receive = anyio.create_memory_object_stream[SessionMessage](64)

    async def read_lines() -> None:
        async with incoming_send:
            while line := await reader.readline():
                if not line.strip():
                    continue
                try:
                    message = types.JSONRPCMessage.model_validate_json(line)
                except Exception as e:  # the session answers a parse error; we keep reading
                    await incoming_send.send(e)
                    continue
                await incoming_send.send(SessionMessage(message))

    transport = PipeTransport(incoming, outgoing, stdout_fd)

    async def write_responses() -> None:
        async with outgoing_receive:
            async for session_message in outgoing_receive:
                data = session_message.message.model_dump_json(by_alias=True, exclude_none=True)
                await transport.write_lines([data.encode()])

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_lines)
            tg.start_soon(write_responses)
            try:
                yield transport
            finally:
                tg.cancel_scope.cancel()
    finally:
        read_transport.close()
        os.close(stdout_fd)
