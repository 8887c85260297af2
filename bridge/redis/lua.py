"""How bridge declares a Lua script and calls it.

A script is declared beside the Python that calls it, with a typed call: a dataclass whose
fields, in order, are the script's KEYS (the fields named ``*_key``) and then its ARGV. The
Lua reads them by those names, through locals made from the same fields, so the order of the
arguments is written once: in the dataclass. A script with a variable tail (one pair per
recipient, the record's fields) has it in a last field declared ``field(metadata=TAIL)``, sends
it by ``more_keys``/``more_args``, and reads it after ``nkeys``/``nargs``, the number of named
KEYS/ARGV.

Every script runs atomically on the Redis server, in one round trip. Time comes from Redis'
TIME (``NOW_MS``), so expiry does not depend on the agents' clocks. Key names arrive through
KEYS/ARGV: they are built in ``bridge.room.keys`` only. ``bridge.room.functions`` collects the
scripts into one Redis Functions library, and calls them (``Function``).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

TAIL = {"lua": "tail"}  # the metadata of a field that is not one named argument (see above)

NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""


class Call:
    """A typed call of one script (subclasses are dataclasses): its fields are the arguments."""

    HEAD: ClassVar[str] = ""  # Lua run before the locals (NOW_MS, shared functions)

    @classmethod
    @functools.cache
    def key_fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                     if f.name.endswith("_key"))

    @classmethod
    @functools.cache
    def arg_fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                     if not f.name.endswith("_key") and f.metadata != TAIL)

    @classmethod
    def prelude(cls) -> str:
        """Lua locals named after the fields: ``local log_key, agents_key = KEYS[1], KEYS[2]``."""
        lines = []
        for source, names in (("KEYS", cls.key_fields()), ("ARGV", cls.arg_fields())):
            if names:
                lines.append(f"local {', '.join(names)} = "
                             f"{', '.join(f'{source}[{i}]' for i in range(1, len(names) + 1))}")
        lines.append(f"local nkeys, nargs = {len(cls.key_fields())}, {len(cls.arg_fields())}")
        return "\n".join(lines) + "\n"

    def more_keys(self) -> list[str]:
        return []

    def more_args(self) -> list[Any]:
        return []

    @classmethod
    @functools.cache
    def _getters(cls) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
        # attrgetter of each field list, wrapped to always give a tuple: on the send path
        # this is half the time of a getattr per field
        def getter(names: tuple[str, ...]) -> Callable[[Any], Any]:
            if len(names) == 1:
                return lambda call: (getattr(call, names[0]),)
            return operator.attrgetter(*names) if names else lambda call: ()
        return getter(cls.key_fields()), getter(cls.arg_fields())

    def keys(self) -> list[str]:
        return [*self._getters()[0](self), *self.more_keys()]

    def args(self) -> list[Any]:
        return [*self._getters()[1](self), *self.more_args()]


@dataclass(frozen=True)
class Script:
    """One of bridge's scripts: its name in the library, its typed call, and its Lua."""

    name: str
    call: type[Call]
    body: str

    @functools.cached_property
    def source(self) -> str:
        return self.call.HEAD + self.call.prelude() + self.body


def reply_text(value: Any) -> str:
    """One value of a Redis reply as text ('' for none): bytes decoded, anything else str()."""
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
