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
    """The SDK session's streams, plus a direct line writer for channel pushes."""

    def __init__(self, read_stream: ReadStream, write_stream: WriteStream,
                 writer: asyncio.StreamWriter) -> None:
        self.read_stream = read_stream
        self.write_stream = write_stream
        self._writer = writer

    async def write_line(self, data: bytes) -> None:
        """Write one JSON-RPC line. When this returns, the line is in the pipe: a crash
        after it cannot take it back, so the caller may move its cursor."""
        self._writer.write(data + b"\n")
        await self._writer.drain()


@asynccontextmanager
async def pipe_transport(stdin_fd: int, stdout_fd: int) -> AsyncIterator[PipeTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(stdin_fd, "rb", buffering=0)
    )
    write_transport, write_protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(stdout_fd, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)

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

    async def write_lines() -> None:
        async with outgoing_receive:
            async for session_message in outgoing_receive:
                data = session_message.message.model_dump_json(by_alias=True, exclude_none=True)
                writer.write(data.encode() + b"\n")  # whole lines: writes never interleave
                await writer.drain()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_lines)
            tg.start_soon(write_lines)
            try:
                yield PipeTransport(incoming, outgoing, writer)
            finally:
                tg.cancel_scope.cancel()
    finally:
        read_transport.close()
        write_transport.close()
