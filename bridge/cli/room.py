"""The operator's commands that watch and talk to a room: `who`, `tail`, `send`, `history`,
`web`, and `demo`."""

from __future__ import annotations

import argparse

from bridge.cli.command import positive_int, room_flags, settings_of


def who_flags(parser: argparse.ArgumentParser) -> None:
    room_flags(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--all-rooms", action="store_true",
                        help="every room on this Redis, with its agent and message counts")


def run_who(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.commands import who

    settings = settings_of(args)
    return anyio.run(lambda: who(settings, as_json=args.json, all_rooms=args.all_rooms))


def tail_flags(parser: argparse.ArgumentParser) -> None:
    room_flags(parser)
    parser.add_argument("--since", metavar="WHEN",
                        help="first replay the log: a duration (30s, 10m, 2h, 1d) or a message "
                             "id (replays what came after it)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def run_tail(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.human import remember_early_interrupts

    remember_early_interrupts()  # before the heavy imports
    from bridge.ops.tail import tail

    settings = settings_of(args)
    return anyio.run(lambda: tail(settings, since=args.since, as_json=args.json))


def send_flags(parser: argparse.ArgumentParser) -> None:
    room_flags(parser)
    # --as and --role are the name and role settings (dest name and role), with their own help
    parser.add_argument("--as", dest="name", metavar="NAME", required=True,
                        help="the participant name to send as")
    parser.add_argument("--role", default="human", help="role shown to others (default human)")
    parser.add_argument("--reply-to", dest="reply_to", default="", metavar="ID",
                        help="the message id this answers")
    parser.add_argument("--wait", action="store_true",
                        help="stay and print messages to NAME until Ctrl-C or --timeout")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="with --wait: stop after this long (exit 1 if nothing arrived)")
    parser.add_argument("--json", action="store_true", help="JSON output, one object per line")
    parser.add_argument("to", metavar="TO", help="a name, names separated by commas, or '*'")
    parser.add_argument("text", metavar="TEXT", help="the message; '-' reads it from stdin")


def run_send(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.commands import read_text, send

    settings = settings_of(args)
    text = read_text(args.text)
    return anyio.run(lambda: send(settings, args.to, text, reply_to=args.reply_to,
                                  wait=args.wait, timeout=args.timeout, as_json=args.json))


def history_flags(parser: argparse.ArgumentParser) -> None:
    room_flags(parser)
    parser.add_argument("--from", dest="sender", metavar="NAME", help="only messages by NAME")
    parser.add_argument("--to", dest="recipient", metavar="NAME",
                        help="only messages NAME received (direct or broadcast); '*': only "
                             "broadcasts")
    parser.add_argument("--since", metavar="WHEN",
                        help="a duration (30s, 10m, 2h, 1d) or a message id (after it)")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="only the last N matching messages")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def run_history(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.commands import history

    settings = settings_of(args)
    return anyio.run(lambda: history(settings, sender=args.sender, recipient=args.recipient,
                                     since=args.since, limit=args.limit, as_json=args.json))


def web_flags(parser: argparse.ArgumentParser) -> None:
    room_flags(parser)
    parser.add_argument("--bind", default="127.0.0.1:8765", metavar="HOST:PORT",
                        help="where to listen (default 127.0.0.1:8765, loopback only); any "
                             "other address needs the token for reading too")


def run_web(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.web.serve import web

    settings = settings_of(args)
    return anyio.run(lambda: web(settings, args.bind))


def demo_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hold", type=float, default=0.0, metavar="SECONDS",
                        help="keep the agents and the page up this long after the story")


def run_demo(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.demo import demo

    return anyio.run(lambda: demo(hold=args.hold))
