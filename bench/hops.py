"""The floor of bridge's shape: send_message → push makes four hops between processes, and this
measures those four hops with nothing of bridge in them.

    harness ─stdin pipe→ relay ─PUBLISH→ redis-server ─pub/sub→ sink ─stdout pipe→ harness

The relay and the sink are as lean as Python gets (uvloop, asyncio protocols, hiredis): a line
in, a PUBLISH out; a message in, a line out. No JSON-RPC, no log, no script, no signature, no
cursor. What bridge adds is its latency minus this; what a design with agents on stdio and a
Redis between them cannot go below, on this machine, is about this.
"""

from __future__ import annotations

import subprocess
import sys
import time

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

RELAY = r"""
import asyncio, sys, hiredis, uvloop
port, channel = int(sys.argv[1]), sys.argv[2]
async def main():
    loop = asyncio.get_running_loop()
    class Replies(asyncio.Protocol):
        def data_received(self, data): pass  # PUBLISH's answers: not waited for
    redis, _ = await loop.create_connection(Replies, "127.0.0.1", port)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    while line := await reader.readline():
        redis.write(hiredis.pack_command(("PUBLISH", channel, line.rstrip(b"\n"))))
uvloop.run(main())
"""

SINK = r"""
import asyncio, os, sys, hiredis, uvloop
port, channel = int(sys.argv[1]), sys.argv[2]
async def main():
    loop = asyncio.get_running_loop()
    subscribed = loop.create_future()
    class Messages(asyncio.Protocol):
        def connection_made(self, transport):
            self.reader = hiredis.Reader()
            transport.write(hiredis.pack_command(("SUBSCRIBE", channel)))
        def data_received(self, data):
            self.reader.feed(data)
            while (reply := self.reader.gets()) is not False:
                if reply[0] == b"message":
                    os.write(1, reply[2] + b"\n")
                elif not subscribed.done():
                    subscribed.set_result(None)
    await loop.create_connection(Messages, "127.0.0.1", port)
    await subscribed
    os.write(1, b"ready\n")
    await loop.create_future()
uvloop.run(main())
"""


async def measure_hops(port: int, count: int, warmup: int = 50) -> list[float]:
    """ms from writing a line into the relay's stdin to reading it from the sink's stdout, one
    line at a time, through anyio's process streams, as the MCP client that times bridge
    writes to an agent and reads from one."""
    channel = "floor:hops"
    sink = await anyio.open_process([sys.executable, "-c", SINK, str(port), channel],
                                    stdin=subprocess.DEVNULL)
    relay = await anyio.open_process([sys.executable, "-c", RELAY, str(port), channel])
    try:
        assert sink.stdout is not None and relay.stdout is not None and relay.stdin
        out = BufferedByteReceiveStream(sink.stdout)
        with anyio.fail_after(30):
            assert await out.receive_until(b"\n", 64) == b"ready", "hops floor: no sink"
            assert await BufferedByteReceiveStream(relay.stdout).receive_until(
                b"\n", 64) == b"ready", "hops floor: no relay"
        samples: list[float] = []
        for i in range(count + warmup):
            line = f"{i}".encode()
            started = time.perf_counter()
            await relay.stdin.send(line + b"\n")
            with anyio.fail_after(10):
                got = await out.receive_until(b"\n", 64)
            samples.append((time.perf_counter() - started) * 1000)
            assert got == line, (got, line)
        return samples[warmup:]
    finally:
        with anyio.CancelScope(shield=True):
            for process in (relay, sink):
                process.kill()
                await process.aclose()
