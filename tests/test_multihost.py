"""Three hosts made of Linux network namespaces: Redis on one, an agent on each of the others.

They find each other and talk across the hosts, and hostc is cut off for 10 s while messages
flow (its cable pulled, or its interface down): presence shows it gone and back, and it
catches up with nothing lost or repeated. Needs root, iproute2 and util-linux (CI has them);
skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import REDIS_SERVER, Agents, agent_pool
from tests.support.mcp_client import Agent
from tests.support.netns import Network, skip_reason, wait_gone

SKIP = skip_reason()
pytestmark = [pytest.mark.anyio, pytest.mark.slow,
              pytest.mark.skipif(SKIP is not None, reason=str(SKIP))]

PASSWORD = "multi-host-test-secret"
TTL = 4  # seconds: presence must show hostc gone well within the 10 s cut
CUT_SECONDS = 10
FLOW_PAUSE = 0.1  # pacing of bob's stream, not synchronisation


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[Network, str]]:
    """Hosts `redis`, `hostb` and `hostc` on one switch, redis-server (with a password, as on
    a real network) running on `redis`. Everything is torn down even when the test fails."""
    with Network() as net:
        address = net.add_host("redis")
        net.add_host("hostb")
        net.add_host("hostc")
        data = tmp_path / "redis"
        data.mkdir()
        with open(tmp_path / "redis-server.log", "wb") as log:
            server = subprocess.Popen(
                [*net.exec_prefix("redis"), REDIS_SERVER, "--port", "6379", "--bind", address,
                 "--requirepass", PASSWORD, "--save", "", "--appendonly", "yes",
                 "--appendfsync", "everysec", "--dir", str(data)],
                stdout=log, stderr=subprocess.STDOUT,
            )
            try:
                url = f"redis://:{PASSWORD}@{address}:6379/0"
                net.wait_for_redis("hostb", url)  # also proves hostb reaches the redis host
                yield net, url
            finally:
                wait_gone(server)


@pytest.fixture
async def hosts(network: tuple[Network, str], tmp_path: Path
                ) -> AsyncIterator[tuple[Network, Agents]]:
    net, url = network
    async with agent_pool(url, tmp_path) as pool:
        yield net, pool


@dataclass
class Sent:
    text: str
    to: str
    started: float  # monotonic
    finished: float
    result: str


def presence(agent: Agent, name: str) -> list[dict[str, Any]]:
    """Joined and left events about ``name`` that ``agent`` was given, in order."""
    return [m for m in agent.channel(None)
            if m["meta"]["kind"] in ("joined", "left") and m["meta"]["from"] == name]


def texts_from(agent: Agent, sender: str) -> list[str]:
    return [m["content"] for m in agent.channel() if m["meta"]["from"] == sender]


def line_of(listing: str, name: str) -> str:
    lines = [line for line in listing.splitlines() if line.startswith(f"- {name}")]
    assert lines, f"{name} not listed:\n{listing}"
    return lines[0]


@pytest.mark.parametrize("where", ["cable", "interface"])
async def test_agents_on_two_hosts_talk_and_ride_out_a_cut_link(hosts, where):
    net, pool = hosts
    bob = await pool.start("bob", "--ttl", str(TTL), prefix=net.exec_prefix("hostb"))
    # a send during the cut retries past it (the cut plus the time to notice and reconnect)
    carol = await pool.start("carol", "--ttl", str(TTL), prefix=net.exec_prefix("hostc"),
                             env={"BRIDGE_SEND_TIMEOUT": "60"})

    # ---- they see each other across hosts
    await bob.wait_for(lambda: presence(bob, "carol"), what="carol's joined event")
    assert "carol joined the room from host hostc" in presence(bob, "carol")[0]["content"]
    on_b = await bob.tool("list_participants")
    assert "host hostc" in line_of(on_b, "carol") and "host hostb" in line_of(on_b, "bob (you)")
    on_c = await carol.tool("list_participants")
    assert "host hostb" in line_of(on_c, "bob") and "host hostc" in line_of(on_c, "carol (you)")

    # ---- direct and broadcast messages, both ways
    to_carol = ["hello carol, from hostb", "hello all, from hostb"]
    await bob.tool("send_message", to="carol", text=to_carol[0])
    await bob.tool("send_message", to="*", text=to_carol[1])
    from_carol = ["hello bob, from hostc", "hello all, from hostc"]
    await carol.tool("send_message", to="bob", text=from_carol[0])
    await carol.tool("send_message", to="*", text=from_carol[1])
    await carol.wait_for(lambda: len(texts_from(carol, "bob")) >= 2, what="bob's two messages")
    await bob.wait_for(lambda: len(texts_from(bob, "carol")) >= 2, what="carol's two messages")
    assert texts_from(carol, "bob") == to_carol and texts_from(bob, "carol") == from_carol
    assert [m["meta"]["to"] for m in carol.channel()] == ["carol", "*"]
    assert [m["meta"]["to"] for m in bob.channel()] == ["bob", "*"]

    # ---- hostc is cut off for 10 s while bob keeps sending
    flow: list[Sent] = []
    stop = anyio.Event()
    cut_send: list[str] = []

    async def keep_sending() -> None:
        i = 0
        while not stop.is_set():
            for to, kind in (("carol", "direct"), ("*", "all")):
                text, started = f"b:{kind}:{i}", time.monotonic()
                result = await bob.tool("send_message", timeout=30, to=to, text=text)
                flow.append(Sent(text, to, started, time.monotonic(), result))
            i += 1
            await anyio.sleep(FLOW_PAUSE)

    async def carol_sends_during_the_cut() -> None:
        cut_send.append(await carol.tool("send_message", timeout=90, to="bob",
                                         text="sent by carol while cut off"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(keep_sending)
        await bob.wait_for(lambda: len(flow) >= 6, what="bob's stream under way")
        net.cut("hostc", where)
        cut_at = time.monotonic()
        tg.start_soon(carol_sends_during_the_cut)

        # presence: carol's record expires and bob is told she timed out
        await bob.wait_for(lambda: len(presence(bob, "carol")) >= 2, timeout=30,
                           what="carol's left event")
        gone_at = time.monotonic()
        left = presence(bob, "carol")[1]
        assert left["meta"]["kind"] == "left" and "timed out" in left["content"], left
        assert "- carol" not in await bob.tool("list_participants")
        # a direct message to her now waits in the log for her return
        await bob.wait_for(lambda: any(s.to == "carol" and s.started > gone_at for s in flow),
                           what="a direct message sent while carol is gone")
        await anyio.sleep(max(0.0, cut_at + CUT_SECONDS - time.monotonic()))  # the cut's length
        restored_at = time.monotonic()
        net.restore("hostc", where)

        # presence: carol comes back by herself, and bob is told
        await bob.wait_for(lambda: len(presence(bob, "carol")) >= 3, timeout=45,
                           what="carol's joined event after the cut")
        assert "host hostc" in line_of(await bob.tool("list_participants"), "carol")
        on_c = await carol.tool("list_participants", timeout=30)
        assert "host hostb" in line_of(on_c, "bob") and "- carol (you)" in on_c
        back_at = time.monotonic()
        await carol.wait_for(lambda: cut_send, timeout=90, what="carol's send during the cut")
        # and live delivery resumes: carol gets what bob sends after her return
        await carol.wait_for(
            lambda: {s.text for s in flow if s.started > back_at} & set(texts_from(carol, "bob")),
            timeout=30, what="a message sent after carol's return")
        stop.set()

    # ---- nothing lost, nothing twice, in order
    await bob.tool("send_message", to="carol", text="b:last")
    await carol.tool("send_message", to="*", text="c:after the cut")
    expected = to_carol + [s.text for s in flow] + ["b:last"]
    await carol.wait_for(lambda: "b:last" in texts_from(carol, "bob"), timeout=30,
                         what="bob's last message")
    got = texts_from(carol, "bob")
    assert len(got) == len(set(got)), f"repeated: {sorted({t for t in got if got.count(t) > 1})}"
    lost = [text for text in expected if text not in got]
    assert got == expected, f"{len(lost)} lost, first {lost[:5]}; received {len(got)}"
    ids = [m["meta"]["message_id"] for m in carol.channel() if m["meta"]["from"] == "bob"]
    orders = [tuple(map(int, i.split("-"))) for i in ids]
    assert orders == sorted(set(orders)), "message ids out of order or repeated"

    await bob.wait_for(lambda: "c:after the cut" in texts_from(bob, "carol"), timeout=30,
                       what="carol's message after the cut")
    assert texts_from(bob, "carol") == [*from_carol, "sent by carol while cut off",
                                        "c:after the cut"]
    assert "sent, message_id" in cut_send[0]

    # presence went joined -> left (timed out) -> joined, with no flapping
    assert [m["meta"]["kind"] for m in presence(bob, "carol")] == ["joined", "left", "joined"]
    # while she was gone, direct messages to her were queued (her return follows the restore)
    while_gone = [s for s in flow if s.to == "carol" and gone_at < s.started
                  and s.finished < restored_at]
    assert while_gone and all("queued until they return: carol" in s.result
                              for s in while_gone), [s.result for s in while_gone]
    # carol's own server noticed the dead link and came back. No RST or error arrives on an
    # established connection (the packets just vanish): the subscriber's unanswered PING tells
    lost = [e for e in carol.log_events() if e["event"] == "redis_connection_lost"]
    assert lost and "no answer" in lost[0]["error"], lost[:1]
    assert any(e["event"] == "reconnected" for e in carol.log_events())
    assert not [e for e in carol.log_events() + bob.log_events() if e.get("level") == "error"]
