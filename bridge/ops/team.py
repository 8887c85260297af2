"""`bridge team`: a team of interactive Claude Codes (and Codexes) on one machine, in one tmux
session.

Each agent gets one pane. An agent NAME:ROLE (or NAME:ROLE:claude) runs Claude Code with
bridge as its MCP server (`bridge serve --name NAME --role ROLE --room ROOM`) and its role
prompt appended to the system prompt. Messages reach it through Claude Code's session inbox
(2.1.224 and later): no flag, no dialog. `--channel` adds
`--dangerously-load-development-channels server:bridge` for older versions, and each pane
then asks to confirm it once. An agent NAME:ROLE:codex runs OpenAI's Codex CLI with a Codex
home of its own (bridge/ops/codex_home.py), whose config.toml registers the same `bridge
serve`, and its role prompt as the first prompt: its first bridge tool call tells bridge the
session's thread, and from then on messages wake it through `codex queue`. An agent
NAME:ROLE:opencode runs OpenCode's TUI with a port of its own, which bridge pushes into
(bridge/ops/opencode_team.py). One more pane runs
`bridge tail`. The tmux server is a dedicated one (`tmux -L SESSION`), started by this
command, so every pane inherits this command's environment (ANTHROPIC_BASE_URL,
ANTHROPIC_API_KEY, BRIDGE_REDIS_URL, ...): an already running tmux server would keep its own.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bridge import codex
from bridge.errors import BridgeError, SettingsError
from bridge.ops import codex_home, opencode_team
from bridge.redis.embedded import EmbeddedRedis
from bridge.room.keys import NAME_PATTERN

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
SESSION_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # tmux forbids ':' and '.' in targets
WINDOW = "team"
NAME_HINT = "use 1-32 of a-z 0-9 _ . - starting with a letter or digit"
TMUX_TIMEOUT = 30.0
CLIENTS = ("claude", "codex", "opencode")  # the first is the default
SPEC_HINT = "write NAME:ROLE or NAME:ROLE:CLIENT, e.g. alice:developer or dave:developer:codex"
BRIDGE_TOOLS = ("send_message", "list_participants", "read_messages", "set_status", "task",
                "tasks", "claims")
PROMPT_FILE = "bridge-first-prompt.md"  # in a Codex agent's home


@dataclass(frozen=True)
class Member:
    name: str
    role: str
    prompt: Path  # Claude Code: appended to its system prompt; Codex: its first prompt
    client: str = "claude"


def roles(prompt_dir: Path | None) -> dict[str, Path]:
    """Role name -> prompt file; a --prompt-dir file overrides the built-in one."""
    found = {path.stem: path for path in sorted(PROMPTS.glob("*.md"))}
    if prompt_dir is not None:
        found |= {path.stem: path.resolve() for path in sorted(prompt_dir.glob("*.md"))}
    return found


def parse_members(specs: Iterable[str], prompt_dir: Path | None = None) -> tuple[Member, ...]:
    """`carol:manager alice:developer dave:developer:codex` (one or several per argument) ->
    members, in order."""
    if prompt_dir is not None and not prompt_dir.is_dir():
        raise SettingsError(f"--prompt-dir {prompt_dir} is not a directory: give the folder "
                            f"that holds ROLE.md files")
    prompts = roles(prompt_dir)
    members: list[Member] = []
    for spec in (word for arg in specs for word in arg.split()):
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise SettingsError(f"bad agent {spec!r}: {SPEC_HINT}")
        name, role, client = (*parts, CLIENTS[0]) if len(parts) == 2 else parts
        if client not in CLIENTS:
            raise SettingsError(f"bad client {client!r} in {spec!r}: use claude (Claude Code, "
                                f"the default), codex (OpenAI's Codex CLI) or opencode "
                                f"(OpenCode); a Gemini CLI joins by hand (docs/clients.md)")
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
        members.append(Member(name, role, prompts[role], client))
    if not members:
        raise SettingsError("no agents: name them as NAME:ROLE (or NAME:ROLE:codex), e.g. "
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


def find_codex(given: str | None) -> str:
    """The Codex CLI: --codex PATH, else `codex` on PATH."""
    wanted = given or "codex"
    found = shutil.which(wanted)
    if found is None:
        if given:
            raise BridgeError(f"--codex {given}: no such executable; give the path of the "
                              f"Codex CLI (`which codex` shows it)")
        raise BridgeError("Codex (`codex`) is not on PATH, and an agent is NAME:ROLE:codex: "
                          "install it (npm install -g @openai/codex), log in once by running "
                          "`codex`, or give its path with --codex PATH")
    return str(Path(found).absolute())


def codex_homes() -> Path:
    """Where the Codex agents' homes live: beside the embedded Redis's data (BRIDGE_DATA_DIR,
    else XDG_DATA_HOME/bridge or ~/.local/share/bridge), one per room and name, kept from one
    team to the next (its sessions, and the daemon's copy of Codex)."""
    return EmbeddedRedis.for_user().data_dir / "codex"


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
    codex: str = "codex"
    homes: Path = Path("codex")  # the Codex agents' homes: homes/ROOM/NAME
    passed: tuple[str, ...] = ("CODEX_HOME",)  # what the Codex agents' bridges get (env_vars)
    opencode: str = "opencode"
    opencode_folders: Path = Path("opencode")  # the OpenCode agents' folders: ROOM/NAME
    ports: tuple[tuple[str, int], ...] = ()  # an OpenCode agent's TUI port, by name

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

    def codex_home(self, member: Member) -> Path:
        return self.homes / self.room / member.name

    def codex_config(self, member: Member, base: dict[str, object]) -> dict[str, object]:
        """The config.toml of a Codex agent's home: ``base`` (the user's own) with this bridge
        as its only MCP server, its tools approved, and the work folder trusted."""
        entry = codex_home.server_entry(
            self.bridge, ["serve", "--name", member.name, "--role", member.role,
                          "--room", self.room],
            # Codex gives a server an allow-list of its environment; these are passed too
            self.passed,
            # the codex that queues into this session: the one this pane runs (unless
            # BRIDGE_CODEX_BIN is set, and passed)
            {} if "BRIDGE_CODEX_BIN" in self.passed else {"BRIDGE_CODEX_BIN": self.codex})
        return codex_home.agent_config(base, entry, self.workdir)

    def codex_command(self, member: Member) -> list[str]:
        # the first prompt is many lines: read from the home (written by prepare), so that
        # the command stays one line in --dry-run and in ps
        home = self.codex_home(member)
        return ["env", f"CODEX_HOME={home}", "sh", "-c", 'exec "$0" "$(cat "$1")"',
                self.codex, str(home / PROMPT_FILE)]

    def first_prompt(self, member: Member) -> str:
        # Codex has no flag that appends to its system prompt; the role comes as the first
        # prompt, and the model's first bridge tool call (list_participants, asked for here)
        # tells bridge which thread to wake
        return (f"{self.identity(member)}\n\n{member.prompt.read_text(encoding='utf-8').strip()}"
                f"\n\nStart now: call list_participants once (that also tells bridge where to "
                f"deliver your teammates' messages), then work as your role says.")

    def opencode_folder(self, member: Member) -> Path:
        return self.opencode_folders / self.room / member.name

    def command(self, member: Member) -> list[str]:
        if member.client == "opencode":
            return opencode_team.command(self.opencode, self.opencode_folder(member),
                                         dict(self.ports)[member.name])
        return self.codex_command(member) if member.client == "codex" else \
            self.claude_command(member)

    def prepare_opencode(self, member: Member) -> Path:
        """An OpenCode agent's folder, made ready: its entry for bridge and first prompt."""
        folder = self.opencode_folder(member)
        opencode_team.prepare(folder, opencode_team.config(self.bridge, [
            "serve", "--name", member.name, "--role", member.role, "--room", self.room]),
            self.first_prompt(member))
        return folder

    def prepare(self, member: Member) -> Path:
        """A Codex agent's home, made ready: config.toml written, the user's login linked,
        the daemon of an earlier team stopped (it would keep that team's environment and
        bridge)."""
        home = self.codex_home(member)
        user = codex.home()
        base = codex_home.merged(codex_home.read(home / codex_home.CONFIG),
                                 codex_home.read(user / codex_home.CONFIG))
        codex_home.write(home, self.codex_config(member, base))
        (home / PROMPT_FILE).write_text(self.first_prompt(member), encoding="utf-8")
        codex_home.link_login(home, user)
        if (home / "app-server-daemon" / "daemon.pid").exists():
            subprocess.run([self.codex, "app-server", "daemon", "stop"],
                           env={**os.environ, "CODEX_HOME": str(home)},
                           stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=TMUX_TIMEOUT, check=False)
        return home

    def identity(self, member: Member) -> str:
        # Said here, not only in bridge's MCP instructions: a conversation whose first turn a
        # pushed message starts (an inbox post, or a channel push) may never get those
        # (Claude Code 2.1.328 keeps the system prompt of the first request), nor the list
        # of MCP tools.
        team = ", ".join(f"{m.name} ({m.role})" for m in self.members)
        who = f"You are {member.name}, the {member.role}, in bridge room {self.room}. " \
              f"The team: {team}. "
        if member.client == "codex":
            return who + (f"Your bridge tools are {', '.join(BRIDGE_TOOLS[:-1])} and "
                          f"{BRIDGE_TOOLS[-1]}, of the MCP server bridge (mcp__bridge).")
        if member.client == "opencode":
            names = [f"bridge_{tool}" for tool in BRIDGE_TOOLS]
            return who + f"Your bridge tools are {', '.join(names[:-1])} and {names[-1]}."
        names = [f"mcp__bridge__{tool}" for tool in BRIDGE_TOOLS]
        return who + (f"Your bridge tools are {', '.join(names[:-1])} and {names[-1]}; if they "
                      f"are not in your tool list, load them with ToolSearch.")

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
            "-c", str(self.workdir), *self.command(first),
            *self._pane(first.name, first.role))]
        panes = [(m.name, m.role, self.command(m)) for m in others]
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
        for member in self.members:
            if member.client == "codex":
                self.prepare(member)
            elif member.client == "opencode":
                self.prepare_opencode(member)
        for command in self.commands():
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=TMUX_TIMEOUT, check=False)
            if done.returncode != 0:
                subprocess.run(self.stop_command(), stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=TMUX_TIMEOUT, check=False)
                raise BridgeError(
                    f"tmux failed (exit {done.returncode}): {done.stderr.strip() or '?'}; "
                    f"the command was: {shlex.join(command)}")
