"""One finding of `bridge doctor`: a status, what was found, and what to do about it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Check:
    status: str  # ok / warn / fail / skip / info
    what: str
    fix: str = ""


Report = Callable[[Check], None]  # prints a finding as soon as it is known
