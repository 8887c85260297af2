"""Claude Code's session inbox: push into the conversation with no flag and no dialog.

Claude Code (2.1.224 and later) gives every stdio MCP server it starts the address of its
session's inbox, in CLAUDE_CODE_MESSAGING_SOCKET and CLAUDE_CODE_MESSAGING_TOKEN. A line
written there becomes a user turn of that session, interactive or in print mode, whether or
not channels are enabled. The wire: a Unix stream socket, newline-delimited JSON, an auth line
with the token first, then ``{"type": "user", "message": {"role": "user", "content": TEXT}}``.
Claude Code writes nothing back on the socket: whether a post reached a model is read from the
session's transcript instead (bridge.transcript, bridge.mcp.acks).
"""

from __future__ import annotations

import json

import anyio

from bridge.delivery import CONNECT_TIMEOUT, InboxAddress

WRITE_TIMEOUT = 5.0


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
