"""The operator's commands of the shared work: `tasks` (the board), `claims` (file claims), and
`guard` (the git pre-commit hook that respects them)."""

from __future__ import annotations

import argparse
import os

from bridge.cli.command import room_flags, settings_of


def tasks_flags(parser: argparse.ArgumentParser) -> None:
    room_flags(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("action", nargs="?", default="list", metavar="ACTION",
                        choices=("list", "show", "add", "assign", "done"),
                        help="list (default), show ID, add TITLE, assign ID NAME, done ID")
    parser.add_argument("words", nargs="*", metavar="ARG", help="the action's ID, TITLE, NAME")
    for flag, dest, metavar, help_text in (
            ("--status", "status", "STATUS", "list: only open, in_progress, blocked or done"),
            ("--assignee", "assignee", "NAME", "list: only NAME's"),
            ("--detail", "detail", "TEXT", "add: the detail"),
            ("--assign", "assign", "NAME", "add: assign it to NAME"),
            ("--as", "actor", "NAME", "the actor recorded (default operator)")):
        parser.add_argument(flag, dest=dest, metavar=metavar, help=help_text)
    parser.add_argument("--waits-for", dest="waits_for", nargs="+", metavar="ID",
                        help="add: the tasks it waits for")


def run_tasks(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.tasks import run

    settings = settings_of(args)
    return anyio.run(lambda: run(settings, args.action, args.words, vars(args)))


def claims_flags(parser: argparse.ArgumentParser) -> None:
    room_flags(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--agent", metavar="NAME", help="only NAME's claims")


def run_claims(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.claims import list_claims

    settings = settings_of(args)
    return anyio.run(lambda: list_claims(settings, agent=args.agent, as_json=args.json))


def guard_flags(parser: argparse.ArgumentParser) -> None:
    action = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = action.add_parser("install", help="put the pre-commit hook into a repository")
    install.add_argument("--repo", metavar="PATH", help="the repository (default: here)")
    install.add_argument("--force", action="store_true", help="replace a hook not bridge's")
    check = action.add_parser("check", help="exit 1 if a path is under another agent's "
                                            "exclusive claim (what the hook runs)")
    room_flags(check)
    check.add_argument("--as", dest="actor", metavar="NAME", help="the committer (default "
                                                                  "BRIDGE_NAME)")
    check.add_argument("--null", action="store_true", help="also read NUL-separated paths "
                                                           "from stdin (git diff -z)")
    check.add_argument("paths", nargs="*", metavar="PATH", help="paths from the repo's root")


def run_guard(args: argparse.Namespace) -> int:
    from bridge.ops import guard

    if args.action == "install":
        return guard.install(args.repo, force=args.force)
    import anyio

    settings, paths = settings_of(args), guard.read_paths(args.paths, args.null)
    name = args.actor or os.environ.get("BRIDGE_NAME") or None
    return anyio.run(lambda: guard.check(settings, paths, name=name))
