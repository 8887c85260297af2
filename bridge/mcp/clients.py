"""Recognising the MCP client at ``initialize``, from its ``clientInfo`` and capabilities: its
label for the presence record, whether it shows channel notifications, and why one that does
not is pulled (bridge.mcp.server picks the path with these)."""

from __future__ import annotations

from typing import Any

from bridge.room.presence_records import MAX_CLIENT

CHANNEL_CAPABILITY = "claude/channel"


def takes_channel(params: dict[str, Any]) -> bool:
    """Whether the client shows channel notifications: Claude Code (which says nothing of
    it in its capabilities), or a client that declares ``experimental["claude/channel"]``."""
    client, capabilities = params.get("clientInfo"), params.get("capabilities")
    experimental = capabilities.get("experimental") if isinstance(capabilities, dict) else None
    return (isinstance(client, dict) and client.get("name") == "claude-code") or (
        isinstance(experimental, dict) and CHANNEL_CAPABILITY in experimental)


def pull_reason(client: Any) -> str:
    """Why a client that is neither Claude Code, Codex nor OpenCode is not pushed to."""
    label = client_label(client) or "a client with no clientInfo"
    if isinstance(client, dict) and client.get("name") == "gemini-cli-mcp-client":
        return (f"the client is Gemini CLI ({label}): no door into its session that bridge "
                f"can open by itself (docs/gemini.md); the agent reads with read_messages")
    return (f"the client is not Claude Code ({label}): it would drop channel notifications; "
            f"the agent reads with read_messages")


def client_label(client: Any) -> str:
    """"NAME VERSION" of initialize's clientInfo, one bounded printable line ("" if none)."""
    if not isinstance(client, dict):
        return ""
    parts = [client.get("name"), client.get("version")]
    text = " ".join(part for part in parts if isinstance(part, str) and part)
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())[:MAX_CLIENT]
