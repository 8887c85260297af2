"""Signed envelopes: an HMAC-SHA256, keyed by the room secret, over a message's canonical fields.

Anyone who can write to Redis can put an entry in the room log that claims any sender. With a
secret (BRIDGE_SECRET / BRIDGE_SECRET_FILE) every envelope carries ``sig`` and receivers drop
what is unsigned, forged, replayed later, or a copy of one already seen.

The MAC covers the room, the sender, the sorted recipients, the text, reply_to, the kind, the
sender's timestamp and a random nonce; not the stream id or seq, which Redis assigns at XADD.

Presence records and joined / left / status events are signed the same way, each over its own
list of fields with its own tag (so no signature of one kind passes as another's).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from redis.asyncio import Redis

from bridge.redis.paging import pages
from bridge.room.cursor import Position
from bridge.room.envelope import COMPACT_JSON, Envelope, Event, decode_entry, parse_id
from bridge.settings import Settings

log = structlog.get_logger("bridge.signing")

VERSION = "v1"
NONCE_HEX = 16
MAC_HEX = 64
# How many signatures are remembered to spot exact copies: a copy must land within the
# window of its signed time, so ~2 windows of traffic suffice; this bounds the memory.
MAX_REMEMBERED = 100_000

# the reasons a received envelope is dropped (logged as envelope_dropped reason=...)
UNSIGNED, BAD_SIGNATURE, REPLAY, DUPLICATE = "unsigned", "bad_signature", "replay", "duplicate"
TOO_LARGE = "too_large"
# the reasons a joined / left / status event is dropped (logged as event_dropped reason=...)
EVENT_UNSIGNED, EVENT_BAD_SIGNATURE = "event_unsigned", "event_bad_signature"
EVENT_REPLAY, EVENT_DUPLICATE = "event_replay", "event_duplicate"
EVENT_REASONS = {UNSIGNED: EVENT_UNSIGNED, BAD_SIGNATURE: EVENT_BAD_SIGNATURE,
                 REPLAY: EVENT_REPLAY, DUPLICATE: EVENT_DUPLICATE}
DROP_HINTS = {
    "malformed": "not a well-formed message: written to Redis by hand, or by another program",
    UNSIGNED: "no signature: sent without the room secret, or written to Redis by hand",
    BAD_SIGNATURE: "the signature does not match: forged or altered, or the sender uses "
                   "another secret (BRIDGE_SECRET must be the same on every agent)",
    REPLAY: "signed time and log time differ by more than BRIDGE_REPLAY_WINDOW: a copy "
            "added again later, or a sender whose clock is off (bridge doctor checks it)",
    DUPLICATE: "an exact copy of a message already delivered",
    TOO_LARGE: "text over our BRIDGE_MAX_BYTES: use the same limit on every agent",
    EVENT_UNSIGNED: "a joined/left/status event without a signature: published by someone "
                    "without the room secret (or by a bridge without BRIDGE_SECRET)",
    EVENT_BAD_SIGNATURE: "a joined/left/status event whose signature does not match: forged "
                         "or altered, or its sender uses another secret",
    EVENT_REPLAY: "a joined/left/status event signed more than BRIDGE_REPLAY_WINDOW away from "
                  "our clock: an old event published again, or a sender whose clock is off",
    EVENT_DUPLICATE: "an exact copy of a joined/left/status event already received",
}
# the fields of a presence record that its holder writes, in signed order (joined_at and
# last_seen are Redis' time, set by the scripts, and not signed)
PRESENCE_FIELDS = ("name", "role", "host", "pid", "session", "delivery", "status", "version",
                   "ttl")
# a writer flooding the log with forgeries must not flood every agent's log file with it too
DROP_LOG_MAX, DROP_LOG_WINDOW = 100, 60.0  # drop lines per reason per window


def canonical(room: str, envelope: Envelope, nonce: str) -> bytes:
    """One byte string per message content: JSON of a fixed list, so no field can bleed into
    the next (a text that contains a separator still encodes differently)."""
    recipients = sorted(envelope.to)
    fields = [VERSION, room, envelope.sender, recipients, envelope.text, envelope.reply_to,
              envelope.kind, envelope.ts, nonce]
    # surrogatepass: a text with a lone surrogate must not crash the check, only fail it
    return COMPACT_JSON.encode(fields).encode(
        "utf-8", "surrogatepass")


def canonical_record(room: str, tag: str, fields: list[Any], nonce: str) -> bytes:
    """Like ``canonical``, for a presence record or an event: its tag first, so that a
    signature made for one kind of record never passes as another's."""
    return COMPACT_JSON.encode([f"{VERSION}/{tag}", room, *fields, nonce]).encode(
        "utf-8", "surrogatepass")


