"""The stdio pipes of the MCP server, on the event loop, without worker threads.

A reader thread (the SDK's way) costs a thread hop per message, and a thread blocked in
read() cannot be cancelled, so SIGTERM would wait for the client's next line. Here stdin and
stdout are non-blocking pipes on the event loop.
"""

from __future__ import annotations

import asyncio
import os
import selectors
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import structlog

log = structlog.get_logger("bridge.stdio")

MAX_LINE = 64 * 1024 * 1024


class PipeTransport:
    """Lines in from stdin, lines out to stdout.

    Every byte to stdout goes through ``write_lines``: a plain non-blocking ``os.write``
    in the calling task, under a lock, so lines never interleave and a push is in the
    kernel's pipe when the call returns, with no event-loop turn in between.
    """

    def __init__(self, reader: asyncio.StreamReader, fd: int) -> None:
        self._reader = reader
        self._fd = fd
        # asyncio's lock: no event-loop turn when it is free, and (unlike anyio's, even with
        # fast_acquire) no cancellation check through the task's scopes: 1.6 -> 0.4 us a write
        self._lock = asyncio.Lock()
        self._replies: list[bytes] = []
        self._replies_task: asyncio.Task[None] | None = None

    async def read_line(self) -> bytes:
        """The next line from stdin; b"" once the client has closed it."""
        while True:
            try:
                return await self._reader.readline()
            except ValueError:  # longer than MAX_LINE: asyncio has dropped it; go on
                log.warning("protocol_line_too_long", limit=MAX_LINE,
                            hint="the client sent a line over 64 MiB; it was ignored")

    async def write_reply(self, line: bytes) -> None:
        """Queue a JSON-RPC reply; the replies queued in one event-loop turn go out in one
        write. A batch of sends completes in one turn (one pipeline reply), so this is one
        write and one wake-up of the client where it was one per reply."""
        self._replies.append(line)
        if self._replies_task is None:
            self._replies_task = asyncio.get_running_loop().create_task(self._write_replies())

    async def _write_replies(self) -> None:
        try:
            while self._replies:
                lines, self._replies = self._replies, []
                await self.write_lines(lines)
        except (BrokenPipeError, ConnectionResetError):  # the client is gone: so are replies
            log.info("client_gone", hint="stdout is closed; replies dropped")
            self._replies.clear()
        finally:
            self._replies_task = None

    async def finish_replies(self) -> None:
        """Let queued replies go out (at most half a second: the client may be gone)."""
        task = self._replies_task
        if task is not None:
            with anyio.move_on_after(0.5, shield=True):
                await asyncio.wait([task])
            task.cancel()

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


def pollable(fd: int) -> bool:
    """Whether the event loop can wait on ``fd``: a pipe, socket or terminal is; a regular
    file or /dev/null (`bridge serve < /dev/null`) is not, and epoll refuses it."""
    with selectors.DefaultSelector() as selector:
        try:
            selector.register(fd, selectors.EVENT_READ)
        except (PermissionError, ValueError, OSError):
            return False
    return True


async def feed_from_file(fd: int, reader: asyncio.StreamReader) -> None:
    """Feed a file's contents to ``reader``: such reads return at once, so a worker
    thread is cheap and cannot hang."""
    while data := await anyio.to_thread.run_sync(os.read, fd, 1 << 16):
        reader.feed_data(data)
    reader.feed_eof()


@asynccontextmanager
async def pipe_transport(stdin_fd: int, stdout_fd: int) -> AsyncIterator[PipeTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE)
    read_transport: asyncio.BaseTransport | None = None
    file_reader: asyncio.Task[None] | None = None
    if pollable(stdin_fd):
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(stdin_fd, "rb", buffering=0)
        )
    else:
        file_reader = loop.create_task(feed_from_file(stdin_fd, reader))
    os.set_blocking(stdout_fd, False)
    transport = PipeTransport(reader, stdout_fd)
    try:
        yield transport
    finally:
        await transport.finish_replies()
        if read_transport is not None:
            read_transport.close()
        if file_reader is not None:
            file_reader.cancel()
        os.close(stdout_fd)
