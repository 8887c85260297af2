"""Output for people (and for pipes), rendered by rich: colour only on a terminal, NO_COLOR
respected, text made safe to print, lines cut to the terminal's width; and the shared line
formats of the operator commands (`who`, `tail`, `history`, `send --wait`, `doctor`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

import anyio
from anyio.abc import TaskStatus
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bridge.room.envelope import Envelope, Event, Notice, parse_id
from bridge.room.untrusted import clean

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


NATURAL_WIDTH = 100_000  # wider than any table; lines are cut after rendering


class Terminal:
    """Where an operator command prints, rendered by rich.

    On a terminal: colour (unless NO_COLOR, https://no-color.org), lines cut to its width with
    an ellipsis, tables fitted to it. In a pipe: plain text and whole lines (cut only when
    COLUMNS is set), so that scripts can read them. What a peer wrote reaches a line only
    through ``clean`` and as plain rich ``Text``: rich markup and emoji codes are off.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        tty = _is_terminal(stream)
        self.color = tty and not os.environ.get("NO_COLOR")
        # None: no cut. COLUMNS makes a pipe cut too (a pager, a test)
        self.width = max(20, shutil.get_terminal_size().columns) \
            if tty or os.environ.get("COLUMNS") else None
        self.console = Console(
            file=stream, width=self.width or NATURAL_WIDTH, force_terminal=self.color,
            color_system="standard" if self.color else None, no_color=not self.color,
            markup=False, emoji=False, highlight=False, soft_wrap=True)

    def line(self, text: Text) -> None:
        """One line, cut to the width; flushed, so `tail | grep` sees it at once."""
        line = text.copy()
        if self.width is not None:
            line.truncate(self.width, overflow="ellipsis")
        self.console.print(line)

    def show(self, line: Text | str) -> None:
        """A rendered line (``Text``), or a plain ``str`` (JSON, a summary) printed as it is."""
        if isinstance(line, str):
            self.raw(line)
        else:
            self.line(line)

    def raw(self, text: str) -> None:
        """A line printed as it is (JSON), not rendered."""
        print(text, file=self.stream, flush=True)

    def labelled(self, rows: list[tuple[Text | str, Text | str]]) -> None:
        """Rows of a label and a long text (doctor's findings): on a terminal the text wraps at
        words under itself, beside its label; in a pipe each row is one whole line, so that
        grep finds it."""
        if self.width is None:
            for label, text in rows:
                self.console.print(Text.assemble(label, "  ", text))
            return
        grid = Table.grid(padding=(0, 2, 0, 0))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow="fold")
        for label, text in rows:
            grid.add_row(label, text)
        self.console.print(grid, soft_wrap=False)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        """Columns aligned by rich at their natural width, then each line cut like any other,
        so that on a narrow terminal the last column (a status, free text) goes first."""
        table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 0), show_edge=False)
        for name in header:
            table.add_column(Text(name, style="bold"), no_wrap=True)
        for row in rows:
            table.add_row(*row)
        natural = self.console.options.update(width=NATURAL_WIDTH)
        for segments in self.console.render_lines(table, natural, pad=False):
            line = Text.assemble(*((s.text, s.style or "") for s in segments if not s.control))
            line.rstrip()  # rich pads each cell: no trailing blanks
            self.line(line)


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


def envelope_line(envelope: Envelope) -> Text:
    return Text.assemble(
        (clock(envelope.order[0]), "dim"), "  ", (clean(envelope.sender), "bold cyan"), " → ",
        (clean(envelope.to_text()), "cyan"), "  ", clean(envelope.text))


def event_line(event: Event) -> Text:
    when = clock(event.ts) if event.ts > 0 else clock(int(time.time() * 1000))
    if event.kind == "joined":
        who = ", ".join(part for part in (event.role, event.host) if part)
        what = f"{event.name} joined" + (f" ({who})" if who else "")
    elif event.kind == "left":
        what = f"{event.name} left" + (" (timed out)" if event.reason == "timeout" else "")
    elif event.kind == "board":
        what = f"{event.name} {event.status}"
    else:
        what = f"{event.name} status: {event.status}" if event.status else \
            f"{event.name} cleared their status"
    return Text(f"{when}  · {clean(what)}", style="dim yellow")


def notice_line(notice: Notice) -> Text:
    return Text(f"! {clean(notice.text)}", style="yellow")


def marked(marker: str, line: Text) -> Text:
    """A line that failed the room's signature check, marked in front (not hidden)."""
    return Text.assemble((marker, "red"), " ", line)


def dim(text: str) -> Text:
    return Text(text, style="dim")


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


_early_signals: list[int] = []


def remember_early_interrupts() -> None:
    """From now until `until_interrupted` listens, Ctrl-C still raises KeyboardInterrupt, and
    is remembered too: a KeyboardInterrupt raised where Python only reports it (a weakref
    callback of the import machinery) is lost, and the command ran on as if never told to
    stop. Seen once in about 50 Ctrl-Cs in the first 0.2 s of `bridge tail`."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return  # ignored, as a background job inherits it: until_interrupted listens anyway

    def on_sigint(signum: int, frame: object) -> None:
        _early_signals.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)


async def until_interrupted(main: Callable[[], Awaitable[Any]]) -> bool:
    """Run ``main`` until it returns or SIGINT/SIGTERM arrives. True if interrupted.

    The handlers are in place before ``main`` starts, so a command that connects inside
    ``main`` is interrupted the same way while it waits for a Redis that does not answer.
    They replace whatever the process inherited: a job started in the background by a
    non-interactive shell starts with SIGINT ignored, and asyncio's own Ctrl-C handling then
    stays off, so a signal before these handlers existed did nothing until the connection
    timed out."""
    interrupted = False

    async with anyio.create_task_group() as tg:
        async def watch(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()
                if _early_signals:  # one that remember_early_interrupts saw
                    interrupted = True
                    tg.cancel_scope.cancel()
                    return
                async for _ in signals:
                    interrupted = True
                    tg.cancel_scope.cancel()
                    return

        async def run() -> None:
            await main()
            tg.cancel_scope.cancel()

        await tg.start(watch)
        tg.start_soon(run)
    return interrupted
