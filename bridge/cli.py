"""The `bridge` command line: every command's flags, and the one place that runs a command and
turns its failure into an exit status.

Each command is a `Command` in `COMMANDS`: its flags (a setting's flag comes from its declaration
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from bridge import __version__, logs
from bridge.errors import BridgeError, SettingsError
from bridge.settings import SHARED, Settings, add_flags, flag_values

log = structlog.get_logger("bridge.cli")


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


def _room_flags(parser: argparse.ArgumentParser, *, room: bool = True) -> None:
    """Where the room is: --redis, --room (unless ``room`` is false) and the --tls-* flags."""
    add_flags(parser, *(name for name in SHARED if room or name != "room"))


def _settings(args: argparse.Namespace) -> Settings:
    """The settings from the environment and the flags this command has."""
    return Settings.from_env(**flag_values(args))


# ------------------------------------------------------------------ serve, redis
def _serve_flags(parser: argparse.ArgumentParser) -> None:
    add_flags(parser)  # every setting that has a flag


def _serve(args: argparse.Namespace) -> int:
    import anyio

    from bridge.mcp.server import serve

    anyio.run(serve, _settings(args), backend_options=_loop_options())
    return 0


def _loop_options() -> dict[str, bool]:
    """uvloop for `bridge serve` where it is installed (send->push p50 -10%, msg/s +37%,
    bench/ab.py); asyncio's own loop otherwise."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def _redis(args: argparse.Namespace) -> int:
    from bridge.redis.embedded import EmbeddedRedis

    return EmbeddedRedis.for_user().run_foreground()


# ------------------------------------------------------------------ acl, functions
def _acl_flags(parser: argparse.ArgumentParser) -> None:
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


def _acl(args: argparse.Namespace) -> int:
    from bridge.ops import acl

    return acl.print_rule(_settings(args), agent=args.agent, password=args.password,
                          file_format=args.format == "file", read_only=args.read_only)


def _functions_flags(parser: argparse.ArgumentParser) -> None:
    action = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    load = action.add_parser("load", help="load this version's library (FUNCTION LOAD "
                                          "REPLACE); run it with an admin's --redis URL")
    _room_flags(load, room=False)
    action.add_parser("show", help="print the library's Lua source (what `load` loads)")


def _functions(args: argparse.Namespace) -> int:
    if args.action == "show":
        from bridge.room.functions import CODE

        sys.stdout.write(CODE)
        return 0
    import anyio

    from bridge.room.functions import load_library

    return anyio.run(load_library, _settings(args))


# ------------------------------------------------------------------ who, tail, send, history
def _who_flags(parser: argparse.ArgumentParser) -> None:
    _room_flags(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--all-rooms", action="store_true",
                        help="every room on this Redis, with its agent and message counts")


