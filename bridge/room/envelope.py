"""The message envelope and presence events: how they look in the log, on the wire, and in checks.

Everything that arrives from Redis is untrusted: anyone with access can PUBLISH onto our
channels. ``decode_*`` accept only well-formed values and raise ``ValueError`` otherwise.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, replace
from typing import Any

from bridge.room.keys import NAME_PATTERN
from bridge.room.untrusted import bounded

# [0-9] and \Z, not \d and $: \d takes any Unicode digit, $ a trailing newline
STREAM_ID = re.compile(r"^([0-9]{1,20})-([0-9]{1,20})\Z")
BROADCAST = "*"
EVENT_KINDS = ("joined", "left", "status", "board")  # board: bridge.room.board_news
MAX_FIELD = 1024  # for short fields: ids, names, roles, statuses
MAX_RECIPIENTS = 1000  # more than any sender may name (BRIDGE_MAX_RECIPIENTS is lower)
# A pub/sub payload is a wake-up: its id is all a receiver needs to read the log, and the send
# script writes it first. Reading just that keeps a huge or deeply nested payload from costing
# a parse (only bridge.room.wakeup parses a whole payload, and bounds it first).
WAKE_ID = re.compile(rb'\A\{\s*"id"\s*:\s*"([0-9]{1,20}-[0-9]{1,20})"')
MAX_TS = 2**53  # ms since the epoch; far beyond any clock, and exact in JSON everywhere
# compact JSON, UTF-8 kept; one encoder made once: json.dumps with these arguments makes a
# new one each call (1.9 -> 1.3 us for a signature's fields)
COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# what bridge writes into a presence record or an event at most; longer is shown cut
MAX_ROLE, MAX_HOST, MAX_STATUS = 64, 128, 200


@functools.lru_cache(maxsize=1024)  # a message's id is compared several times on its way
def parse_id(value: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``, for ordering stream ids."""
    match = STREAM_ID.match(value)
    if not match:
        raise ValueError(f"not a stream id: {value!r}")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class Envelope:
    id: str
    sender: str
    to: tuple[str, ...]  # ("*",) for a broadcast
    text: str
    reply_to: str = ""
    kind: str = "message"
    ts: int = 0  # ms since epoch, from the sender's clock
    seq: int = 0  # position in the room's log (counts every message ever logged); 0 if unknown
    sig: str = ""  # "v1:<nonce>:<hmac>" when the room has a secret (bridge.room.signing)

    @property
    def is_broadcast(self) -> bool:
        return self.to == (BROADCAST,)

    @property
    def order(self) -> tuple[int, int]:
        return parse_id(self.id)

    def addressed_to(self, name: str) -> bool:
        if self.sender == name:
            return False
        return self.is_broadcast or name in self.to

    def to_text(self) -> str:
        return ",".join(self.to)

    def log_fields(self) -> dict[str, str]:
        """The stream fields (no id: Redis assigns it). Plain strings, readable in XRANGE.
        ``sig`` is "" when signing is off; the send script then leaves the field out."""
        return {
            "from": self.sender,
            "to": self.to_text(),
            "text": self.text,
            "reply_to": self.reply_to,
            "kind": self.kind,
            "ts": str(self.ts),
            "sig": self.sig,
        }

    def payload_tail(self) -> str:
        """Compact JSON of everything but the id, without the opening brace.

        The send script only learns the id and seq at XADD time, so it publishes
        ``'{"id":"' .. id .. '","seq":"' .. seq .. '","prev":"' .. prev .. '",' .. tail``;
        this keeps JSON encoding out of Lua. With ``sig`` the payload is the whole entry: a
        receiver with the room secret may deliver it from the wake-up (bridge.room.wakeup).
        """
        body: dict[str, Any] = {
            "from": self.sender,
            "to": BROADCAST if self.is_broadcast else list(self.to),
            "text": self.text,
            "reply_to": self.reply_to,
            "kind": self.kind,
            "ts": self.ts,
        }
        if self.sig:
            body["sig"] = self.sig
        return COMPACT_JSON.encode(body)[1:]


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ValueError(f"{what} is not a valid name: {value!r:.60}")
    return value


