"""Delivering a message straight from its wake-up, without reading it back from the log.

The send script publishes the whole entry (id, seq, prev, every field, ``sig``) right after it adds
it to the log. A receiver delivers such a payload at once, saving the log read's round trip
and a wake-up, only when all of this holds; anything else is a doubt, and a doubt is an
ordinary wake-up: the log is read after ``last_seen``, as before.

1. **A room secret**, and the payload's signature is good, within the replay window of its
   id, addressed to us, within our size limit, and not one we already delivered (the Gate's
   checks, the same as for a log entry). Without a secret anyone who may PUBLISH could write
   any payload, so without one every wake-up is read back from the log.
2. **Synced**: the last log read covered every wake-up that arrived before it ended (none
   came while it ran, none waits, we are not behind on a full read-ahead, no read runs now).
   After the catch-up that follows every (re)subscribe, each entry added to the log after
   that read has its wake-up in our stream, in log order: Redis writes what it publishes
   to one subscriber connection in the order it runs the scripts (``ordered_wakes``; see
   below).
3. **Next**: its ``prev`` (the id of the entry before it in the log, which the send script
   reads just before it adds this one) is ``last_seen``: there is no entry at all between
   the last one we took and this one, not even one added by hand. A gap (an entry for
   others, one written without the script, a lost wake-up) is a doubt.

4. **Plausible**: its seq is ``last_seen``'s plus one, and its id (Redis' clock, not signed)
   is within ``CLOCK_MS`` of its signed time and not ahead of our clock by more.

Why a copy published by someone without the secret cannot pass for the real wake-up: a
signed envelope exists only once its sender's script has run, and that script publishes the
genuine wake-up to us in the same atomic step. So the genuine one is ahead of any copy in our
stream. It was either delivered from the wake-up (the copy is then a duplicate), or it was a
doubt, and we are not synced until a log read that started after it ended (which delivers it;
again the copy is a duplicate). An older message is a duplicate (delivered, or remembered
from before the cursor at start), or outside the replay window, or one we never saw because
the log lost it before we read it. That last kind, replayed with a made-up id, would move our
cursor to an id that is not in the log and skip the entries below it (found by review: a
message trimmed while its recipient was away, replayed with an id 250 s ahead). So: the id
must sit within ``CLOCK_MS`` of the signed time, which puts a copy of a message older than
our cursor behind it; and after the log lost entries we had not read (the expiry notice), or
was reset, or while the memory of signatures is full, no wake-up is delivered for twice the
replay window (``Receiver.distrust_wakes``), by when any such message is outside it.

``ordered_wakes`` must be False where a PUBLISH can reach us by another path than the send
script's own (non-sharded pub/sub across a Redis Cluster's nodes, a subscription on a
replica): a copy could then overtake the original.
"""

from __future__ import annotations

import time

from bridge.room.cursor import Position
from bridge.room.envelope import Envelope, decode_whole_wake
from bridge.room.signing import Gate

# a payload's JSON is at most its text escaped (\u00XX: 6 bytes a byte) and bounded fields
ENVELOPE_OVERHEAD = 8192
# how far a wake-up's id (Redis' clock at XADD) may be from its signed time (the sender's
# clock) and from ours; a genuine one past it (clocks apart) is read from the log, as a doubt
CLOCK_MS = 2000


def from_wake(raw: bytes, last_seen: Position, gate: Gate, me: str) -> Envelope | None:
    """The message a wake-up carries if it may be delivered without reading the log (the
    checks above, but for being synced, which is the receiver's); None: read the log."""
    if gate.signer is None or len(raw) > 6 * gate.max_bytes + ENVELOPE_OVERHEAD:
        return None
    try:
        envelope, prev = decode_whole_wake(raw)
    except ValueError:
        return None
    if (prev != last_seen.id or envelope.order <= last_seen.order
            or envelope.seq != last_seen.seq + 1 or not envelope.addressed_to(me)):
        return None
    claimed_ms = envelope.order[0]
    if abs(claimed_ms - envelope.ts) > CLOCK_MS or claimed_ms > time.time() * 1000 + CLOCK_MS:
        return None
    if gate.signer.forgets():  # a copy of something forgotten would not be a duplicate
        return None
    # (no drop is logged: the log read that follows decides, and logs what it drops)
    return envelope if gate.problem(envelope) is None else None
