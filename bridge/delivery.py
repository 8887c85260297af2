"""Which path messages take into the client, decided at start-up (``--delivery``): Claude
Code's session inbox where it offers one that answers, else the channel, or pull. `bridge serve`
(bridge.mcp) chooses with it; `bridge doctor` (bridge.ops) reports with it. How a post is
written into the inbox is bridge/mcp/inbox.py.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.errors import SettingsError

SOCKET_VAR, TOKEN_VAR = "CLAUDE_CODE_MESSAGING_SOCKET", "CLAUDE_CODE_MESSAGING_TOKEN"
CONNECT_TIMEOUT = 2.0


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


def choose(requested: str, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The delivery path for ``--delivery`` (auto, inbox, channel, pull; push means auto),
    and why. Raises SettingsError when the inbox was asked for and is not there."""
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
