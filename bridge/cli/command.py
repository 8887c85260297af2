"""A command of the `bridge` command line (its flags, what runs it, how it ends), and what the
commands share: where the room is, the settings from the flags."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from bridge.settings import SHARED, Settings, add_flags, flag_values


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    flags: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None
    # a person reads it: logs only warnings and errors (unless BRIDGE_LOG_LEVEL says otherwise),
    # no failure on an encoding or a closed pipe (`| head`), a Redis failure is one line
    for_a_person: bool = True
    # Ctrl-C is how it normally ends (exit 0, not 130)
    follows: Callable[[argparse.Namespace], bool] = lambda args: False


def room_flags(parser: argparse.ArgumentParser, *, room: bool = True) -> None:
    """Where the room is: --redis, --room (unless ``room`` is false) and the --tls-* flags."""
    add_flags(parser, *(name for name in SHARED if room or name != "room"))


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings from the environment and the flags this command has."""
    return Settings.from_env(**flag_values(args))


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return number
