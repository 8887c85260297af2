"""Starting `bridge team`: the team built from the command line and checked (``build``),
what it says before and after (the dry run's commands, whom to answer in the panes), and
starting it (``launch``). What a team is, and the command each pane runs: bridge.ops.team."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from bridge.errors import BridgeError, SettingsError
from bridge.ops import codex_home, opencode_team
from bridge.ops.team import (
    PROMPT_FILE,
    SESSION_PATTERN,
    Team,
    bridge_command,
    codex_homes,
    find_claude,
    find_codex,
    parse_members,
)


def build(
    specs: Sequence[str], *, room: str, session: str | None, claude: str | None,
    workdir: str | None, prompt_dir: str | None, dry_run: bool,
    channel: bool = False, codex_cli: str | None = None, opencode: str | None = None,
) -> Team:
    """Check every input and resolve the executables; nothing is started."""
    members = parse_members(specs, Path(prompt_dir) if prompt_dir else None)
    session = session or f"bridge-{room}"
    if not SESSION_PATTERN.match(session):
        raise SettingsError(f"bad --session {session!r}: use 1-64 of A-Z a-z 0-9 _ -")
    folder = Path(workdir or os.getcwd()).absolute()
    if not folder.is_dir():
        raise SettingsError(f"--workdir {folder} is not a directory: create it or give "
                            f"another one")
    tmux = shutil.which("tmux")
    if tmux is None and not dry_run:
        raise BridgeError("tmux is not installed; bridge team runs the agents in tmux 3.0 "
                          "or newer (apt install tmux, brew install tmux)")
    clients = {member.client for member in members}

    def resolve(given: str | None, name: str, find: Callable[[str | None], str]) -> str:
        if name not in clients:
            return given or name
        if dry_run:  # show the commands even where the client is not installed yet
            found = shutil.which(given or name)
            return str(Path(found).absolute()) if found else (given or name)
        return find(given)

    return Team(members, room, session, resolve(claude, "claude", find_claude), folder,
                tuple(bridge_command()), tmux or "tmux", channel,
                resolve(codex_cli, "codex", find_codex), codex_homes(),
                tuple(codex_home.passed_vars(os.environ)),
                resolve(opencode, "opencode", opencode_team.find), opencode_team.folders(),
                tuple((m.name, opencode_team.free_port()) for m in members
                      if m.client == "opencode"))


def channel_warning(env: Mapping[str, str]) -> str | None:
    from bridge.ops.doctor_topology import (
        CHANNEL_KILLERS,  # (not at import: `bridge serve` starts fast)
    )

    found = [var for var in CHANNEL_KILLERS if env.get(var)]
    if not found:
        return None
    return (f"{' and '.join(found)} {'is' if len(found) == 1 else 'are'} set: Claude Code then "
            f"switches channels off, and teammates' messages will not appear in the agents' "
            f"conversations by themselves; unset {'it' if len(found) == 1 else 'them'}")


def delivery(team: Team) -> str:
    """How messages reach the agents, for the dry run's header."""
    if team.channel:
        said = ("messages arrive through the session inbox, or the development channel on "
                "Claude Code before 2.1.224 (each pane asks once to confirm loading it)")
    else:
        said = ("messages arrive through the session inbox (Claude Code 2.1.224 or newer; "
                "--channel for older)")
    opencodes = [m for m in team.members if m.client == "opencode"]
    if opencodes:
        ports = ", ".join(f"{m.name} on port {dict(team.ports)[m.name]}" for m in opencodes)
        said += (f"; an OpenCode agent's through its TUI's port ({ports}), into the session "
                 f"that ran its first prompt")
    codexes = [m for m in team.members if m.client == "codex"]
    if codexes:
        homes = ", ".join(f"{m.name} in {team.codex_home(m)}" for m in codexes)
        said += (f"; a Codex agent's through codex queue, once its first bridge tool call "
                 f"named its session; its Codex home (config.toml and {PROMPT_FILE} written "
                 f"at start): {homes}")
    return said


def confirm(team: Team) -> str:
    """What a person must answer in the panes before the team can work."""
    said = ""
    if any(m.client == "claude" for m in team.members):
        if team.channel:
            said = ("Each Claude Code asks once to confirm loading the development channel "
                    "(and, in a new folder, whether you trust it): press Enter in each pane. ")
        else:
            said = ("In a folder it has not seen, each Claude Code asks whether you trust it: "
                    "press Enter in each pane. ")
    if any(m.client == "codex" for m in team.members):
        said += ("Each Codex starts with its role prompt and calls list_participants; one "
                 "that is not logged in asks you to sign in in its pane. ")
    if any(m.client == "opencode" for m in team.members):
        said += ("Each OpenCode starts with its role prompt, on the model of your OpenCode "
                 "configuration. ")
    return said


def run(team: Team, *, dry_run: bool, attach: bool | None, out: TextIO = sys.stdout) -> int:
    # telemetry switches only the channel off; the session inbox works without it
    warning = channel_warning(os.environ) if team.channel else None
    if warning:
        print(f"bridge: warning: {warning}", file=sys.stderr)
    if dry_run:
        print(f"# bridge team: room {team.room}, tmux session {team.session}; every pane "
              f"inherits this environment; {delivery(team)}", file=out)
        for command in team.commands():
            print(shlex.join(command), file=out)
        print(shlex.join(team.attach_command()), file=out)
        return 0
    team.start()
    who = ", ".join(f"{m.name} ({m.role})" for m in team.members)
    print(f"team started in room {team.room}: {who}, and bridge tail\n"
          f"  watch: {shlex.join(team.attach_command())}\n"
          f"  stop:  {shlex.join(team.stop_command())}\n"
          f"{confirm(team)}Then give the manager its task.", file=out, flush=True)
    if attach is None:
        attach = sys.stdin.isatty() and out.isatty()
    if attach:
        env = {k: v for k, v in os.environ.items() if k != "TMUX"}  # may run inside tmux
        os.execvpe(team.tmux, team.attach_command(), env)
    return 0


def launch(specs: Sequence[str], *, room: str, session: str | None, claude: str | None,
           workdir: str | None, prompt_dir: str | None, dry_run: bool, channel: bool,
           attach: bool | None, codex_cli: str | None = None,
           opencode: str | None = None) -> int:
    """`bridge team`: build the team from ``specs`` (NAME:ROLE[:CLIENT]) and start it, or
    with ``dry_run`` print the commands. A failure to start is a BridgeError."""
    try:
        team = build(specs, room=room, session=session, claude=claude, workdir=workdir,
                     prompt_dir=prompt_dir, dry_run=dry_run, channel=channel,
                     codex_cli=codex_cli, opencode=opencode)
        return run(team, dry_run=dry_run, attach=attach)
    except BrokenPipeError:  # `bridge team --dry-run ... | head`: the CLI ends quietly
        raise
    except (OSError, subprocess.SubprocessError) as e:
        raise BridgeError(f"cannot start the team: {e}") from e
