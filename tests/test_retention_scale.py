"""The measured case of issue 21, at its own scale and the default bounds: bob's client stops
reading bob's stdout while alice sends up to 30,000 messages of 4 KB. Before retention honoured
readers, the room log's cap trimmed 19,009 of them unread while each send was answered as
delivered. Now: nothing addressed to bob is trimmed unread while he is within
BRIDGE_BACKLOG_MAX (10,000); past it alice is refused, with bob's name; bob's memory stays
bounded; and once his client reads again he has every message alice was told was delivered,
once, in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.mcp_client import ToolError

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SENDS = 30_000
PADDING = "x" * 4096
RSS_BOUND_KB = 256 * 1024  # BRIDGE_READ_AHEAD_BYTES is 4 MiB: far below this


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.mark.timeout(600)
async def test_a_stuck_reader_of_30000_messages_of_4_kb(agents, r):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    bob.pause_reading()
    accepted, refusal, peak = 0, "", 0
    for i in range(SENDS):
        try:
            answer = await alice.tool("send_message", to="bob", text=f"m:{i}\n{PADDING}")
        except ToolError as e:
            refusal = str(e)
            break
        assert "Online, delivered now: bob" in answer
        accepted += 1
        if i % 1000 == 0:
            peak = max(peak, rss_kb(bob.process.pid))
    print(f"\n{accepted} accepted, then refused: {refusal[:160]}; bob's RSS peak {peak} kB")
    assert refusal, f"all {SENDS} sends accepted"
    assert "bob is" in refusal and "BRIDGE_BACKLOG_MAX=10000" in refusal, refusal
    assert 10_000 <= accepted < SENDS
    first = r.xrange("bridge:{main}:log", count=1)[0][1]
    assert first[b"seq"] == b"1"  # nothing bob had not read was trimmed
    assert peak < RSS_BOUND_KB, f"bob's memory grew to {peak} kB"

    bob.resume_reading()
    delivered = await bob.wait_messages(accepted, timeout=300)
    assert [m["content"].split("\n", 1)[0] for m in delivered] == [
        f"m:{i}" for i in range(accepted)]
    assert bob.channel("notice") == []
    assert not [e for e in bob.log_events() if e.get("event") == "messages_expired"]
