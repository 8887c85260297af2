"""The commands an agent host runs: `serve` (the MCP server), `redis` (the embedded one), `acl`
and `functions` (a Redis admin's), and `doctor`."""

from __future__ import annotations

import argparse
import sys

from bridge.cli.command import room_flags, settings_of
from bridge.errors import SettingsError
from bridge.settings import Settings, add_flags


def serve_flags(parser: argparse.ArgumentParser) -> None:
    add_flags(parser)  # every setting that has a flag


def run_serve(args: argparse.Namespace) -> int:
    import anyio

    from bridge.mcp.server import serve

    anyio.run(serve, settings_of(args), backend_options=loop_options())
    return 0


def loop_options() -> dict[str, bool]:
    """uvloop for `bridge serve` where it is installed (send->push p50 -10%, msg/s +37%,
    bench/ab.py); asyncio's own loop otherwise."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def run_redis(args: argparse.Namespace) -> int:
    from bridge.redis.embedded import EmbeddedRedis

    return EmbeddedRedis.for_user().run_foreground()


def acl_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", required=True, metavar="NAME", help="the agent's name")
    add_flags(parser, "room")
    parser.add_argument("--password", help="the user's password (default: a new random one)")
    parser.add_argument("--read-only", dest="read_only", action="store_true",
                        help="a user that may only read the room (its log, agents and events): "
                             "for bridge web, tail and history that watch without sending")
    parser.add_argument("--format", choices=("command", "file"), default="command",
                        help="command: ACL SETUSER for redis-cli (default); file: a users.acl "
                             "line")
    add_flags(parser, "redis_url", help={
        "redis_url": "the Redis the agent uses: its host and port go into the URL shown "
                     "(env BRIDGE_REDIS_URL)"})


def run_acl(args: argparse.Namespace) -> int:
    from bridge.ops import acl

    return acl.print_rule(settings_of(args), agent=args.agent, password=args.password,
                          file_format=args.format == "file", read_only=args.read_only)


def functions_flags(parser: argparse.ArgumentParser) -> None:
    action = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    load = action.add_parser("load", help="load this version's library (FUNCTION LOAD "
                                          "REPLACE); run it with an admin's --redis URL")
    room_flags(load, room=False)
    action.add_parser("show", help="print the library's Lua source (what `load` loads)")


def run_functions(args: argparse.Namespace) -> int:
    if args.action == "show":
        from bridge.room.functions import CODE

        sys.stdout.write(CODE)
        return 0
    import anyio

    from bridge.room.functions import load_library

    return anyio.run(load_library, settings_of(args))


def run_doctor(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.doctor import Doctor, doctor

    try:
        settings = settings_of(args)
    except SettingsError as e:  # the URL check is the doctor's first line
        return Doctor(Settings()).bad_settings(e)
    return anyio.run(doctor, settings)
