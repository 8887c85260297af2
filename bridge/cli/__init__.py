"""The `bridge` command line: every command's flags, and the one place that runs a command and
turns its failure into an exit status.

Each command is a `Command` in `COMMANDS` (bridge.cli.table; the groups' flags and runners in
the modules beside it): its flags (a setting's flag comes from its declaration
in bridge/settings.py) and a `run` that reads the parsed flags and calls its layer, imported on
use so that `bridge serve` starts without the operator modules. The layers know nothing of
argparse. A command fails by raising `BridgeError`: `main` prints it as one line `bridge: …` and
exits 1. Ctrl-C exits 130, or 0 for a command that follows until Ctrl-C (tail, send --wait);
bad flags exit 2 (argparse's usage message).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import structlog

from bridge import __version__, logs
from bridge.cli.command import Command
from bridge.cli.table import COMMANDS
from bridge.errors import BridgeError

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

log = structlog.get_logger("bridge.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge", description="AI coding agents find each other and talk through Redis."
    )
    parser.add_argument("--version", action="version", version=f"bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        command.flags(sub.add_parser(command.name, help=command.help,
                                     description=command.description))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)  # bad flags: usage on stderr, exit 2
    except KeyboardInterrupt:  # Ctrl-C as it starts: no traceback
        return _interrupted_while_parsing(argv)
    command = COMMANDS.get(args.command or "")
    try:
        logs.check_level()
        if command is not None and command.for_a_person:
            from bridge.ops.human import safe_stdout

            logs.configure(os.environ.get("BRIDGE_LOG_LEVEL") or "WARNING")
            safe_stdout()
        else:
            logs.configure()
        if command is None:
            parser.print_help(sys.stderr)
            return 2
        return command.run(args)
    except BaseException as e:  # anyio task groups wrap errors in exception groups
        return _failed(command, args, e)


def _interrupted_while_parsing(argv: Sequence[str] | None) -> int:
    """The exit status of Ctrl-C before the command was known: parsed again (a millisecond)
    to tell a command that follows until Ctrl-C (0) from the others (130)."""
    try:
        args = build_parser().parse_args(argv)
    except (KeyboardInterrupt, SystemExit):
        return 130
    command = COMMANDS.get(args.command or "")
    return 0 if command is not None and command.follows(args) else 130


def _failed(command: Command | None, args: argparse.Namespace, e: BaseException) -> int:
    """The exit status of a command that raised ``e``; what is not a known failure goes on
    (a traceback: a bug)."""
    error = _leaf(e)
    if isinstance(error, KeyboardInterrupt):
        return 0 if command is not None and command.follows(args) else 130
    if isinstance(error, BridgeError):
        print(f"bridge: {error}", file=sys.stderr)
        return 1
    if command is not None and command.for_a_person:
        from redis.exceptions import RedisError

        from bridge.ops.human import quiet_broken_pipe
        from bridge.ops.tail import OutputClosed

        if isinstance(error, BrokenPipeError | OutputClosed):
            quiet_broken_pipe()
            return 0
        if isinstance(error, RedisError | OSError):
            print(f"bridge: Redis failed: {error or type(error).__name__}", file=sys.stderr)
            return 1
    raise e


def _leaf(error: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error
