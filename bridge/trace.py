"""Timestamps at named points on a message's path, for `make bench`'s latency breakdown.

Off unless BRIDGE_TRACE_DIR names a folder: then each process appends ``point ns`` lines
(CLOCK_MONOTONIC, which every process on the machine shares) to ``<dir>/<pid>.trace``.
Off, a mark costs one comparison.
"""

from __future__ import annotations

import os
import time
from typing import TextIO

_out: TextIO | None = None
if os.environ.get("BRIDGE_TRACE_DIR"):
    _out = open(  # noqa: SIM115 - lives as long as the process
        os.path.join(os.environ["BRIDGE_TRACE_DIR"], f"{os.getpid()}.trace"), "a",
        buffering=1)


def mark(point: str) -> None:
    if _out is not None:
        _out.write(f"{point} {time.monotonic_ns()}\n")
