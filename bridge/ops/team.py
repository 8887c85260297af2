"""`bridge team`: a team of interactive Claude Codes on one machine, in one tmux session.

Each agent gets one pane: Claude Code with bridge as its MCP server (`bridge serve --name
NAME --role ROLE --room ROOM`) and its role prompt appended to the system prompt. Messages
reach it through Claude Code's session inbox (2.1.224 and later): no flag, no dialog.
`--channel` adds `--dangerously-load-development-channels server:bridge` for older versions,
and each pane then asks to confirm it once. One more pane runs `bridge tail`. The tmux
server is a dedicated one (`tmux -L SESSION`), started by this command, so every pane
inherits this command's environment (ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY,
BRIDGE_REDIS_URL, ...): an already running tmux server would keep its own.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bridge.errors import BridgeError, SettingsError
from bridge.room.keys import NAME_PATTERN

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
SESSION_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # tmux forbids ':' and '.' in targets
WINDOW = "team"
NAME_HINT = "use 1-32 of a-z 0-9 _ . - starting with a letter or digit"
TMUX_TIMEOUT = 30.0


@dataclass(frozen=True)
class Member:
    name: str
    role: str
    prompt: Path  # appended to Claude Code's system prompt


def roles(prompt_dir: Path | None) -> dict[str, Path]:
    """Role name -> prompt file; a --prompt-dir file overrides the built-in one."""
    found = {path.stem: path for path in sorted(PROMPTS.glob("*.md"))}
    if prompt_dir is not None:
        found |= {path.stem: path.resolve() for path in sorted(prompt_dir.glob("*.md"))}
    return found


def parse_members(specs: Iterable[str], prompt_dir: Path | None = None) -> tuple[Member, ...]:
    """`carol:manager alice:developer` (one or several per argument) -> members, in order."""
    if prompt_dir is not None and not prompt_dir.is_dir():
        raise SettingsError(f"--prompt-dir {prompt_dir} is not a directory: give the folder "
                            f"that holds ROLE.md files")
    prompts = roles(prompt_dir)
    members: list[Member] = []
    for spec in (word for arg in specs for word in arg.split()):
        name, colon, role = spec.partition(":")
        if not colon or not role:
            raise SettingsError(f"bad agent {spec!r}: write NAME:ROLE, e.g. alice:developer")
        if not NAME_PATTERN.match(name):
            raise SettingsError(f"bad agent name {name!r} in {spec!r}: {NAME_HINT}")
        if not NAME_PATTERN.match(role):
            raise SettingsError(f"bad role {role!r} in {spec!r}: {NAME_HINT}")
        if any(member.name == name for member in members):
            raise SettingsError(f"agent {name!r} is named twice: every agent needs its own name")
        if role not in prompts:
            where = f"--prompt-dir {prompt_dir}" if prompt_dir else "a folder given as --prompt-dir"
            raise SettingsError(
                f"no prompt for role {role!r} (agent {name}): write {role}.md in {where}, "
                f"or use one of the roles {', '.join(sorted(prompts))}")
        members.append(Member(name, role, prompts[role]))
    if not members:
        raise SettingsError("no agents: name them as NAME:ROLE, e.g. "
                            "bridge team carol:manager alice:developer bob:developer")
    return tuple(members)


def find_claude(given: str | None) -> str:
    """The Claude Code executable: --claude PATH, else `claude` on PATH."""
    wanted = given or "claude"
    found = shutil.which(wanted)
    if found is None:
        if given:
            raise BridgeError(f"--claude {given}: no such executable; give the path of the "
                              f"Claude Code CLI (`which claude` shows it)")
        raise BridgeError("Claude Code (`claude`) is not on PATH: install it (npm install -g "
                          "@anthropic-ai/claude-code), log in once by running `claude`, or "
                          "give its path with --claude PATH")
    return str(Path(found).absolute())


def bridge_command() -> list[str]:
    """How the agents' MCP servers and the tail pane run this very bridge."""
    script = Path(sys.executable).with_name("bridge")  # the venv's entry point
    if os.access(script, os.X_OK):
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "bridge"]


