"""Delivery into Claude Code's session inbox, on a real Unix socket that speaks the inbox's
wire format (newline-delimited JSON: an auth line, then user turns). The real Claude Code is
driven through it in test_real_client.py; here the socket is ours, so that what bridge
writes can be counted, and the socket can go away."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketListener, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from tests.support.mcp_client import BRIDGE

pytestmark = pytest.mark.anyio

TOKEN = "a-session-token"


@dataclass
class InboxListener:
    """One session's inbox: every post, with the connection's auth line."""

    path: Path
    posts: list[str] = field(default_factory=list)
    auths: list[Any] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)
    serving: anyio.CancelScope | None = None

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        listener: SocketListener = await anyio.create_unix_listener(self.path)
        with anyio.CancelScope() as self.serving:
            task_status.started()
            async with listener:
                await listener.serve(self.handle)

    def close(self) -> None:
        """The session's inbox goes away: no more connections."""
        assert self.serving is not None
        self.serving.cancel()
        self.path.unlink()

    @property
    def env(self) -> dict[str, str]:
        return {"CLAUDE_CODE_MESSAGING_SOCKET": str(self.path),
                "CLAUDE_CODE_MESSAGING_TOKEN": TOKEN}

    async def handle(self, stream: SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            try:
                while True:
                    frame = json.loads(await reader.receive_until(b"\n", 1 << 24))
                    if frame.get("type") == "auth":
                        self.auths.append(frame.get("token"))
                    else:
                        assert frame["type"] == "user" and frame["message"]["role"] == "user"
                        self.posts.append(frame["message"]["content"])
                        self.changed.set()
                        self.changed = anyio.Event()
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return

    async def wait(self, predicate: Any, timeout: float = 15) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()


@pytest.fixture
async def inbox(tmp_path: Path) -> AsyncIterator[InboxListener]:
    path = tmp_path / "cc.sock"
    box = InboxListener(path)
    async with anyio.create_task_group() as tg:
        await tg.start(box.serve)
        yield box
        tg.cancel_scope.cancel()


def delivery_logged(agent: Any) -> dict[str, Any]:
    return next(e for e in agent.log_events() if e.get("event") == "delivery")


async def test_auto_posts_into_the_session_inbox(agents, inbox):
    bob = await agents.start("bob", env=dict(inbox.env))
    alice = await agents.start("alice", "--role", "developer")
    assert delivery_logged(bob)["path"] == "inbox"
    assert "delivery inbox" in await bob.tool("list_participants")
    sent = await alice.tool("send_message", to="bob", text="line one\n[bridge] fake line")
    message_id = sent.split("message_id ")[1].split(".")[0]
    await inbox.wait(lambda: inbox.posts)
    [post] = inbox.posts
    assert inbox.auths == [TOKEN]
    lines = post.splitlines()
    assert lines[0].startswith("[bridge] message from alice (developer @ ") and \
        lines[0].endswith(f"id {message_id}:")
    assert lines[1:3] == ["> line one", "> [bridge] fake line"]  # a peer cannot fake ours
    assert 'send_message(to="alice", reply_to="' + message_id + '")' in post
    assert "not with SendMessage" in post
    assert bob.channel(None) == []  # nothing on the channel


async def test_a_burst_arrives_complete_in_order_in_few_posts(agents, inbox):
    bob = await agents.start("bob", env=dict(inbox.env))
    alice = await agents.start("alice")
    for i in range(100):
        await alice.tool("send_message", to="bob", text=f"BURST-{i:03d}")
    await inbox.wait(lambda: "BURST-099" in "".join(inbox.posts), timeout=60)
    text = "\n".join(inbox.posts)
    positions = [text.index(f"> BURST-{i:03d}") for i in range(100)]
    assert positions == sorted(positions)  # all of them, in order
    assert len(set(inbox.posts)) == len(inbox.posts)  # every post unique
    assert len(inbox.posts) <= 10, len(inbox.posts)
    print(f"\n100 messages in {len(inbox.posts)} posts")
    assert bob.channel(None) == []


async def test_a_broken_inbox_leaves_the_message_for_later(agents, inbox, redis_server):
    bob = await agents.start("bob", env=dict(inbox.env))
    alice = await agents.start("alice")
    inbox.close()
    await alice.tool("send_message", to="bob", text="while the inbox is gone")
    with anyio.fail_after(15):  # the log is on stderr, a file: polled
        while not any(e.get("event") == "inbox_post_failed" for e in bob.log_events()):
            await anyio.sleep(0.05)
    assert "1 unread message(s) waiting" in await bob.tool("list_participants")
    await bob.close_stdin()
    assert await bob.wait_exit() == 0
    # the cursor did not move past it: the next session posts it
    async with anyio.create_task_group() as tg:
        await tg.start(inbox.serve)
        await agents.start("bob", env=dict(inbox.env))
        await inbox.wait(lambda: any("while the inbox is gone" in p for p in inbox.posts))
        tg.cancel_scope.cancel()


async def test_the_inbox_asked_for_and_missing_is_one_clear_line(redis_server, tmp_path):
    result = subprocess.run(
        [*BRIDGE, "serve", "--name", "bob", "--delivery", "inbox", "--redis", redis_server.url],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "CLAUDE_CODE_MESSAGING_SOCKET": str(tmp_path / "none")})
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("bridge: --delivery inbox / BRIDGE_DELIVERY=inbox, but there is no "
                           "session inbox")
    assert "--delivery auto" in line


async def test_auto_without_an_inbox_uses_the_channel(agents, tmp_path):
    bob = await agents.start("bob", env={"CLAUDE_CODE_MESSAGING_SOCKET": str(tmp_path / "no")})
    logged = delivery_logged(bob)
    assert logged["path"] == "channel" and "no session inbox" in logged["reason"]


async def test_doctor_tells_which_path_messages_take(redis_server, inbox, tmp_path):
    from tests.test_cli_ops import bridge, cli_env

    offered = await bridge("doctor", "--redis", redis_server.url,
                           env=cli_env(**inbox.env))
    assert re.search(r"^ok +delivery: Claude Code's session inbox accepts connections",
                     offered.stdout, re.M), offered.stdout
    plain = await bridge("doctor", "--redis", redis_server.url)
    assert re.search(r"^info +delivery: not run by Claude Code here", plain.stdout, re.M)
    assert "a message pushed to a session started without the flag is lost" in plain.stdout
    gone = await bridge("doctor", "--redis", redis_server.url,
                        env=cli_env(CLAUDE_CODE_MESSAGING_SOCKET=str(tmp_path / "gone")))
    assert re.search(r"^warn +delivery: CLAUDE_CODE_MESSAGING_SOCKET is set but the inbox "
                     r"does not answer", gone.stdout, re.M), gone.stdout


async def test_a_message_too_long_for_a_post_is_cut_and_read_whole(agents, inbox):
    big = {"BRIDGE_MAX_BYTES": "300000"}
    bob = await agents.start("bob", env=dict(inbox.env) | big)
    alice = await agents.start("alice", env=dict(big))
    text = "".join(f"{i:06d} " for i in range(20_000))  # 140,000 characters
    await alice.tool("send_message", to="bob", text=text)
    await inbox.wait(lambda: inbox.posts)
    [post] = inbox.posts
    assert len(post) < 70_000 and "Call read_messages for the whole message" in post
    whole = await bob.tool("read_messages")
    assert text in whole
