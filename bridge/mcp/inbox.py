"""Claude Code's session inbox: push into the conversation with no flag and no dialog.

Claude Code (2.1.224 and later) gives every stdio MCP server it starts the address of its
session's inbox, in CLAUDE_CODE_MESSAGING_SOCKET and CLAUDE_CODE_MESSAGING_TOKEN. A line
written there becomes a user turn of that session, interactive or in print mode, whether or
not channels are enabled. The wire: a Unix stream socket, newline-delimited JSON, an auth line
with the token first, then ``{"type": "user", "message": {"role": "user", "content": TEXT}}``.
Claude Code writes nothing back, so a post that was written whole is all we can know.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import anyio

SOCKET_VAR, TOKEN_VAR = "CLAUDE_CODE_MESSAGING_SOCKET", "CLAUDE_CODE_MESSAGING_TOKEN"
CONNECT_TIMEOUT = 2.0
WRITE_TIMEOUT = 5.0


@dataclass(frozen=True)
class InboxAddress:
    path: str
    token: str = ""


def offered(env: Mapping[str, str] | None = None) -> InboxAddress | None:
    """The session inbox Claude Code offers us, if it offers one."""
    env = os.environ if env is None else env
    path = env.get(SOCKET_VAR, "")
    return InboxAddress(path, env.get(TOKEN_VAR, "")) if path else None


def probe(address: InboxAddress) -> str | None:
    """None if the socket accepts a connection, else why not (blocking; at start-up)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(address.path)
        except OSError as e:
            return f"{address.path}: {e.strerror or e}"
    return None


def frame(content: str) -> bytes:
    """One user turn, as Claude Code's inbox reads it."""
    return json.dumps({"type": "user", "message": {"role": "user", "content": content}},
                      ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n"


class InboxPoster:
    """Writes posts into the session inbox: a connection per post (Claude Code closes one that
    is quiet for 30 s), the auth line, the post, and a clean close."""

    def __init__(self, address: InboxAddress) -> None:
        self.address = address
        auth = {"type": "auth", "token": address.token} if address.token else None
        self._auth = (json.dumps(auth).encode() + b"\n") if auth else b""

    async def post(self, content: str) -> None:
        """Raises OSError (or TimeoutError) if the post was not written whole."""
        with anyio.fail_after(CONNECT_TIMEOUT + WRITE_TIMEOUT):
            stream = await anyio.connect_unix(self.address.path)
            async with stream:
                await stream.send(self._auth + frame(content))


def choose(requested: str, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The delivery path for ``--delivery`` (auto, inbox, channel, pull; push means auto),
    and why. Raises SettingsError when the inbox was asked for and is not there."""
    from bridge.errors import SettingsError

    if requested in ("pull", "channel"):
        return requested, f"--delivery {requested}"
    address = offered(env)
    problem = probe(address) if address else f"{SOCKET_VAR} is not set"
    if problem is None:
        return "inbox", f"Claude Code offers its session inbox ({SOCKET_VAR})"
    if requested == "inbox":
        raise SettingsError(
            f"--delivery inbox / BRIDGE_DELIVERY=inbox, but there is no session inbox to post "
            f"into ({problem}): it needs Claude Code 2.1.224 or later to start bridge serve. "
            f"Use --delivery auto (the inbox where there is one, else the channel)")
    return "channel", (f"no session inbox ({problem}); Claude Code channels need "
                       f"--dangerously-load-development-channels server:NAME")
