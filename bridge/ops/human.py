"""Output for people (and for pipes): colour only on a terminal, NO_COLOR respected, text made
safe to print, lines shortened to the terminal's width, and the shared line formats of the
operator commands (`tail`, `history`, `send --wait`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

import anyio

from bridge.room.envelope import Envelope, Event, Notice, parse_id
from bridge.room.untrusted import clean

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def color_wanted(stream: TextIO) -> bool:
    """Colour on a terminal, unless NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def line_width(stream: TextIO) -> int | None:
    """Where to cut lines: the terminal's width, or COLUMNS if set; None (no cut) in a pipe."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty and not os.environ.get("COLUMNS"):
        return None
    return max(20, shutil.get_terminal_size().columns)


@dataclass(frozen=True)
class Style:
    enabled: bool

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.enabled and text else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def cyan(self, text: str) -> str:
        return self._wrap("36", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def red(self, text: str) -> str:
        return self._wrap("31", text)


def shorten(text: str, width: int | None) -> str:
    if width is None or len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"


def clock(ms: int) -> str:
    """Local wall-clock time of a ms timestamp; with the date when it is not today."""
    stamp = time.localtime(ms / 1000)
    if time.strftime("%Y-%m-%d", stamp) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", stamp)
    return time.strftime("%Y-%m-%d %H:%M:%S", stamp)


def ago(ms: int, now_ms: int) -> str:
    if ms <= 0:
        return "-"
    seconds = max(0, (now_ms - ms) // 1000)
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m ago"
    return f"{seconds // 86400}d ago"


def parse_since(value: str, now_ms: int) -> tuple[str, bool]:
    """``--since``: a duration (``90s``, ``10m``, ``2h``, ``1d``) or a message id.

    Returns (log id, inclusive). A duration starts at that time (Redis' clock: the ids are
    Redis time); an id starts right after that message.
    """
    match = DURATION.match(value.strip())
    if match:
        start = now_ms - int(float(match.group(1)) * UNITS[match.group(2)] * 1000)
        return f"{max(0, start)}-0", True
    try:
        parse_id(value.strip())
    except ValueError:
        raise ValueError(
            f"--since {value!r}: use a duration like 30s, 10m, 2h or 1d, or a message id "
            f"like 1732400000000-0"
        ) from None
    return value.strip(), False


# ------------------------------------------------------------------ message and event lines
def envelope_record(envelope: Envelope) -> dict[str, Any]:
    return {
        "id": envelope.id,
        "from": envelope.sender,
        "to": "*" if envelope.is_broadcast else list(envelope.to),
        "text": envelope.text,
        "reply_to": envelope.reply_to,
        "kind": envelope.kind,
        "ts": envelope.ts,
        "seq": envelope.seq,
    }


def event_record(event: Event) -> dict[str, Any]:
    return {"kind": event.kind, "name": event.name, "role": event.role, "host": event.host,
            "status": event.status, "reason": event.reason, "ts": event.ts}


def to_json(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def envelope_line(envelope: Envelope, style: Style, width: int | None) -> str:
    when = clock(envelope.order[0])
    head = f"{when}  {envelope.sender} → {envelope.to_text()}  "
    body = shorten(head + clean(envelope.text), width)
    # colour after cutting, so escape codes do not count towards the width
    styled_head = (f"{style.dim(when)}  {style.cyan(style.bold(envelope.sender))} → "
                   f"{style.cyan(envelope.to_text())}  ")
    return styled_head + body[len(head):] if len(body) >= len(head) else body


def event_line(event: Event, style: Style, width: int | None) -> str:
    when = clock(event.ts) if event.ts > 0 else clock(int(time.time() * 1000))
    if event.kind == "joined":
        who = ", ".join(part for part in (event.role, event.host) if part)
        what = f"{event.name} joined" + (f" ({who})" if who else "")
    elif event.kind == "left":
        what = f"{event.name} left" + (" (timed out)" if event.reason == "timeout" else "")
    else:
        what = f"{event.name} status: {event.status}" if event.status else \
            f"{event.name} cleared their status"
    return style.yellow(style.dim(shorten(f"{when}  · {clean(what)}", width)))


def notice_line(notice: Notice, style: Style, width: int | None) -> str:
    return style.yellow(shorten(f"! {clean(notice.text)}", width))


# ------------------------------------------------------------------ process plumbing
def safe_stdout() -> None:
    """Never fail on an encoding; a closed pipe (`| head`) is handled by `quiet_broken_pipe`."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")


def quiet_broken_pipe() -> None:
    """After EPIPE on stdout: point it at /dev/null so the interpreter's final flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


async def until_interrupted(main: Callable[[], Awaitable[Any]]) -> bool:
    """Run ``main`` until it returns or SIGINT/SIGTERM arrives. True if interrupted."""
    interrupted = False

    async with anyio.create_task_group() as tg:
        async def watch() -> None:
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    interrupted = True
                    tg.cancel_scope.cancel()
                    return

        async def run() -> None:
            await main()
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        tg.start_soon(run)
    return interrupted