@dataclass(frozen=True)
class Team:
    members: tuple[Member, ...]
    room: str
    session: str
    claude: str
    workdir: Path
    bridge: tuple[str, ...]
    tmux: str = "tmux"
    channel: bool = False  # also load bridge as a development channel (no session inbox)

    def mcp_config(self, member: Member) -> str:
        server = {"type": "stdio", "command": self.bridge[0],
                  "args": [*self.bridge[1:], "serve", "--name", member.name,
                           "--role", member.role, "--room", self.room]}
        return json.dumps({"mcpServers": {"bridge": server}}, separators=(",", ":"))

    def claude_command(self, member: Member) -> list[str]:
        return [
            self.claude, "--name", member.name,
            # only this bridge: a `bridge` the user registered (with another name) must not
            # shadow it
            "--mcp-config", self.mcp_config(member), "--strict-mcp-config",
            # the session inbox needs no flag; before 2.1.224 only the channel can push
            *(["--dangerously-load-development-channels", "server:bridge"]
              if self.channel else []),
            # messaging is the team's job: no permission prompt for each bridge tool call
            "--allowedTools", "mcp__bridge",
            "--append-system-prompt-file", str(member.prompt),
            "--append-system-prompt", self.identity(member),
        ]

    def identity(self, member: Member) -> str:
        # Said here, not only in bridge's MCP instructions: a conversation whose first turn a
        # pushed message starts (an inbox post, or a channel push) may never get those
        # (Claude Code 2.1.328 keeps the system prompt of the first request), nor the list
        # of MCP tools.
        team = ", ".join(f"{m.name} ({m.role})" for m in self.members)
        return (f"You are {member.name}, the {member.role}, in bridge room {self.room}. "
                f"The team: {team}. Your bridge tools are mcp__bridge__send_message, "
                f"mcp__bridge__list_participants, mcp__bridge__read_messages and "
                f"mcp__bridge__set_status; if they are not in your tool list, load them with "
                f"ToolSearch.")

    def tail_command(self) -> list[str]:
        return [*self.bridge, "tail", "--room", self.room]

    def _tmux(self, *args: str) -> list[str]:
        return [self.tmux, "-L", self.session, *args]

    def _pane(self, label: str, role: str) -> list[str]:
        # set-option -p right after new-session/split-window applies to the new pane
        return [";", "set-option", "-p", "@bridge_agent", label,
                ";", "set-option", "-p", "@bridge_role", role]

    def commands(self) -> list[list[str]]:
        """The tmux commands that build the session, in order."""
        window = f"{self.session}:{WINDOW}"
        first, *others = self.members
        commands = [self._tmux(
            # set before any pane exists, so a Claude Code that exits at once stays readable
            "set-option", "-g", "remain-on-exit", "on",
            ";", "set-option", "-g", "pane-border-status", "top",
            ";", "set-option", "-g", "pane-border-format", " #{@bridge_agent} #{@bridge_role} ",
            ";", "new-session", "-d", "-s", self.session, "-n", WINDOW, "-x", "240", "-y", "60",
            # the command as separate arguments (tmux >= 3.0): run as is, no shell quoting
            "-c", str(self.workdir), *self.claude_command(first),
            *self._pane(first.name, first.role))]
        panes = [(m.name, m.role, self.claude_command(m)) for m in others]
        panes.append(("tail", f"room {self.room}", self.tail_command()))
        for label, role, command in panes:
            commands.append(self._tmux(
                "split-window", "-t", window, "-c", str(self.workdir), *command,
                *self._pane(label, role),
                ";", "select-layout", "-t", window, "tiled"))
        commands.append(self._tmux("select-pane", "-t", f"{window}.0"))
        return commands

    def attach_command(self) -> list[str]:
        return self._tmux("attach-session", "-t", self.session)

    def stop_command(self) -> list[str]:
        return self._tmux("kill-server")

    def is_running(self) -> bool:
        # any session on our socket: panes of a running tmux server get its old environment
        done = subprocess.run(self._tmux("list-sessions"),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=TMUX_TIMEOUT, check=False)
        return done.returncode == 0

    def start(self) -> None:
        if self.is_running():
            raise BridgeError(
                f"a team already runs in tmux session {self.session}: watch it with "
                f"`{shlex.join(self.attach_command())}`, stop it with "
                f"`{shlex.join(self.stop_command())}`, or pick another --session")
        for command in self.commands():
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=TMUX_TIMEOUT, check=False)
            if done.returncode != 0:
                subprocess.run(self.stop_command(), stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=TMUX_TIMEOUT, check=False)
                raise BridgeError(
                    f"tmux failed (exit {done.returncode}): {done.stderr.strip() or '?'}; "
                    f"the command was: {shlex.join(command)}")


def build(
    specs: Sequence[str], *, room: str, session: str | None, claude: str | None,
    workdir: str | None, prompt_dir: str | None, dry_run: bool,
    channel: bool = False,
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
    if dry_run:  # show the commands even where Claude Code is not installed yet
        found = shutil.which(claude or "claude")
        executable = str(Path(found).absolute()) if found else (claude or "claude")
    else:
        executable = find_claude(claude)
    return Team(members, room, session, executable, folder, tuple(bridge_command()),
                tmux or "tmux", channel)


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
        return ("messages arrive through the session inbox, or the development channel on "
                "Claude Code before 2.1.224 (each pane asks once to confirm loading it)")
    return ("messages arrive through the session inbox (Claude Code 2.1.224 or newer; "
            "--channel for older)")


def confirm(team: Team) -> str:
    """What a person must answer in the panes before the team can work."""
    if team.channel:
        return ("Each Claude Code asks once to confirm loading the development channel (and, "
                "in a new folder, whether you trust it): press Enter in each pane. ")
    return ("In a folder it has not seen, each Claude Code asks whether you trust it: press "
            "Enter in each pane. ")


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
           attach: bool | None) -> int:
    """`bridge team`: build the team from ``specs`` (NAME:ROLE) and start it, or with
    ``dry_run`` print the commands. A failure to start is a BridgeError."""
    try:
        team = build(specs, room=room, session=session, claude=claude, workdir=workdir,
                     prompt_dir=prompt_dir, dry_run=dry_run, channel=channel)
        return run(team, dry_run=dry_run, attach=attach)
    except BrokenPipeError:  # `bridge team --dry-run ... | head`: the CLI ends quietly
        raise
    except (OSError, subprocess.SubprocessError) as e:
        raise BridgeError(f"cannot start the team: {e}") from e
