"""Sending from the page, as an operator: checked as `bridge send --as` checks its flags, then
sent as it sends (a quiet join with pull delivery, no joined or left around the message)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from redis.exceptions import NoPermissionError

from bridge.errors import BridgeError, NameTaken, RedisRefused
from bridge.ops.web.feed import valid_text
from bridge.ops.web.security import Refused
from bridge.room.envelope import BROADCAST, parse_id
from bridge.room.keys import NAME_PATTERN
from bridge.settings import Settings

MAX_ID_PART = 2**64 - 1  # Redis refuses a stream id part past this


def is_id(value: str) -> bool:
    """A log id Redis accepts as an exclusive bound: each part in 64 bits, and not the
    largest id of all (found by review: such an id made the stream retry a refused XRANGE
    every second, and deliver nothing)."""
    try:
        ms, seq = parse_id(value)
    except ValueError:
        return False
    return ms <= MAX_ID_PART and seq <= MAX_ID_PART and (ms, seq) != (MAX_ID_PART, MAX_ID_PART)


async def send_as(settings: Settings, room: str, data: Any) -> dict[str, Any]:
    """``data``: the page's JSON ``{name, to, text, reply_to}``. Returns ``{sent, online,
    offline}``; a bad field or a refusal raises Refused with what to do."""
    if not isinstance(data, dict):
        raise Refused(400, "send a JSON object {name, to, text, reply_to}")
    name, to, text, reply_to = (str(data.get(k, "")) for k in ("name", "to", "text",
                                                               "reply_to"))
    if not NAME_PATTERN.match(name):
        raise Refused(400, "name: use 1-32 of a-z 0-9 _ . - starting with a letter or digit")
    to = to.strip()
    recipients = [part.strip() for part in to.split(",") if part.strip()]
    if to != BROADCAST and (not recipients or not all(NAME_PATTERN.match(r)
                                                      for r in recipients)):
        raise Refused(400, "to: a name, names separated by commas, or *")
    if not valid_text(text):
        raise Refused(400, "text: write something to send")
    if reply_to and not is_id(reply_to):
        raise Refused(400, "reply_to: a message id, or empty")
    return await _send(replace(settings, room=room, name=name, role="human", delivery="pull",
                               announce=False), BROADCAST if to == BROADCAST else recipients,
                       text, reply_to)


async def _send(settings: Settings, to: str | list[str], text: str,
                reply_to: str) -> dict[str, Any]:
    from bridge.room.connection import Room

    try:
        async with Room.connect(settings, warn_unverified=False) as joined:
            result = await joined.send(to, text, reply_to=reply_to)
    except (NoPermissionError, RedisRefused) as e:
        # a read-only user (`bridge acl --read-only`) is refused the function that joins, or
        # its first write: say what to do about it rather than only what Redis said
        raise Refused(403, f"this Redis user may not send ({e}). bridge web sends with the "
                           f"user of its --redis URL: give it one made by `bridge acl --room "
                           f"{settings.room} --agent NAME`, not a read-only one") from None
    except NameTaken as e:
        raise Refused(409, str(e)) from None
    except BridgeError as e:  # an unknown recipient, a text too large, ...
        raise Refused(400, str(e)) from None
    return {"sent": result.id, "online": result.online, "offline": result.queued,
            "not_queued": sorted([*result.not_held, *result.behind])}