def event_fields(event: Event) -> list[Any]:
    return [event.kind, event.name, event.role, event.host, event.status, event.reason,
            event.ts]


def _parts(sig: str) -> tuple[str, str] | None:
    """(nonce, mac) of a well-formed ``v1:<nonce>:<mac>``, else None."""
    version, _, rest = sig.partition(":")
    nonce, _, mac = rest.partition(":")
    if version != VERSION or len(nonce) != NONCE_HEX or len(mac) != MAC_HEX:
        return None
    return nonce, mac


@dataclass
class Signer:
    """Signs outgoing envelopes and checks incoming ones for one room."""

    secret: bytes = field(repr=False)
    room: str
    window_ms: int
    _seen: OrderedDict[str, int] = field(default_factory=OrderedDict, repr=False)
    _seen_events: OrderedDict[str, int] = field(default_factory=OrderedDict, repr=False)

    def mac(self, envelope: Envelope, nonce: str) -> str:
        return hmac.new(self.secret, canonical(self.room, envelope, nonce),
                        hashlib.sha256).hexdigest()

    def sign(self, envelope: Envelope) -> Envelope:
        nonce = secrets.token_hex(NONCE_HEX // 2)
        return replace(envelope, sig=f"{VERSION}:{nonce}:{self.mac(envelope, nonce)}")

    def problem(self, envelope: Envelope) -> str | None:
        """Why this envelope read from the log must not be delivered, or None if it is good.

        The replay check compares the signed time with the log entry's id (Redis' clock at
        XADD): a copy re-added later gets a new id, far from its signed time, while an old
        entry read back at catch-up keeps its original id and passes.
        """
        reason = self.authentic(envelope)
        if reason:
            return reason
        entry_ms = parse_id(envelope.id)[0]
        if abs(entry_ms - envelope.ts) > self.window_ms:
            return REPLAY
        if envelope.sig in self._seen:
            return DUPLICATE
        self.remember(envelope)
        return None

    def authentic(self, envelope: Envelope) -> str | None:
        """UNSIGNED or BAD_SIGNATURE, or None when the MAC is right (no replay check)."""
        if not envelope.sig:
            return UNSIGNED
        parts = _parts(envelope.sig)
        if parts is None:
            return BAD_SIGNATURE
        nonce, mac = parts
        if not hmac.compare_digest(mac.encode("ascii", "replace"),
                                   self.mac(envelope, nonce).encode()):
            return BAD_SIGNATURE
        return None

    # ------------------------------------------------------------ records and events
    def record_mac(self, tag: str, fields: list[Any], nonce: str) -> str:
        return hmac.new(self.secret, canonical_record(self.room, tag, fields, nonce),
                        hashlib.sha256).hexdigest()

    def sign_record(self, tag: str, fields: list[Any]) -> str:
        """The ``sig`` of a presence record (tag "presence") or an event (tag "event")."""
        nonce = secrets.token_hex(NONCE_HEX // 2)
        return f"{VERSION}:{nonce}:{self.record_mac(tag, fields, nonce)}"

    def record_problem(self, tag: str, fields: list[Any], sig: str) -> str | None:
        """UNSIGNED or BAD_SIGNATURE, or None when ``sig`` is right for these fields."""
        if not sig:
            return UNSIGNED
        parts = _parts(sig)
        if parts is None:
            return BAD_SIGNATURE
        nonce, mac = parts
        if not hmac.compare_digest(mac.encode("ascii", "replace"),
                                   self.record_mac(tag, fields, nonce).encode()):
            return BAD_SIGNATURE
        return None

    def sign_event(self, event: Event) -> Event:
        return replace(event, sig=self.sign_record("event", event_fields(event)))

    def event_problem(self, event: Event, now_ms: int) -> str | None:
        """Why a joined / left / status event must not be shown as true (None: it is good).

        Events are not logged: the replay check compares the signed time with our own clock,
        and an exact copy within that window is a DUPLICATE."""
        reason = self.record_problem("event", event_fields(event), event.sig)
        if reason:
            return reason
        if abs(now_ms - event.ts) > self.window_ms:
            return REPLAY
        if event.sig in self._seen_events:
            return DUPLICATE
        _remember(self._seen_events, event.sig, event.ts, self.window_ms)
        return None

    def forgets(self) -> bool:
        """Whether the memory of signatures is full, so that an old one may be forgotten
        while a copy of it could still pass the replay check (bridge.room.wakeup)."""
        return len(self._seen) >= MAX_REMEMBERED

    def remember(self, envelope: Envelope) -> None:
        """Note a good envelope's signature, so that an exact copy is caught as a DUPLICATE."""
        _remember(self._seen, envelope.sig, parse_id(envelope.id)[0], self.window_ms)


def _remember(seen: OrderedDict[str, int], sig: str, ms: int, window_ms: int) -> None:
    seen[sig] = ms
    # forget what no copy can match any more (a copy must be within the window of the
    # signed time), and never hold more than MAX_REMEMBERED
    horizon = ms - 2 * window_ms
    while seen and (len(seen) > MAX_REMEMBERED or next(iter(seen.values())) < horizon):
        seen.popitem(last=False)


def make_signer(secret: str, room: str, window_seconds: float) -> Signer | None:
    """The room's signer, or None when no secret is configured (nothing is verified)."""
    if not secret:
        return None
    return Signer(secret.encode("utf-8"), room, int(window_seconds * 1000))


class Gate:
    """What a receiver lets through from the log, beyond being well-formed: the text within
    its own size limit and, with a secret, a good signature that is no replay."""

    def __init__(self, settings: Settings) -> None:
        self.max_bytes = settings.max_bytes
        self.name = settings.name
        self.signer = make_signer(settings.secret, settings.room, settings.replay_window)
        self._drops: dict[str, tuple[float, int]] = {}  # reason -> (window start, count)

    def warn_if_unsigned(self) -> None:
        if self.signer is None:
            log.warning("sender_names_unverified",
                        hint="without a room secret anyone who can write to this Redis can "
                             "send messages under any name; set BRIDGE_SECRET or "
                             "BRIDGE_SECRET_FILE (the same on every agent of the room)")

    def admits(self, envelope: Envelope) -> bool:
        """Whether to deliver this well-formed log entry to us; a refusal is logged."""
        if not envelope.addressed_to(self.name):
            return False
        reason = self.problem(envelope)
        if reason:
            self.dropped(envelope.id, reason, sender=envelope.sender)
        return reason is None

    def admits_event(self, event: Event) -> bool:
        """Whether a joined / left / status event from the events channel is to be believed:
        always without a secret; with one, only a good signature within the replay window
        (of our clock), seen once. A refusal is logged (event_dropped)."""
        if self.signer is None:
            return True
        problem = self.signer.event_problem(event, int(time.time() * 1000))
        if problem:
            self.dropped(f"{event.kind}:{event.name}", EVENT_REASONS[problem], what="event")
        return problem is None

    def dropped(self, entry_id: str, reason: str, *, what: str = "envelope",
                **details: str) -> None:
        """Log a drop (``what``: "envelope" or "event"): one line each, up to DROP_LOG_MAX per
        reason per DROP_LOG_WINDOW, then one line that says the rest of the window's drops are
        only counted."""
        now = time.monotonic()
        start, count = self._drops.get(reason, (now, 0))
        if now - start >= DROP_LOG_WINDOW:
            if count > DROP_LOG_MAX:
                log.warning(f"{what}_drops_counted", reason=reason,
                            count=count - DROP_LOG_MAX, seconds=round(now - start))
            start, count = now, 0
        count += 1
        self._drops[reason] = (start, count)
        if count <= DROP_LOG_MAX:
            log.warning(f"{what}_dropped", reason=reason, id=entry_id, hint=DROP_HINTS[reason],
                        **details)
        elif count == DROP_LOG_MAX + 1:
            log.warning(f"{what}_drops_throttled", reason=reason, id=entry_id,
                        hint=f"over {DROP_LOG_MAX} drops for {reason} in "
                             f"{DROP_LOG_WINDOW:g} s: someone is writing to this room's Redis; "
                             f"further drops are counted, not logged one by one")

    def problem(self, envelope: Envelope) -> str | None:
        """Why this entry addressed to us must not be delivered (None: deliver it).

        The receive loop checks only entries addressed to it: an HMAC per entry of the whole
        room would be wasted, and a forged entry cannot be re-addressed (the recipients are
        signed)."""
        if len(envelope.text.encode("utf-8", "surrogatepass")) > self.max_bytes:
            return TOO_LARGE  # written past a sender's check (raw XADD, a bigger limit)
        return self.signer.problem(envelope) if self.signer else None

    async def remember_before(self, redis: Redis, log_key: str, cursor: Position) -> None:
        """Note the signatures of what we had before the cursor, as far back as a copy of it
        could still pass the replay window, so that a copy added again after a restart is
        caught as a duplicate too."""
        if self.signer is None or cursor.order == (0, 0):
            return
        low = f"{max(0, cursor.order[0] - 2 * self.signer.window_ms)}-0"
        async for page in pages(redis, log_key, low, cursor.id):
            for entry_id, fields in page:
                try:
                    envelope = decode_entry(entry_id, fields)
                except ValueError:
                    continue
                if envelope.addressed_to(self.name) and not self.signer.authentic(envelope):
                    self.signer.remember(envelope)
