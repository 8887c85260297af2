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

from bridge import codex
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


def choose(requested: str, env: Mapping[str, str] | None = None,
           codex_bin: str = "") -> tuple[str, str]:
    """The delivery path for ``--delivery`` (auto, inbox, channel, codex, pull; push means
    auto), and why. Raises SettingsError when the inbox or Codex was asked for and cannot work.
    (A Codex client is recognised at ``initialize``: auto then becomes codex, bridge.mcp.)"""
    if requested in ("pull", "channel"):
        return requested, f"--delivery {requested}"
    if requested == "codex":
        if codex.find_binary(env, codex_bin) is None:
            raise SettingsError(
                f"--delivery codex / BRIDGE_DELIVERY=codex, but there is no codex to queue "
                f"messages with: none on PATH, none under {codex.home(env)}/"
                f"{'/'.join(codex.DAEMON_BINARY)}{f', not {codex_bin}' if codex_bin else ''}. "
                f"Set BRIDGE_CODEX_BIN to the codex binary, or use --delivery auto")
        return "codex", "--delivery codex"
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