def _who(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.commands import who

    settings = _settings(args)
    return anyio.run(lambda: who(settings, as_json=args.json, all_rooms=args.all_rooms))


def _tail_flags(parser: argparse.ArgumentParser) -> None:
    _room_flags(parser)
    parser.add_argument("--since", metavar="WHEN",
                        help="first replay the log: a duration (30s, 10m, 2h, 1d) or a message "
                             "id (replays what came after it)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def _tail(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.human import remember_early_interrupts

    remember_early_interrupts()  # before the heavy imports
    from bridge.ops.tail import tail

    settings = _settings(args)
    return anyio.run(lambda: tail(settings, since=args.since, as_json=args.json))


def _send_flags(parser: argparse.ArgumentParser) -> None:
    _room_flags(parser)
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


def _send(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.commands import read_text, send

    settings = _settings(args)
    text = read_text(args.text)
    return anyio.run(lambda: send(settings, args.to, text, reply_to=args.reply_to,
                                  wait=args.wait, timeout=args.timeout, as_json=args.json))


def _history_flags(parser: argparse.ArgumentParser) -> None:
    _room_flags(parser)
    parser.add_argument("--from", dest="sender", metavar="NAME", help="only messages by NAME")
    parser.add_argument("--to", dest="recipient", metavar="NAME",
                        help="only messages NAME received (direct or broadcast); '*': only "
                             "broadcasts")
    parser.add_argument("--since", metavar="WHEN",
                        help="a duration (30s, 10m, 2h, 1d) or a message id (after it)")
    parser.add_argument("--limit", type=_positive_int, metavar="N",
                        help="only the last N matching messages")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return number


def _tasks_flags(parser: argparse.ArgumentParser) -> None:
    _room_flags(parser)
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


def _tasks(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.tasks import run

    settings = _settings(args)
    return anyio.run(lambda: run(settings, args.action, args.words, vars(args)))


def _claims_flags(parser: argparse.ArgumentParser) -> None:
    _room_flags(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--agent", metavar="NAME", help="only NAME's claims")


def _claims(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.claims import list_claims

    settings = _settings(args)
    return anyio.run(lambda: list_claims(settings, agent=args.agent, as_json=args.json))


def _guard_flags(parser: argparse.ArgumentParser) -> None:
    action = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = action.add_parser("install", help="put the pre-commit hook into a repository")
    install.add_argument("--repo", metavar="PATH", help="the repository (default: here)")
    install.add_argument("--force", action="store_true", help="replace a hook not bridge's")
    check = action.add_parser("check", help="exit 1 if a path is under another agent's "
                                            "exclusive claim (what the hook runs)")
    _room_flags(check)
    check.add_argument("--as", dest="actor", metavar="NAME", help="the committer (default "
                                                                  "BRIDGE_NAME)")
    check.add_argument("--null", action="store_true", help="also read NUL-separated paths "
                                                           "from stdin (git diff -z)")
    check.add_argument("paths", nargs="*", metavar="PATH", help="paths from the repo's root")


def _guard(args: argparse.Namespace) -> int:
    from bridge.ops import guard

    if args.action == "install":
        return guard.install(args.repo, force=args.force)
    import anyio

    settings, paths = _settings(args), guard.read_paths(args.paths, args.null)
    name = args.actor or os.environ.get("BRIDGE_NAME") or None
    return anyio.run(lambda: guard.check(settings, paths, name=name))


def _history(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.commands import history

    settings = _settings(args)
    return anyio.run(lambda: history(settings, sender=args.sender, recipient=args.recipient,
                                     since=args.since, limit=args.limit, as_json=args.json))


def _web_flags(parser: argparse.ArgumentParser) -> None:
    _room_flags(parser)
    parser.add_argument("--bind", default="127.0.0.1:8765", metavar="HOST:PORT",
                        help="where to listen (default 127.0.0.1:8765, loopback only); any "
                             "other address needs the token for reading too")


def _web(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.web.serve import web

    settings = _settings(args)
    return anyio.run(lambda: web(settings, args.bind))


def _demo_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hold", type=float, default=0.0, metavar="SECONDS",
                        help="keep the agents and the page up this long after the story")


def _demo(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.demo import demo

    return anyio.run(lambda: demo(hold=args.hold))


# ------------------------------------------------------------------ doctor, team
def _doctor(args: argparse.Namespace) -> int:
    import anyio

    from bridge.ops.doctor import Doctor, doctor

    try:
        settings = _settings(args)
    except SettingsError as e:  # the URL check is the doctor's first line
        return Doctor(Settings()).bad_settings(e)
    return anyio.run(doctor, settings)


def _team_flags(parser: argparse.ArgumentParser) -> None:
    from bridge.ops.team import roles

    parser.add_argument("agents", nargs="*", metavar="NAME:ROLE[:CLIENT]",
                        help="e.g. carol:manager alice:developer dave:developer:codex (CLIENT: "
                             "claude, the default, or codex)")
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


def _team(args: argparse.Namespace) -> int:
    from bridge.ops.team import launch

    return launch([*args.more_agents, *args.agents], room=_settings(args).room,
                  session=args.session, claude=args.claude, workdir=args.workdir,
                  prompt_dir=args.prompt_dir, dry_run=args.dry_run, channel=args.channel,
                  attach=args.attach, codex_cli=args.codex_cli)


COMMANDS = {command.name: command for command in (
    Command("serve", "run the MCP server for one agent (stdio)", _serve_flags, _serve,
            for_a_person=False),
    Command("redis", "run the embedded per-user Redis in the foreground", lambda parser: None,
            _redis, for_a_person=False),
    Command("acl", "print the Redis ACL rule for one agent's least-privilege user",
            _acl_flags, _acl, for_a_person=False,
            description="Print the ACL SETUSER line (or, with --format file, a users.acl line) "
                        "for user bridge-ROOM-AGENT: only room ROOM's keys and channels, only "
                        "the commands bridge runs, and of Lua only this bridge version's "
                        "functions (FCALL; no EVAL, EVALSHA, SCRIPT or FUNCTION). Needs Redis "
                        "7.0 or newer. Run it as a Redis admin (e.g. pipe it into redis-cli), "
                        "and load bridge's functions once (bridge functions load); the agent's "
                        "URL is printed on stderr."),
    Command("who", "the agents in the room: role, host, delivery, status", _who_flags, _who,
            description="The agents in the room. Expired agents are pruned. An empty room is "
                        "an error (exit 1), except with --json."),
    Command("tail", "follow the room's messages and events live", _tail_flags, _tail,
            follows=lambda args: True,
            description="Live traffic of the room: messages from the log, joined/left/status "
                        "events. Follows Redis reconnects without missing or repeating a "
                        "message. Ctrl-C stops."),
    Command("send", "join briefly as NAME and send a message", _send_flags, _send,
            follows=lambda args: bool(args.wait),
            description="Join the room as NAME (pull delivery, role human), send TEXT to TO, "
                        "and leave. With --wait, print what arrives for NAME until Ctrl-C or "
                        "--timeout."),
    Command("history", "what the room log holds, oldest first", _history_flags, _history),
    Command("tasks", "the room's task board: list, show, add, assign, done", _tasks_flags,
            _tasks, description="The room's tasks, the ones not done first; show one with its "
                                "history; add, assign or close one as the operator (or --as "
                                "NAME), joining briefly only to tell whom it concerns."),
    Command("claims", "the room's live file claims: who holds which paths, and why",
            _claims_flags, _claims),
    Command("guard", "a git pre-commit hook that respects other agents' exclusive file claims",
            _guard_flags, _guard,
            description="install: put the hook into a repository (--repo; --force replaces "
                        "a hook not bridge's). check: what the hook runs, with the staged "
                        "paths; exit 1 if one is under another agent's exclusive claim. "
                        "Redis unreachable: one line, exit 0."),
    Command("web", "watch and steer the room from a browser", _web_flags, _web,
            follows=lambda args: True,
            description="Serve a page per room (and a list of rooms): the agents, the "
                        "conversation live, history with search, who talks to whom, and a "
                        "form to send as an operator. Prints the address to open; it carries "
                        "the token sending needs (BRIDGE_WEB_TOKEN, or a new one each run). "
                        "Needs the web extra: pip install 'bridge-agents[web]'."),
    Command("demo", "bridge's main job played by three scripted agents (no model, no API key)",
            _demo_flags, _demo),
    Command("doctor", "check that bridge can work with this Redis", _room_flags, _doctor,
            description="One line per check, with a fix for each problem. Exits 1 if bridge "
                        "cannot work."),
    Command("functions", "bridge's Redis functions: load them as an admin, or show them",
            _functions_flags, _functions,
            description="bridge runs its Lua as a Redis Functions library (Redis 7.0 or "
                        "newer), named for its version (bridge_VERSION). A user that may load "
                        "functions (the embedded Redis, the default user) has it loaded by "
                        "bridge when needed; for agents under `bridge acl` users an admin "
                        "loads it once per bridge version. Other versions' libraries are left "
                        "alone."),
    Command("team", "run a team of Claude Codes (or Codexes) in tmux, one pane each, plus "
                    "bridge tail",
            _team_flags, _team,
            description="Open a tmux session with one interactive Claude Code per agent (Codex "
                        "for NAME:ROLE:codex), each with bridge as its MCP server and its role "
                        "prompt, plus a pane running bridge tail. Messages reach a Claude Code "
                        "through its session inbox (2.1.224 or newer): no flag, no dialog; a "
                        "Codex through codex queue, once its first bridge tool call. The "
                        "environment (ANTHROPIC_*, BRIDGE_REDIS_URL, ...) passes through to "
                        "every pane; without BRIDGE_REDIS_URL all use the embedded Redis."),
)}


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