def _short(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        raise ValueError(f"{what} must be a string of at most {MAX_FIELD} characters")
    return value


def _recipients(value: Any) -> tuple[str, ...]:
    if value == BROADCAST:
        return (BROADCAST,)
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not value or len(value) > MAX_RECIPIENTS:
        raise ValueError("to must be a name, a list of names, or '*'")
    return tuple(_name(item, "recipient") for item in value)


def _build(id_: Any, fields: dict[str, Any]) -> Envelope:
    reply_to = _short(fields.get("reply_to", ""), "reply_to")
    if reply_to:
        parse_id(reply_to)
    kind = fields.get("kind", "message")
    if kind != "message":
        raise ValueError(f"unknown message kind: {kind!r:.40}")
    text = fields.get("text")
    if not isinstance(text, str):
        raise ValueError("text must be a string")
    ts = fields.get("ts", 0)
    if isinstance(ts, str) and _digits(ts):
        ts = int(ts)
    if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts <= MAX_TS:
        raise ValueError("ts must be an integer number of ms since the epoch")
    id_ = _short(id_, "id")
    parse_id(id_)
    seq = fields.get("seq", 0)
    seq = int(seq) if isinstance(seq, str) and _digits(seq) else 0
    sig = _short(fields.get("sig", ""), "sig")
    return Envelope(
        id=id_,
        sender=_name(fields.get("from"), "sender"),
        to=_recipients(fields.get("to")),
        text=text,
        reply_to=reply_to,
        kind=kind,
        ts=ts,
        seq=seq,
        sig=sig,
    )


def _digits(text: str) -> bool:
    """ASCII digits only, and few enough for int() (str.isdigit also takes '²' and '٣')."""
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


def decode_payload(raw: bytes | str) -> Envelope:
    """A message from pub/sub (compact JSON, id included)."""
    data = _json(raw)
    if not isinstance(data, dict):
        raise ValueError("payload is not a JSON object")
    return _build(data.get("id"), data)


def decode_whole_wake(raw: bytes | str) -> tuple[Envelope, str]:
    """A payload that carries the whole entry: the envelope, and ``prev``, the id of the entry
    before it in the log (bridge.room.wakeup)."""
    data = _json(raw)
    if not isinstance(data, dict):
        raise ValueError("payload is not a JSON object")
    prev = _short(data.get("prev"), "prev")
    parse_id(prev)
    return _build(data.get("id"), data), prev


def wake_id(raw: bytes) -> str:
    """The message id at the start of a pub/sub payload (``{"id":"…",…``)."""
    match = WAKE_ID.match(raw)
    if not match:
        raise ValueError("not a wake-up: the payload does not start with a message id")
    return match.group(1).decode()


def _json(raw: bytes | str) -> Any:
    """json.loads, with every way it can fail on hostile input turned into ValueError."""
    try:
        return json.loads(raw)
    except RecursionError as e:  # "[[[[…" nested deeper than the parser's stack
        raise ValueError("payload is nested too deeply") from e


def decode_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Envelope:
    """A message from the log (XRANGE entry)."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    text_fields = {key.decode(errors="replace"): value.decode(errors="replace")
                   for key, value in fields.items()}
    return _build(entry_id, text_fields)


@dataclass(frozen=True)
class Event:
    kind: str  # joined / left / status / board (name: the actor, status: what it did)
    name: str
    role: str = ""
    host: str = ""
    status: str = ""
    reason: str = ""
    ts: int = 0
    sig: str = ""  # "v1:<nonce>:<hmac>" when the room has a secret (bridge.room.signing)

    def encode(self) -> str:
        body: dict[str, Any] = {
            "kind": self.kind, "name": self.name, "role": self.role, "host": self.host,
            "status": self.status, "reason": self.reason, "ts": self.ts}
        if self.sig:
            body["sig"] = self.sig
        return COMPACT_JSON.encode(body)

    def cleaned(self) -> Event:
        """The event as shown (after its signature was checked): each field one line, no
        control characters, and no longer than bridge itself would write it."""
        return replace(self, role=bounded(self.role, MAX_ROLE), host=bounded(self.host, MAX_HOST),
                       status=bounded(self.status, MAX_STATUS),
                       reason=bounded(self.reason, MAX_ROLE))


@dataclass(frozen=True)
class Notice:
    """Something bridge itself tells the agent, such as a gap in what it could deliver."""

    text: str
    kind: str = "notice"


def decode_event(raw: bytes | str) -> Event:
    data = _json(raw)
    if not isinstance(data, dict):
        raise ValueError("event is not a JSON object")
    kind = data.get("kind")
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind: {kind!r:.40}")
    ts = data.get("ts", 0)
    if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts <= MAX_TS:
        raise ValueError("ts must be an integer number of ms since the epoch")
    return Event(
        kind=kind,
        name=_name(data.get("name"), "name"),
        role=_short(data.get("role", ""), "role"),
        host=_short(data.get("host", ""), "host"),
        status=_short(data.get("status", ""), "status"),
        reason=_short(data.get("reason", ""), "reason"),
        ts=ts,
        sig=_short(data.get("sig", ""), "sig"),
    )
