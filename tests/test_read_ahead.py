"""A client that does not read: the room log is the buffer, not the agent's memory."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.support.mcp_client import Agent

pytestmark = pytest.mark.anyio

COUNT, SIZE = 6000, 4096  # 24 MB of text: far more than read-ahead lets bob hold
READ_AHEAD = 256 * 1024


def peak_rss_kib(agent: Agent) -> int:
    """VmHWM: the most resident memory the process ever had."""
    for line in Path(f"/proc/{agent.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
async def test_a_slow_reader_keeps_its_memory_bounded_and_loses_nothing(agents, r):
    env = {"BRIDGE_READ_AHEAD_BYTES": str(READ_AHEAD), "BRIDGE_LOG_LEVEL": "INFO"}
    alice = await agents.start("alice")
    bob = await agents.start("bob", env=env)
    await alice.tool("send_message", to="bob", text="warm-up")
    await bob.wait_messages(1)
    before = peak_rss_kib(bob)

    bob.pause_reading()  # bob's client stops reading its stdout
    body = "x" * (SIZE - 10)

    async def send(text: str) -> None:
        await alice.tool("send_message", to="bob", text=text)

    sent = 0
    while sent < COUNT:  # in windows of 50 calls in flight
        window = min(50, COUNT - sent)
        async with anyio.create_task_group() as tg:
            for i in range(sent, sent + window):
                tg.start_soon(send, f"{i:08d}:{body}")
        sent += window
    assert r.xlen("bridge:{main}:log") >= COUNT
    # the read-ahead stopped: bob said so on stderr
    with anyio.fail_after(20):
        while not [e for e in bob.log_events() if e.get("event") == "read_ahead_paused"]:
            await anyio.sleep(0.05)

    bob.resume_reading()
    messages = await bob.wait_messages(COUNT + 1, timeout=120)
    numbers = [int(m["content"].split(":")[0]) for m in messages[1:]]
    assert numbers == list(range(COUNT))  # every one, once, in order
    grown_mib = (peak_rss_kib(bob) - before) / 1024
    # all of it held at once would be 24 MB of text (and more as Python objects)
    assert grown_mib < 12, f"bob grew by {grown_mib:.1f} MiB while its client did not read"
