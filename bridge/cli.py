"""The `bridge` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import structlog

from bridge import __version__, logs
from bridge.errors import BridgeError
from bridge.settings import Settings

log = structlog.get_logger("bridge.cli")


def _room_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis", metavar="URL",
                        help="Redis URL (env BRIDGE_REDIS_URL; default: the embedded Redis)")
    parser.add_argument("--room", help="room name (env BRIDGE_ROOM; default main)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge", description="AI coding agents find each other and talk through Redis."
    )
    parser.add_argument("--version", action="version", version=f"bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the MCP server for one agent (stdio)")
    _room_flags(serve)
    serve.add_argument("--name", help="this agent's name (env BRIDGE_NAME; default: "
                                      "derived from host and working directory)")
    serve.add_argument("--role", help="role shown to others, e.g. developer (env BRIDGE_ROLE)")
    serve.add_argument("--ttl", help="presence TTL in seconds (env BRIDGE_TTL; default 15)")
    serve.add_argument("--delivery", help="push (Claude Code channels) or pull "
                                          "(read_messages) (env BRIDGE_DELIVERY; default push)")
    serve.add_argument("--max-bytes", dest="max_bytes",
                       help="largest message text in bytes (env BRIDGE_MAX_BYTES; default 65536)")

    sub.add_parser("redis", help="run the embedded per-user Redis in the foreground")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure()
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "redis":
            from bridge.embedded import EmbeddedRedis

            return EmbeddedRedis.for_user().run_foreground()
    except BridgeError as e:
        print(f"bridge: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


def _serve(args: argparse.Namespace) -> int:
    import anyio

    from bridge.server import serve

    flags = {key: getattr(args, key, None)
             for key in ("redis", "room", "name", "role", "ttl", "delivery", "max_bytes")}
    settings = Settings.from_env(**flags)
    anyio.run(serve, settings)
    return 0
