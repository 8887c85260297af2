"""Acknowledged by evidence on the session inbox path: bob's cursor passes a posted message
only once the session's transcript shows it taken into a model request.

The session here is the test's: a real Unix socket speaking the inbox's wire format
(tests/test_inbox.py) and a session record and transcript written as Claude Code 2.1.328 and
2.1.337 write them (measured: bridge/transcript.py). The real Claude Code, killed while its
model is busy, is tests/test_inbox_crash.py.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.test_inbox import InboxListener

pytestmark = pytest.mark.anyio

WRAPPER = "Another Claude session sent a message:\n{}\n\nThis came from another Claude session"


@dataclass
class Session:
    """A Claude Code session as bridge sees it: the inbox, the session record of the process
    that started bridge (this test's, bridge's parent), and the transcript."""

    inbox: InboxListener
    config: Path
    session_id: str = ""

    def __post_init__(self) -> None:
        self.new_session()

    def new_session(self) -> None:
        """A new session of the same Claude Code (a restart, or /clear)."""
        self.session_id = str(uuid.uuid4())
        (self.config / "sessions").mkdir(parents=True, exist_ok=True)
        (self.config / "sessions" / f"{os.getpid()}.json").write_text(json.dumps({
            "pid": os.getpid(), "sessionId": self.session_id, "status": "busy",
            "statusUpdatedAt": 0}))

    @property
    def transcript(self) -> Path:
        path = self.config / "projects" / "-work" / f"{self.session_id}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def env(self) -> dict[str, str]:
        return {**self.inbox.env, "CLAUDE_CONFIG_DIR": str(self.config)}

    def write(self, line: dict[str, Any]) -> None:
        with self.transcript.open("a") as f:
            f.write(json.dumps(line, separators=(",", ":")) + "\n")

    def enqueue(self, post: str) -> None:
        self.write({"type": "queue-operation", "operation": "enqueue", "content": post,
                    "sessionId": self.session_id})

    def take(self, post: str, pid: int) -> None:
        self.write({"type": "queue-operation", "operation": "dequeue"})
        self.write({"type": "user", "message": {"role": "user",
                                                "content": WRAPPER.format(post)},
                    "origin": {"kind": "peer", "from": "unknown", "verifiedPeerPid": pid},
                    "turnOrigin": "peer", "sessionId": self.session_id})


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[Session]:
    box = InboxListener(tmp_path / "cc.sock")
    async with anyio.create_task_group() as tg:
        await tg.start(box.serve)
        yield Session(box, tmp_path / "claude-config")
        tg.cancel_scope.cancel()


def cursor_of(redis_server: Any, name: str) -> str:
    value = redis_server.client().get(f"bridge:{{main}}:cursor:{name}")
    return value.decode().split(" ")[0] if value else ""


async def logged(agent: Any, event: str, timeout: float = 20) -> dict[str, Any]:
    with anyio.fail_after(timeout):  # the log is on stderr, a file: polled
        while True:
            found = [e for e in agent.log_events() if e.get("event") == event]
            if found:
                return found[0]
            await anyio.sleep(0.05)


async def cursor_at(redis_server: Any, name: str, message_id: str) -> None:
    with anyio.fail_after(15):  # written by bob's process: polled
        while cursor_of(redis_server, name) != message_id:
            await anyio.sleep(0.05)


def sent_id(answer: str) -> str:
    return answer.split("message_id ")[1].split(".")[0]


async def test_the_cursor_waits_for_the_model_and_a_new_session_gets_it_again(
        agents, session, redis_server):
    bob = await agents.start("bob", env=session.env)
    alice = await agents.start("alice")
    assert (await logged(bob, "delivery_evidence"))["evidence"] == \
        "the session transcript"
    first = sent_id(await alice.tool("send_message", to="bob", text="M-QUEUED"))
    await session.inbox.wait(lambda: session.inbox.posts)
    [post] = session.inbox.posts
    session.enqueue(post)  # queued, and then the client dies before its model sees it
    before = cursor_of(redis_server, "bob")
    await bob.close_stdin()
    assert await bob.wait_exit() == 0
    assert cursor_of(redis_server, "bob") == before != first  # not passed: not taken

    session.new_session()  # the next session for bob gets it again
    bob = await agents.start("bob", env=session.env)
    await session.inbox.wait(lambda: len(session.inbox.posts) == 2)
    again = session.inbox.posts[1]
    assert "> M-QUEUED" in again
    session.enqueue(again)
    session.take(again, bob.process.pid)  # now its model has it
    await cursor_at(redis_server, "bob", first)

    await bob.close_stdin()
    assert await bob.wait_exit() == 0
    session.new_session()
    bob = await agents.start("bob", env=session.env)
    second = sent_id(await alice.tool("send_message", to="bob", text="M-NEXT"))
    await session.inbox.wait(lambda: len(session.inbox.posts) == 3)
    assert "M-NEXT" in session.inbox.posts[2] and "M-QUEUED" not in session.inbox.posts[2]
    session.enqueue(session.inbox.posts[2])
    session.take(session.inbox.posts[2], bob.process.pid)
    await cursor_at(redis_server, "bob", second)


async def test_a_line_of_another_process_is_no_evidence(agents, session, redis_server):
    bob = await agents.start("bob", env=session.env)
    alice = await agents.start("alice")
    first = sent_id(await alice.tool("send_message", to="bob", text="M-ONE"))
    await session.inbox.wait(lambda: session.inbox.posts)
    session.enqueue(session.inbox.posts[0])
    session.take(session.inbox.posts[0], bob.process.pid + 100_000)  # not bob's pid
    second = sent_id(await alice.tool("send_message", to="bob", text="M-TWO"))
    await session.inbox.wait(lambda: len(session.inbox.posts) == 2)
    session.enqueue(session.inbox.posts[1])
    session.take(session.inbox.posts[1], bob.process.pid)
    # M-TWO was taken, M-ONE was not: the cursor stays before M-ONE
    with anyio.fail_after(15):
        while not any(e.get("event") == "post_taken" and e.get("last") == second
                      for e in bob.log_events()):
            await anyio.sleep(0.05)
    assert cursor_of(redis_server, "bob") not in (first, second)
    session.take(session.inbox.posts[0], bob.process.pid)
    await cursor_at(redis_server, "bob", second)


@pytest.mark.slow
async def test_a_post_the_client_never_queued_is_posted_again(agents, session, redis_server):
    bob = await agents.start("bob", env=session.env)
    alice = await agents.start("alice")
    await alice.tool("send_message", to="bob", text="M-SEEN")
    await session.inbox.wait(lambda: session.inbox.posts)
    session.enqueue(session.inbox.posts[0])
    session.take(session.inbox.posts[0], bob.process.pid)  # the transcript works here
    dropped = sent_id(await alice.tool("send_message", to="bob", text="M-DROPPED"))
    await session.inbox.wait(lambda: len(session.inbox.posts) == 2)  # and is never queued
    await session.inbox.wait(lambda: len(session.inbox.posts) == 3, timeout=30)
    again = session.inbox.posts[2]
    assert "> M-DROPPED" in again and "(posted again by bridge, attempt 2)" in again
    assert again != session.inbox.posts[1]  # Claude Code drops a repeated body
    assert "not queued" in (await logged(bob, "post_again"))["reason"]
    session.enqueue(again)
    session.take(again, bob.process.pid)
    await cursor_at(redis_server, "bob", dropped)
    # and nothing of the first attempt is left to hold the cursor back
    later = sent_id(await alice.tool("send_message", to="bob", text="M-LATER"))
    await session.inbox.wait(lambda: len(session.inbox.posts) == 4)
    session.enqueue(session.inbox.posts[3])
    session.take(session.inbox.posts[3], bob.process.pid)
    await cursor_at(redis_server, "bob", later)


@pytest.mark.slow
async def test_without_a_transcript_the_cursor_moves_on_write_and_says_so(
        agents, session, redis_server):
    bob = await agents.start("bob", env=session.env)
    alice = await agents.start("alice")
    message = sent_id(await alice.tool("send_message", to="bob", text="M-UNSEEN"))
    await session.inbox.wait(lambda: session.inbox.posts)  # and no transcript line, ever
    gave_up = await logged(bob, "no_delivery_evidence", timeout=30)
    assert "no post of ours has shown in the session transcript" in gave_up["reason"]
    await cursor_at(redis_server, "bob", message)


async def test_no_claude_code_folder_means_no_evidence_from_the_start(
        agents, session, tmp_path):
    bob = await agents.start("bob", env={**session.env,
                                         "CLAUDE_CONFIG_DIR": str(tmp_path / "none")})
    gave_up = await logged(bob, "no_delivery_evidence")
    assert "no Claude Code configuration folder" in gave_up["reason"]


async def test_doctor_says_whether_delivery_can_be_proven(redis_server, session, tmp_path):
    from tests.test_cli_ops import bridge, cli_env

    found = await bridge("doctor", "--redis", redis_server.url, env=cli_env(**session.env))
    assert re.search(r"^ok +delivery evidence: Claude Code's session transcript .*session "
                     + session.session_id, found.stdout, re.M), found.stdout
    missing = await bridge("doctor", "--redis", redis_server.url, env=cli_env(
        **session.env | {"CLAUDE_CONFIG_DIR": str(tmp_path / "none")}))
    assert re.search(r"^warn +delivery evidence: none \(no Claude Code configuration folder",
                     missing.stdout, re.M), missing.stdout
    assert "loses them" in missing.stdout


async def test_the_paths_without_a_witness_say_what_moves_the_cursor(agents):
    pull = await agents.start("bob", "--delivery", "pull")
    assert "next read_messages call" in (await logged(pull, "delivery_evidence"))["evidence"]
    channel = await agents.start("carol", "--delivery", "channel")
    said = (await logged(channel, "delivery_evidence"))["evidence"]
    assert said.startswith("none") and "written to stdout" in said
