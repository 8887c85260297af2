"""Push into the real Codex CLI (pinned in tests/codex_cli.py), interactive in tmux, against
the tests' fake Responses API (tests/fake_openai.py), in a private network namespace that also
holds the room's redis-server: `bridge serve` recognises Codex, learns its thread from the
model's first bridge tool call, and wakes the idle session with `codex queue`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.codex_cli import NPM_INSTALL_TIMEOUT, ensure_codex
from tests.codex_driver import Codex, NetNs, turn_metadata, user_texts
from tests.conftest import agent_pool, free_port
from tests.mcp_client import BRIDGE

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture(scope="session")
def codex_bin() -> Path:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed; the tests drive the real Codex in tmux")
    return ensure_codex()


class Room:
    """A redis-server inside a private network namespace, for Codex and the bridge agents."""

    def __init__(self, tmp: Path) -> None:
        self.ns = NetNs()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis = subprocess.Popen(
            [*self.ns.prefix, shutil.which("redis-server") or "redis-server", "--port",
             str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run([*self.ns.prefix, "redis-cli", "-p", str(self.port), "ping"],
                             capture_output=True, text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def present(self, name: str) -> bool:
        """The agent is in the room (its bridge serve answered Codex's initialize)."""
        return subprocess.run(
            [*self.ns.prefix, "redis-cli", "-p", str(self.port), "exists",
             f"bridge:{{main}}:agent:{name}"], capture_output=True, text=True).stdout.strip() == "1"

    def close(self) -> None:
        self.redis.kill()
        self.redis.wait()
        self.ns.close()


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    made = Room(tmp_path)
    yield made
    made.close()


def bridge_server(name: str, room: Room, **env: str) -> dict[str, Any]:
    return {"command": BRIDGE[0], "args": ["serve", "--name", name],
            "env": {"BRIDGE_REDIS_URL": room.url, "BRIDGE_LOG_LEVEL": "DEBUG", **env}}


def call(name: str, **arguments: Any) -> list[dict[str, Any]]:
    return [{"type": "function_call", "namespace": "mcp__bridge", "name": name,
             "arguments": arguments}]


async def in_thread(function: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(function, *args)


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 300)
async def test_an_idle_codex_wakes_on_a_message_and_answers_it(
        codex_bin: Path, room: Room, tmp_path: Path) -> None:
    turns = {"default_reply": "done", "rules": [
        {"id": "start", "when": {"last_user_contains": "start"},
         "reply": call("list_participants")},
        {"id": "answer", "when": {"last_user_contains": "PING-TO-CODEX"},
         "reply": call("send_message", to="alice", text="PONG-FROM-CODEX")}]}
    async with agent_pool(room.url, tmp_path) as agents:
        alice = await agents.start("alice", "--delivery", "pull", prefix=room.ns.prefix)
        with Codex(str(codex_bin), str(tmp_path), name="dave", turns=turns, netns=room.ns,
                   mcp_servers={"bridge": bridge_server("dave", room)}) as cx:
            cx.launch()
            await in_thread(lambda: cx.wait_ready(90, ready=lambda _: room.present("dave")))
            cx.type("start")
            await in_thread(cx.wait_idle, 60)  # the model called list_participants: bridge
            # now knows the thread
            woken_from = cx.last_seq()
            await alice.tool("send_message", to="dave", text="PING-TO-CODEX")
            request = await in_thread(cx.wait_request, "PING-TO-CODEX", 30)
            assert request["seq"] > woken_from
            assert turn_metadata(request)["turn_trigger"] == "queue"  # no keystroke
            [text] = [t for t in user_texts(request) if "PING-TO-CODEX" in t]
            assert text.startswith("(Sent to you through bridge by a peer agent, not by your "
                                   "user.)\n[bridge] message from alice"), text
            assert 'send_message(to="alice", reply_to="' in text
            answers = ""
            with anyio.fail_after(30):  # (events, such as dave joining, may come first)
                while "PONG-FROM-CODEX" not in answers:
                    answers += await alice.tool("read_messages", wait_seconds=10)
