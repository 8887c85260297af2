"""`bridge team`: a team of agents in tmux."""

from __future__ import annotations

import argparse

from bridge.cli.command import settings_of
from bridge.settings import add_flags


def team_flags(parser: argparse.ArgumentParser) -> None:
    from bridge.ops.team import roles

    parser.add_argument("agents", nargs="*", metavar="NAME:ROLE[:CLIENT]",
                        help="e.g. carol:manager alice:developer dave:developer:codex (CLIENT: "
                             "claude, the default, codex or opencode)")
    parser.add_argument("--agents", dest="more_agents", action="append", default=[],
                        metavar="'NAME:ROLE[:CLIENT] ...'",
                        help="agents as one space-separated string")
    add_flags(parser, "room")
    parser.add_argument("--session", metavar="NAME",
                        help="tmux session and socket name (default bridge-ROOM)")
    parser.add_argument("--claude", metavar="PATH", help="the Claude Code CLI (default: claude "
                                                         "on PATH)")
    parser.add_argument("--codex", dest="codex_cli", metavar="PATH",
                        help="the Codex CLI, for agents named NAME:ROLE:codex (default: codex "
                             "on PATH)")
    parser.add_argument("--opencode", metavar="PATH",
                        help="the OpenCode CLI, for agents named NAME:ROLE:opencode (default: "
                             "opencode on PATH)")
    parser.add_argument("--workdir", metavar="DIR",
                        help="the folder every agent works in (default: the current one)")
    parser.add_argument("--prompt-dir", dest="prompt_dir", metavar="DIR",
                        help="a folder of ROLE.md prompts; they add to or replace the built-in "
                             f"roles ({', '.join(sorted(roles(None)))})")
    parser.add_argument("--channel", action="store_true",
                        help="also start Claude Code with --dangerously-load-development-"
                             "channels server:bridge, for versions before 2.1.224 (no session "
                             "inbox); each pane then asks once to confirm it")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="print the commands instead of running them")
    parser.add_argument("--attach", action=argparse.BooleanOptionalAction, default=None,
                        help="attach to the session once started (default: when on a terminal)")


def run_team(args: argparse.Namespace) -> int:
    from bridge.ops.team_run import launch

    return launch([*args.more_agents, *args.agents], room=settings_of(args).room,
                  session=args.session, claude=args.claude, workdir=args.workdir,
                  prompt_dir=args.prompt_dir, dry_run=args.dry_run, channel=args.channel,
                  attach=args.attach, codex_cli=args.codex_cli, opencode=args.opencode)
