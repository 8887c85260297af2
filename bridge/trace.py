"""Timestamps at named points on a message's path, for `make bench`'s latency breakdown.

Off unless BRIDGE_TRACE_DIR names a folder: then each process keeps ``(point, ns)`` pairs
(CLOCK_MONOTONIC, which every process on the machine shares) in memory and writes them to
``<dir>/<pid>.trace`` when it exits, so that tracing adds no write to a message's path.
Off, a mark costs one comparison.
"""

from __future__ import annotations

import atexit
import os
import time

_marks: list[tuple[str, int]] | None = None
_directory = os.environ.get("BRIDGE_TRACE_DIR")


def mark(point: str) -> None:
    if _marks is not None:
        _marks.append((point, time.monotonic_ns()))


def _write() -> None:
    if _marks and _directory:
        with open(os.path.join(_directory, f"{os.getpid()}.trace"), "a") as out:
            out.writelines(f"{point} {ns}\n" for point, ns in _marks)


if _directory:
    _marks = []
    atexit.register(_write)
