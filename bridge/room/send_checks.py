"""What a send is told: a message checked before it goes to Redis (check_message), the
errors for what the send script refuses, and what a logged message's reply says (SendResult).
The script and the Sender that calls it are bridge.room.sending."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.errors import MessageRejected
from bridge.room.envelope import BROADCAST, parse_id
from bridge.room.keys import NAME_PATTERN
from bridge.settings import Settings


@dataclass(frozen=True)
class SendResult:
    """Who the message is for: ``online`` (present: delivered now), ``queued`` (away, and the
    log holds it for them), ``not_held`` (away longer than the log holds messages for them),
    ``behind`` (a broadcast's holders too far behind for it to be queued: name -> lag)."""

    id: str
    online: list[str]
    queued: list[str] = field(default_factory=list)
    not_held: list[str] = field(default_factory=list)
    behind: dict[str, int] = field(default_factory=dict)
    replicas: int | None = None  # replicas that confirmed it (BRIDGE_MIN_REPLICAS); None: not asked
    wanted: int = 0  # BRIDGE_MIN_REPLICAS
    waited: float = 0.0  # BRIDGE_MIN_REPLICAS_TIMEOUT

    @property
    def offline(self) -> list[str]:
        """The named or holding recipients who are not present."""
        return sorted(self.queued + self.not_held)

    @property
    def durable(self) -> bool | None:
        return None if self.replicas is None else self.replicas >= self.wanted

    def durability(self) -> str:
        """A sentence on whether the message survives a failover ('' when not asked). Not
        durable is no failure: the message is logged and will be delivered, and sending it
        again would deliver it twice, so it is said as a caveat, not an error."""
        if self.replicas is None:
            return ""
        if self.durable:
            return f"Durable: {self.replicas} replica(s) have it."
        return (f"Logged and will be delivered, but NOT known to be durable: {self.replicas} "
                f"of the {self.wanted} replica(s) asked for (BRIDGE_MIN_REPLICAS) confirmed it "
                f"within {self.waited:g} s, so a Redis failover now could lose it. Do not send "
                f"it again (it would arrive twice).")

    def recipients(self, backlog_max: int, *, broadcast: bool) -> list[str]:
        """Sentences on who gets it: delivered now (present), queued (away, the log holds it
        for them), not queued (too far behind, or away longer than the log holds for them)."""
        said = []
        if self.online:
            said.append(f"Online, delivered now: {', '.join(self.online)}.")
        elif broadcast:
            said.append("Nobody else is online now; it stays in the room log.")
        if self.queued:
            said.append(f"Away, queued until they return: {', '.join(self.queued)}.")
        if self.not_held:
            said.append(
                f"Not queued for {', '.join(self.not_held)}: away longer than the room log "
                f"holds messages for an absent agent (its BRIDGE_AWAY_HOLD); gets it only if "
                f"it is still in the log on return.")
        if self.behind:
            who = ", ".join(f"{name}: {lag} messages behind"
                            for name, lag in sorted(self.behind.items()))
            said.append(
                f"Not queued for {who} (BRIDGE_BACKLOG_MAX={backlog_max}); its client is not "
                f"reading, and gets it only if it is still in the room log when it catches up.")
        return said


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
        f"must reset the room's log (docs/security.md: 'A log dated in the future')."
    )


def rate_limited(settings: Settings, retry_ms: bytes) -> MessageRejected:
    """The error for a send the rate limit refused (nothing was logged)."""
    retry = max(int(retry_ms), 1) / 1000
    return MessageRejected(
        f"rate limit: {settings.name} may send {settings.rate:g} messages per second, in "
        f"bursts of up to {settings.burst} (BRIDGE_RATE / BRIDGE_BURST). This message was "
        f"NOT sent; send it again in {retry:.3g} s or later."
    )
