"""The send path's pure parts: checking a message, building the send script's arguments, and
the errors for what the script refuses (retrying through an outage is bridge.room.batcher's)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from bridge.errors import MessageRejected
from bridge.room.envelope import BROADCAST, Envelope, parse_id
from bridge.room.keys import NAME_PATTERN, Keys
from bridge.settings import Settings


@dataclass(frozen=True)
class SendResult:
    id: str
    online: list[str]
    offline: list[str]


def send_arguments(settings: Settings, envelope: Envelope) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of scripts.SEND for this envelope."""
    keys = Keys(settings.room)
    names = [] if envelope.is_broadcast else list(envelope.to)
    script_keys = [keys.log, keys.agents, keys.seq, keys.sent(envelope.sender, uuid.uuid4().hex),
                   keys.rate(envelope.sender)]
    max_age = settings.log_max_age
    fields = envelope.log_fields()
    sig = fields.pop("sig")
    args: list[Any] = [
        settings.log_maxlen, *fields.values(), envelope.payload_tail(),
        keys.broadcast if envelope.is_broadcast else "",
        int(max_age * 1000) if max_age else "", int(settings.send_timeout * 3000),
        sig, repr(settings.rate), settings.burst,
        int(settings.replay_window * 1000) if sig else "",
    ]
    for name in names:
        script_keys += [keys.agent(name), keys.cursor(name)]
        args += [name, keys.direct(name)]
    return script_keys, args


def check_message(settings: Settings, to: str | list[str], text: str,
                  reply_to: str) -> tuple[str, ...]:
    """The recipients, de-duplicated; or MessageRejected with what to do instead."""
    if not isinstance(text, str) or not text.strip():
        raise MessageRejected("the message text is empty; write something to send")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:  # a lone surrogate ("\ud800") survives JSON, not UTF-8
        raise MessageRejected(
            f"the message text is not valid Unicode (a lone surrogate at character "
            f"{e.start}); send plain UTF-8 text"
        ) from e
    if size > settings.max_bytes:
        raise MessageRejected(
            f"the message is {size} bytes, over the limit of {settings.max_bytes} "
            f"(--max-bytes / BRIDGE_MAX_BYTES). Send it in parts, or write it to a file "
            f"you both can read and send the path."
        )
    if reply_to:
        try:
            parse_id(reply_to)
        except ValueError as e:
            raise MessageRejected(
                f"reply_to {reply_to!r:.40} is not a message id; use the message_id of "
                f"the message you answer (like 1732400000000-0), or leave it out"
            ) from e
    names = [to] if isinstance(to, str) else list(to)
    if names == [BROADCAST]:
        return (BROADCAST,)
    if not names:
        raise MessageRejected("no recipient given; use a name, a list of names, or '*'")
    if len(names) > settings.max_recipients:
        raise MessageRejected(
            f"{len(names)} recipients is over the limit of {settings.max_recipients} "
            f"(BRIDGE_MAX_RECIPIENTS); use '*' to reach everyone in the room, or send it "
            f"in several messages"
        )
    bad = [n for n in names if not isinstance(n, str) or not NAME_PATTERN.match(n)]
    if bad:
        raise MessageRejected(
            f"not a valid agent name: {bad[0]!r:.40}. Names are 1-32 of a-z 0-9 _ . - "
            f"(use '*' alone for everyone)"
        )
    if settings.name in names:
        raise MessageRejected(f"you are {settings.name}; send to another agent, not yourself")
    return tuple(dict.fromkeys(names))


def future_log(settings: Settings, entry_id: bytes) -> MessageRejected:
    """The error for a send refused because the log's ids run ahead of Redis' clock."""
    return MessageRejected(
        f"the message was NOT sent: room {settings.room!r}'s log would have given it the id "
        f"{entry_id.decode()}, dated in the future, so every receiver would drop it as a "
        f"replay. Someone added an entry with a future id to the log by hand. An operator "
        f"must reset the room's log (README, Security: 'A log dated in the future')."
    )


def rate_limited(settings: Settings, retry_ms: bytes) -> MessageRejected:
    """The error for a send the rate limit refused (nothing was logged)."""
    retry = max(int(retry_ms), 1) / 1000
    return MessageRejected(
        f"rate limit: {settings.name} may send {settings.rate:g} messages per second, in "
        f"bursts of up to {settings.burst} (BRIDGE_RATE / BRIDGE_BURST). This message was "
        f"NOT sent; send it again in {retry:.3g} s or later."
    )
