"""Stopping `bridge serve`: SIGTERM, SIGINT or stdin EOF end the process within about a
second, whatever a tool is doing.

The clean stop runs on the event loop: tool calls under way are cancelled, except sends
(shielded, so that one agent's sends keep their order), which get CALLS_GRACE to finish (a
live Redis takes milliseconds) and are then abandoned; the agent leaves the room
(room.connection.LEAVE_TIMEOUT). The signal handler is a Python-level one (``signal.signal``),
not the event loop's: Python runs it between bytecodes even when the loop never gets a turn (a
coroutine that spins without yielding). It asks the loop for the clean stop and arms the
last resort, a thread that ends the process FORCE_AFTER seconds later in any case.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import structlog

log = structlog.get_logger("bridge.shutdown")

CALLS_GRACE = 0.25  # seconds that tool calls under way may still take at a stop
FORCE_AFTER = 2.0  # seconds after a stop was asked for: the process ends, clean or not
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    """One process' stop: asked for once (a signal, stdin EOF), then carried out by the
    callbacks given to ``on_stop``, under the deadline of the last resort."""

    def __init__(self) -> None:
        self.reason = ""  # why the stop was asked for; "" while running
        self._loop = asyncio.get_running_loop()
        self._callbacks: list[Callable[[], None]] = []
        self._armed = False
        self._signal = ""  # the last signal, for the last resort's log line
        self._alarm_read, self._alarm_write = os.pipe()

    def install(self) -> None:
        """Take SIGTERM and SIGINT, and start the last resort's thread. The handlers stay
        for the rest of the process: once a stop is under way, the deadline holds."""
        threading.Thread(target=self._last_resort, name="bridge-stop-deadline",
                         daemon=True).start()
        for signum in SIGNALS:
            signal.signal(signum, self._on_signal)

    @property
    def requested(self) -> bool:
        return bool(self.reason)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the event loop when the stop is asked for (at once if it
        was already)."""
        self._callbacks.append(callback)
        if self.reason:
            callback()

    def request(self, reason: str) -> None:
        """Ask for the stop (on the event loop). Only the first call counts."""
        if self.reason:
            return
        self.reason = reason
        self._arm()
        log.info("stopping", reason=reason, hint="leaving the room; the process ends "
                 f"within {FORCE_AFTER:g} s at the latest")
        for callback in self._callbacks:
            callback()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes: nothing here may take a lock the
        # interrupted code could hold (a log line would); the loop does the rest.
        self._signal = signal.Signals(signum).name
        self._arm()
        with contextlib.suppress(RuntimeError):  # the loop has closed: the timer is armed
            self._loop.call_soon_threadsafe(self.request, signal.Signals(signum).name)

    def _arm(self) -> None:
        # a byte in a pipe: no lock and no new thread, which a signal handler must not need
        if not self._armed:
            self._armed = True
            os.write(self._alarm_write, b"!")

    def _last_resort(self) -> None:
        """Waits for the stop to be asked for; ends the process if it outlives the
        deadline."""
        os.read(self._alarm_read, 1)
        time.sleep(FORCE_AFTER)
        line = json.dumps({
            "event": "stop_forced", "level": "error", "reason": self.reason or self._signal,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "hint": f"the clean stop took over {FORCE_AFTER:g} s; exiting without it (a "
                    f"presence record left behind expires after the TTL)"})
        try:
            os.write(2, line.encode() + b"\n")
        finally:
            os._exit(0)
