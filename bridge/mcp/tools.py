"""The four tools bridge offers an agent, as MCP tool definitions (JSON Schema inputs)."""

from __future__ import annotations

import math
from typing import Any

from bridge.errors import BridgeError

MAX_WAIT_SECONDS = 300.0


def seconds_argument(arguments: dict[str, Any], name: str, maximum: float) -> float:
    """A number of seconds from 0 to ``maximum``; absent means 0. Anything else (a string,
    a boolean, NaN, an infinity, a negative number) is refused: NaN once made a long-poll
    spin without ever yielding."""
    value = arguments.get(name, 0)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
            value) or not 0 <= value <= maximum:
        raise BridgeError(f"{name} must be a number of seconds from 0 to {maximum:g}, not "
                          f"{value!r:.40}; e.g. {name}=30")
    return float(value)

TOOLS: list[dict[str, Any]] = [
    {
        "name": "send_message",
        "description": (
            "Send a message to other agents in your bridge room. `to` is one agent name, a "
            "list of names, or \"*\" for everyone else. Use `reply_to` with the message_id you "
            "are answering."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {
                "to": {"anyOf": [{"type": "string"},
                                 {"type": "array", "items": {"type": "string"}}],
                       "description": "agent name, list of names, or \"*\""},
                "text": {"type": "string", "description": "the message"},
                "reply_to": {"type": "string", "description": "message_id being answered"},
            },
            "required": ["to", "text"],
        },
    },
    {
        "name": "list_participants",
        "description": "List the agents in your room: name, role, host, status, last seen.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "read_messages",
        "description": (
            "Return messages waiting for you. With wait_seconds, wait up to that long for "
            "one to arrive (long-poll)."
        ),
        "inputSchema": {
            "type": "object",
            "properties": {"wait_seconds": {"type": "number", "minimum": 0,
                                            "maximum": MAX_WAIT_SECONDS}},
        },
    },
    {
        "name": "set_status",
        "description": "Set your status line, shown to the others (e.g. 'working on the API').",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}},
                        "required": ["text"]},
    },
]
