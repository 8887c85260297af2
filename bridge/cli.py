"""The `bridge` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import structlog

from bridge import __version__, logs
from bridge.errors import BridgeError
from bridge.settings import SHARED, Settings, add_flags, flag_values

log = structlog.get_logger("bridge.cli")


def _room_flags(parser: argparse.ArgumentParser, *, room: bool = True) -> None:
    """Where the room is: --redis, --room (unless ``room`` is false) and the --tls-* flags."""
    add_flags(parser, *(name for name in SHARED if room or name != "room"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge", description="AI coding agents find each other and talk through Redis."
    )
    parser.add_argument("--version", action="version", version=f"bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the MCP server for one agent (stdio)")
    add_flags(serve)  # every setting that has a flag

    sub.add_parser("redis", help="run the embedded per-user Redis in the foreground")
    from bridge.ops import acl

    acl.add_parser(sub)
    _operator_commands(sub)
    from bridge.ops import team

    team.add_parser(sub)
    return parser


def _operator_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    who = sub.add_parser("who", help="the agents in the room: role, host, delivery, status",
                         description="The agents in the room. Expired agents are pruned. "
                                     "An empty room is an error (exit 1), except with --json.")
    _room_flags(who)
    who.add_argument("--json", action="store_true", help="machine-readable output")
    who.add_argument("--all-rooms", action="store_true",
                     help="every room on this Redis, with its agent and message counts")

    tail = sub.add_parser("tail", help="follow the room's messages and events live",
                          description="Live traffic of the room: messages from the log, "
                                      "joined/left/status events. Follows Redis reconnects "
                                      "without missing or repeating a message. Ctrl-C stops.")
    _room_flags(tail)
    tail.add_argument("--since", metavar="WHEN",
                      help="first replay the log: a duration (30s, 10m, 2h, 1d) or a message "
                           "id (replays what came after it)")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")

    send = sub.add_parser("send", help="join briefly as NAME and send a message",
                          description="Join the room as NAME (pull delivery, role human), send "
                                      "TEXT to TO, and leave. With --wait, print what arrives "
                                      "for NAME until Ctrl-C or --timeout.")
    _room_flags(send)
    send.add_argument("--as", dest="name", metavar="NAME", required=True,
                      help="the participant name to send as")
    send.add_argument("--role", default="human", help="role shown to others (default human)")
    send.add_argument("--reply-to", dest="reply_to", default="", metavar="ID",
                      help="the message id this answers")
    send.add_argument("--wait", action="store_true",
                      help="stay and print messages to NAME until Ctrl-C or --timeout")
    send.add_argument("--timeout", type=float, metavar="SECONDS",
                      help="with --wait: stop after this long (exit 1 if nothing arrived)")
    send.add_argument("--json", action="store_true", help="JSON output, one object per line")
    send.add_argument("to", metavar="TO", help="a name, names separated by commas, or '*'")
    send.add_argument("text", metavar="TEXT", help="the message; '-' reads it from stdin")

    history = sub.add_parser("history", help="what the room log holds, oldest first")
    _room_flags(history)
    history.add_argument("--from", dest="sender", metavar="NAME", help="only messages by NAME")
    history.add_argument("--to", dest="recipient", metavar="NAME",
                         help="only messages NAME received (direct or broadcast); '*': only "
                              "broadcasts")
    history.add_argument("--since", metavar="WHEN",
                         help="a duration (30s, 10m, 2h, 1d) or a message id (after it)")
    history.add_argument("--limit", type=_positive_int, metavar="N",
                         help="only the last N matching messages")
    history.add_argument("--json", action="store_true", help="one JSON object per line")

    doctor = sub.add_parser("doctor", help="check that bridge can work with this Redis",
                            description="One line per check, with a fix for each problem. "
                                        "Exits 1 if bridge cannot work.")
    _room_flags(doctor)

    functions = sub.add_parser(
        "functions", help="bridge's Redis functions: load them as an admin, or show them",
        description="bridge runs its Lua as a Redis Functions library (Redis 7.0 or newer), "
                    "named for its version (bridge_VERSION). A user that may load functions "
                    "(the embedded Redis, the default user) has it loaded by bridge when "
                    "needed; for agents under `bridge acl` users an admin loads it once per "
                    "bridge version. Other versions' libraries are left alone.")
    action = functions.add_subparsers(dest="action", metavar="ACTION", required=True)
    load = action.add_parser("load", help="load this version's library (FUNCTION LOAD "
                                          "REPLACE); run it with an admin's --redis URL")
    _room_flags(load, room=False)
    action.add_parser("show", help="print the library's Lua source (what `load` loads)")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        logs.check_level()
    except BridgeError as e:
        print(f"bridge: {e}", file=sys.stderr)
        return 1
    if args.command in OPERATOR_COMMANDS:
        # a person is reading: only warnings and errors, unless BRIDGE_LOG_LEVEL says otherwise
        logs.configure(os.environ.get("BRIDGE_LOG_LEVEL") or "WARNING")
        return _operator(args)
    if args.command == "team":
        from bridge.ops import team

        logs.configure(os.environ.get("BRIDGE_LOG_LEVEL") or "WARNING")
        return team.main(args)
    logs.configure()
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "acl":
            from bridge.ops import acl

            return acl.main(args)
        if args.command == "redis":
            from bridge.room.embedded import EmbeddedRedis

            return EmbeddedRedis.for_user().run_foreground()
    except BridgeError as e:
        print(f"bridge: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


OPERATOR_COMMANDS = ("who", "tail", "send", "history", "doctor", "functions")


def _operator(args: argparse.Namespace) -> int:
    """who / tail / send / history / doctor: any failure is one line on stderr."""
    from redis.exceptions import RedisError

    from bridge.ops import human
    from bridge.ops.tail import OutputClosed

    human.safe_stdout()
    try:
        return _run_operator(args)
    except BaseException as e:  # anyio task groups wrap errors in exception groups
        error = _leaf(e)
        if isinstance(error, KeyboardInterrupt):  # following is ended by Ctrl-C: not a failure
            return 0 if args.command == "tail" or getattr(args, "wait", False) else 130
        if isinstance(error, BrokenPipeError | OutputClosed):
            human.quiet_broken_pipe()
            return 0
        if isinstance(error, BridgeError):
            print(f"bridge: {error}", file=sys.stderr)
            return 1
        if isinstance(error, RedisError | OSError):
            print(f"bridge: Redis failed: {error or type(error).__name__}", file=sys.stderr)
            return 1
        raise


def _leaf(error: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _run_operator(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops import commands as ops

    if args.command == "functions" and args.action == "show":
        from bridge.room.functions import CODE

        sys.stdout.write(CODE)
        return 0
    try:  # send's --as and --role are the name and role settings
        settings = Settings.from_env(**flag_values(args))
    except BridgeError as e:
        if args.command == "doctor":  # the URL check is the doctor's first line
            from bridge.ops.doctor import Doctor

            return Doctor(Settings()).bad_settings(e)
        raise
    if args.command == "who":
        return anyio.run(lambda: ops.who(settings, as_json=args.json, all_rooms=args.all_rooms))
    if args.command == "history":
        return anyio.run(lambda: ops.history(
            settings, sender=args.sender, recipient=args.recipient, since=args.since,
            limit=args.limit, as_json=args.json))
    if args.command == "doctor":
        from bridge.ops.doctor import doctor

        return anyio.run(doctor, settings)
    if args.command == "functions":
        from bridge.room.functions import load_library

        return anyio.run(load_library, settings)
    if args.command == "send":
        text = ops.read_text(args.text)
        return anyio.run(lambda: ops.send(
            settings, args.to, text, reply_to=args.reply_to, wait=args.wait,
            timeout=args.timeout, as_json=args.json))
    from bridge.ops.tail import tail

    return anyio.run(lambda: tail(settings, since=args.since, as_json=args.json))


def _serve(args: argparse.Namespace) -> int:
    import anyio

    from bridge.mcp.server import serve

    settings = Settings.from_env(**flag_values(args))
    anyio.run(serve, settings)
    return 0
