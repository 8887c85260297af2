"""`bridge team`: a tmux session with one Claude Code per agent (Codex for NAME:ROLE:codex)
plus `bridge tail`.

The fast tests drive the real CLI as a subprocess: `--dry-run` output, bad input, and a real
tmux session whose panes run a stand-in executable that records how it was started (for a
Codex agent also the Codex home bridge team wrote for it). The end to end test starts three
real interactive Claude Codes (the npm package, pinned) with `bridge team`, all pointed at one
scripted fake Messages API by ANTHROPIC_BASE_URL, with no channel flag and no dialog to
confirm; the scripted manager asks both developers to agree on an endpoint, both developers'
conversations must receive that message as a bridge post in their session inbox, and the
developers' proposal and confirmation must reach each other and the manager. Another starts
a real Codex (pinned, tests/support/codex_cli.py) as NAME:ROLE:codex against the scripted fake
Responses API: the config bridge team wrote must bring its bridge into the room, and a message
must wake it and be answered, with no approval asked under `approval_policy = "on-request"`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.ops import codex_home
from tests.support.claude_code import (
    FAKE_API,
    NPM_INSTALL_TIMEOUT,
    minimal_env,
    read_tail,
    seed_home,
    wait_until,
)

BRIDGE = str(Path(sys.executable).with_name("bridge"))
PROMPTS = Path(__file__).resolve().parents[1] / "bridge" / "prompts"
TEAM = ["carol:manager", "alice:developer", "bob:developer"]
MIXED = ["carol:manager", "alice:developer", "dave:developer:codex"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BRIDGE_", "TMUX")) and k not in (
               "DISABLE_TELEMETRY", "DO_NOT_TRACK", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")}
    env.update(extra)
    return env


def team(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BRIDGE, "team", *args], env=env or clean_env(), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def dry_run_commands(stdout: str) -> list[list[str]]:
    return [shlex.split(line) for line in stdout.splitlines() if not line.startswith("#")]


def claude_commands(commands: list[list[str]], claude: str) -> dict[str, list[str]]:
    """Agent name -> the Claude Code argv inside each tmux command."""
    found = {}
    for command in commands:
        if claude in command:
            argv = command[command.index(claude):]
            argv = argv[:argv.index(";")] if ";" in argv else argv
            found[argv[argv.index("--name") + 1]] = argv
    return found


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def standin(path: Path, records: Path, name_from: str) -> Path:
    """An executable that records its argv, environment and folder as RECORDS/NAME.json (the
    agent's name: the value after --name, or ``name_from`` = "codex-home": the last part of
    CODEX_HOME), then waits."""
    path.write_text(f"""#!{sys.executable}
import json, os, sys, time
if {name_from!r} == "codex-home":
    name = os.path.basename(os.environ["CODEX_HOME"])
else:
    name = sys.argv[sys.argv.index("--name") + 1]
path = os.path.join({str(records)!r}, name + ".json")
with open(path + ".tmp", "w") as f:
    json.dump({{"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}}, f)
os.replace(path + ".tmp", path)
time.sleep(600)
""")
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------- dry run, bad input


def test_dry_run_prints_one_claude_per_agent_and_a_tail(tmp_path: Path) -> None:
    claude = tmp_path / "bin" / "claude"
    claude.parent.mkdir()
    claude.write_text("#!/bin/sh\nexit 0\n")
    claude.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    session = f"bt-dry-{os.getpid()}"
    args = ["--dry-run", "--room", "demo", "--session", session, "--claude", str(claude),
            "--workdir", str(work)]
    result = team(*args, *TEAM)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[0].endswith(
        "messages arrive through the session inbox (Claude Code 2.1.224 or newer; --channel "
        "for older)")
    commands = dry_run_commands(result.stdout)
    assert all(Path(c[0]).name == "tmux" and c[1:3] == ["-L", session] for c in commands)
    assert commands[0][commands[0].index("new-session"):][:5] == [
        "new-session", "-d", "-s", session, "-n"]
    assert commands[-1][3:] == ["attach-session", "-t", session]

    agents = claude_commands(commands, str(claude))
    assert list(agents) == ["carol", "alice", "bob"]  # in the order given; carol opens
    for spec in TEAM:
        name, role = spec.split(":")
        argv = agents[name]
        server = json.loads(flag(argv, "--mcp-config"))["mcpServers"]["bridge"]
        assert server["command"] == BRIDGE
        assert server["args"] == ["serve", "--name", name, "--role", role, "--room", "demo"]
        assert "env" not in server  # BRIDGE_REDIS_URL etc. come from the environment
        assert "--strict-mcp-config" in argv
        # the session inbox needs no flag and shows no dialog
        assert "--dangerously-load-development-channels" not in argv
        assert flag(argv, "--allowedTools") == "mcp__bridge"
        prompt = Path(flag(argv, "--append-system-prompt-file"))
        assert prompt == PROMPTS / f"{role}.md" and prompt.is_file()
        identity = flag(argv, "--append-system-prompt")
        assert identity.startswith(f"You are {name}, the {role}, in bridge room demo.")
        assert "carol (manager), alice (developer), bob (developer)" in identity
    # every pane runs in the work dir and is labelled with its agent
    panes = [c for c in commands if "new-session" in c or "split-window" in c]
    assert len(panes) == 4
    assert all(flag(c, "-c") == str(work) for c in panes)
    labels = [flag(c, "@bridge_agent") for c in panes]
    assert labels == ["carol", "alice", "bob", "tail"]
    tail = panes[-1]
    assert tail[tail.index(BRIDGE):tail.index(";")] == [BRIDGE, "tail", "--room", "demo"]

    # the same team given as one --agents string (what `make team AGENTS=...` passes)
    again = team(*args, "--agents", " ".join(TEAM))
    assert again.returncode == 0 and again.stdout == result.stdout
    # a dry run starts nothing
    assert subprocess.run(["tmux", "-L", session, "has-session"], capture_output=True,
                          check=False).returncode != 0


def test_channel_adds_the_development_channel_flag_for_old_claude_codes() -> None:
    result = team("--dry-run", "--channel", "--claude", "/bin/sh", *TEAM)
    assert result.returncode == 0, result.stderr
    assert "the development channel on Claude Code before 2.1.224" in result.stdout
    agents = claude_commands(dry_run_commands(result.stdout), "/bin/sh")
    assert list(agents) == ["carol", "alice", "bob"]
    for argv in agents.values():
        assert flag(argv, "--dangerously-load-development-channels") == "server:bridge"
        assert flag(argv, "--allowedTools") == "mcp__bridge"


def test_telemetry_off_is_a_warning_only_with_the_channel() -> None:
    env = clean_env(DISABLE_TELEMETRY="1", DO_NOT_TRACK="1")
    result = team("--dry-run", "--channel", "a:developer", env=env)
    assert result.returncode == 0
    assert result.stderr.startswith("bridge: warning: DISABLE_TELEMETRY and DO_NOT_TRACK are "
                                    "set: Claude Code then switches channels off")
    # the session inbox works with telemetry off: nothing to warn about
    inbox = team("--dry-run", "a:developer", env=env)
    assert inbox.returncode == 0 and inbox.stderr == ""


def test_a_prompt_dir_adds_and_overrides_roles(tmp_path: Path) -> None:
    (tmp_path / "tester.md").write_text("# Your role: tester\n")
    (tmp_path / "developer.md").write_text("# Your role: developer, our way\n")
    result = team("--dry-run", "--claude", "/bin/sh", "--prompt-dir", str(tmp_path),
                  "dana:tester", "alice:developer", "carol:manager")
    assert result.returncode == 0, result.stderr
    agents = claude_commands(dry_run_commands(result.stdout), "/bin/sh")
    assert flag(agents["dana"], "--append-system-prompt-file") == str(tmp_path / "tester.md")
    assert flag(agents["alice"], "--append-system-prompt-file") == str(tmp_path / "developer.md")
    assert flag(agents["carol"], "--append-system-prompt-file") == str(PROMPTS / "manager.md")


@pytest.mark.parametrize(("args", "needles"), [
    (["alice"], ["bad agent 'alice'", "NAME:ROLE"]),
    (["alice:"], ["bad agent 'alice:'", "NAME:ROLE"]),
    (["dave:developer:gemini"], ["bad client 'gemini' in 'dave:developer:gemini'",
                                 "use claude (Claude Code, the default), codex",
                                 "or opencode", "a Gemini CLI joins by hand"]),
    (["dave:developer:"], ["bad agent 'dave:developer:'", "NAME:ROLE:CLIENT"]),
    (["a:b:c:d"], ["bad agent 'a:b:c:d'", "dave:developer:codex"]),
    (["dave:tester:codex"], ["no prompt for role 'tester' (agent dave)"]),
    (["Alice:developer"], ["bad agent name 'Alice'", "a-z 0-9"]),
    (["alice:dev/../x"], ["bad role"]),
    (["alice:developer", "alice:manager"], ["'alice' is named twice"]),
    (["dana:tester"], ["no prompt for role 'tester' (agent dana)", "--prompt-dir",
                       "developer, manager"]),
    ([], ["no agents", "NAME:ROLE"]),
    (["--session", "a:b", "alice:developer"], ["bad --session 'a:b'"]),
    (["--room", "Bad Room", "alice:developer"], ["--room", "BRIDGE_ROOM"]),
    (["--prompt-dir", "/nonexistent/prompts", "alice:developer"], ["is not a directory"]),
    (["--workdir", "/nonexistent/work", "alice:developer"], ["is not a directory"]),
])
def test_bad_input_is_one_clear_line(args: list[str], needles: list[str]) -> None:
    for mode in (["--dry-run"], ["--no-attach"]):
        result = team(*mode, *args)
        assert result.returncode == 1, (mode, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bridge: "), result.stderr
        for needle in needles:
            assert needle in lines[0], lines[0]
        assert result.stdout == ""


def test_missing_claude_is_a_clear_error_and_starts_nothing(tmux: str) -> None:
    session = f"bt-noclaude-{os.getpid()}"
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and not (Path(p) / "claude").exists())
    no_claude = team("--no-attach", "--session", session, *TEAM, env=clean_env(PATH=path))
    assert no_claude.returncode == 1
    assert no_claude.stderr.startswith("bridge: Claude Code (`claude`) is not on PATH: install "
                                       "it"), no_claude.stderr
    assert "--claude PATH" in no_claude.stderr
    wrong = team("--no-attach", "--session", session, "--claude", "/nonexistent/claude", *TEAM)
    assert wrong.returncode == 1
    assert wrong.stderr.strip() == ("bridge: --claude /nonexistent/claude: no such executable; "
                                    "give the path of the Claude Code CLI (`which claude` "
                                    "shows it)")
    assert subprocess.run([tmux, "-L", session, "has-session"], capture_output=True,
                          check=False).returncode != 0


def test_the_role_prompts_state_the_protocol() -> None:
    # deploy/prompts (used by the Docker images) is the same folder, through a symlink
    deploy = PROMPTS.parents[1] / "deploy" / "prompts"
    assert deploy.is_symlink() and deploy.resolve() == PROMPTS
    manager = (PROMPTS / "manager.md").read_text()
    developer = (PROMPTS / "developer.md").read_text()
    for text in (manager, developer):
        # a message arrives as an inbox post, a post queued into Codex (which looks typed by
        # the user), or (the fallback) a channel block; room changes ride along and are not
        # answered; answers go through bridge, not a messaging tool built into the client
        for needle in ("`[bridge] message from NAME", '<channel source="bridge"',
                       "it may look as if your user typed it", "since your last message:",
                       "do not answer them", "send_message", "list_participants",
                       "read_messages", "set_status", "MCP server `bridge`",
                       "Claude Code's `SendMessage`", "Codex's\n`send_message_to_thread`",
                       "CONTRACT AGREED:", "DONE:", 'kind="joined"'):
            assert needle in text, needle
        # both clients follow them: no tool named the way only one client names it
        for claude_only in ("mcp__bridge__", "ToolSearch", "--append-system-prompt"):
            assert claude_only not in text, claude_only
    # the board: the manager creates and assigns, the developers claim files before editing
    # and close their tasks; board events ride along like the rest
    assert 'task(action="create", title=..., detail=..., assignee="NAME")' in manager
    assert "`waits_for`" in manager and "you are told as each of them is done" in manager
    assert 'claims(action="claim", paths=' in developer and "before you edit" in developer
    assert 'task(action="update", id="t1", status="done")' in developer
    assert 'claims(action="release")' in developer
    for text in (manager, developer):
        assert '`"board"` event' in text and "[task t1] assigned to you by" in text
    # both call a bridge tool at once: Codex learns its thread from the first call
    assert "Call `list_participants` first" in manager
    assert "When you start, call `list_participants` once" in developer
    assert "set_status" in manager and "set_status" in developer
    # the manager assigns by name and has the developers agree before they code
    assert 'to=["alice", "bob"]' in manager and "**before** they write code" in manager
    # the developers settle every detail of the contract with each other first
    for needle in ("before you write code", "endpoint paths", "JSON shapes", "status codes",
                   "CORS", "peer"):
        assert needle in developer, needle


def test_the_docs_team_commands_are_valid() -> None:
    section = (PROMPTS.parents[1] / "docs" / "team.md").read_text()
    commands = [shlex.split(line) for line in section.splitlines()
                if line.startswith("bridge team ")]
    assert commands, "no `bridge team` command in docs/team.md"
    for command in commands:
        result = team(*command[2:], "--dry-run")
        assert result.returncode == 0, (command, result.stderr)
        # the session docs/team.md tells people to attach to and to kill
        assert dry_run_commands(result.stdout)[-1][1:] == [
            "-L", "bridge-main", "attach-session", "-t", "bridge-main"]
    assert "`tmux -L bridge-main attach -t bridge-main`" in section
    assert "`tmux -L bridge-main kill-server`" in section


def test_dry_run_gives_a_codex_agent_its_own_codex_home(tmp_path: Path) -> None:
    codex = tmp_path / "bin" / "codex"
    codex.parent.mkdir()
    codex.write_text("#!/bin/sh\nexit 0\n")
    codex.chmod(0o755)
    data = tmp_path / "data"
    env = clean_env(BRIDGE_DATA_DIR=str(data))
    result = team("--dry-run", "--channel", "--room", "demo", "--claude", "/bin/sh", "--codex",
                  str(codex), *MIXED, env=env)
    assert result.returncode == 0, result.stderr
    home = data / "codex" / "demo" / "dave"
    assert result.stdout.splitlines()[0].endswith(
        "a Codex agent's through codex queue, once its first bridge tool call named its "
        f"session; its Codex home (config.toml and bridge-first-prompt.md written at start): "
        f"dave in {home}")
    commands = dry_run_commands(result.stdout)
    agents = claude_commands(commands, "/bin/sh")
    assert list(agents) == ["carol", "alice"]  # the Claude Codes, as before
    for argv in agents.values():
        assert flag(argv, "--dangerously-load-development-channels") == "server:bridge"
    panes = [c for c in commands if "new-session" in c or "split-window" in c]
    assert [flag(c, "@bridge_agent") for c in panes] == ["carol", "alice", "dave", "tail"]
    dave = panes[2]
    argv = dave[dave.index("env"):dave.index(";")]
    # Codex with its own home; the many-line first prompt is read from a file there
    assert argv == ["env", f"CODEX_HOME={home}", "sh", "-c", 'exec "$0" "$(cat "$1")"',
                    str(codex), str(home / "bridge-first-prompt.md")]
    assert "--dangerously-load-development-channels" not in dave  # Claude Code's only
    assert not data.exists()  # a dry run writes nothing


def test_a_codex_agent_needs_codex(tmux: str, tmp_path: Path) -> None:
    session = f"bt-nocodex-{os.getpid()}"
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and not (Path(p) / "codex").exists())
    env = clean_env(PATH=path, BRIDGE_DATA_DIR=str(tmp_path / "data"))
    missing = team("--no-attach", "--session", session, "--claude", "/bin/sh", *MIXED, env=env)
    assert missing.returncode == 1
    assert missing.stderr.startswith("bridge: Codex (`codex`) is not on PATH, and an agent is "
                                     "NAME:ROLE:codex: install it"), missing.stderr
    assert "--codex PATH" in missing.stderr
    wrong = team("--no-attach", "--session", session, "--claude", "/bin/sh", "--codex",
                 "/nonexistent/codex", *MIXED, env=env)
    assert wrong.stderr.strip() == ("bridge: --codex /nonexistent/codex: no such executable; "
                                    "give the path of the Codex CLI (`which codex` shows it)")
    # a team without a Codex agent does not look for one
    claude_only = team("--dry-run", "--claude", "/bin/sh", "--codex", "/nonexistent/codex",
                       *TEAM, env=env)
    assert claude_only.returncode == 0, claude_only.stderr
    assert subprocess.run([tmux, "-L", session, "has-session"], capture_output=True,
                          check=False).returncode != 0
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("data", [
    {"a": 1, "f": 1.5, "big": 1e20, "inf": float("inf"), "yes": True, "s": 'q"\\\x7f\n\té😀',
     "when": __import__("datetime").date(2026, 1, 2), "list": [[1, 2], ["x"], [{"k": 1}]]},
    {"model": "m", "empty": {}, "t": {"u": {"v": 1, "w": {"x": [1]}}},
     "projects": {"/a b/c": {"trust_level": "trusted"}}, "dotted.key": {"q r": "s"}},
])
def test_codex_config_toml_reads_back_as_written(data: dict[str, Any]) -> None:
    import tomllib

    assert tomllib.loads(codex_home.to_toml(data)) == data


def test_a_codex_agent_config_keeps_the_users_settings_but_not_their_servers(
        tmp_path: Path) -> None:
    repo, work = tmp_path / "repo", tmp_path / "repo" / "app"
    (repo / ".git").mkdir(parents=True)
    work.mkdir()
    base = {"model": "gpt-x", "approval_policy": "on-request",
            "projects": {"/elsewhere": {"trust_level": "untrusted"}},
            "mcp_servers": {"other": {"command": "other-server"}, "bridge": {
                "command": "an-old-bridge", "tools": {"send_message": {"approval_mode":
                                                                        "prompt"}}}}}
    entry = codex_home.server_entry(["/venv/bin/bridge"], ["serve", "--name", "dave"],
                                    ["CODEX_HOME", "BRIDGE_REDIS_URL"], {"BRIDGE_CODEX_BIN": "/c"})
    config = codex_home.agent_config(base, entry, work)
    assert config["model"] == "gpt-x" and config["approval_policy"] == "on-request"
    # only this bridge (as --strict-mcp-config for Claude Code), its tools approved
    assert config["mcp_servers"] == {"bridge": {
        "command": "/venv/bin/bridge", "args": ["serve", "--name", "dave"],
        "env": {"BRIDGE_CODEX_BIN": "/c"}, "env_vars": ["CODEX_HOME", "BRIDGE_REDIS_URL"],
        # the first prompt waits for bridge (an optional server gets 1 s)
        "required": True, "startup_timeout_sec": 30,
        "default_tools_approval_mode": "approve",
        # a per-tool setting for bridge stays: here, review each send
        "tools": {"send_message": {"approval_mode": "prompt"}}}}
    # the work folder trusted, and its repository's root, where Codex records trust
    assert config["projects"] == {"/elsewhere": {"trust_level": "untrusted"},
                                  str(work): {"trust_level": "trusted"},
                                  str(repo): {"trust_level": "trusted"}}
    assert base["mcp_servers"]["bridge"]["command"] == "an-old-bridge"  # not changed
    env = {"BRIDGE_REDIS_URL": "redis://x", "BRIDGE_ROOM": "", "XDG_RUNTIME_DIR": "/run/u",
           "HOME": "/h", "BRIDGE_SECRET_FILE": "/s"}
    assert codex_home.passed_vars(env) == ["CODEX_HOME", "BRIDGE_REDIS_URL",
                                           "BRIDGE_SECRET_FILE", "XDG_RUNTIME_DIR"]


# --------------------------------------------------------------------------- a real tmux session


@dataclass
class TmuxTeam:
    """A `bridge team` session on its own tmux socket, with a private embedded Redis."""

    session: str
    runtime: Path
    env: dict[str, str]
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.session, *args], capture_output=True,
                              text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)

    def panes(self) -> dict[str, tuple[str, bool]]:
        """Label -> (pane id, dead)."""
        listed = self.tmux("list-panes", "-t", f"{self.session}:team", "-F",
                           "#{pane_id}\t#{@bridge_agent}\t#{pane_dead}")
        rows = [line.split("\t") for line in listed.stdout.splitlines()]
        return {label: (pane, dead == "1") for pane, label, dead in rows}

    def screen(self, pane: str) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", pane).stdout

    def screens(self) -> str:
        return "\n".join(f"--- pane {label} (dead={dead}) ---\n{self.screen(pane).rstrip()}"
                         for label, (pane, dead) in self.panes().items())

    def who(self, room: str) -> set[str]:
        result = subprocess.run([BRIDGE, "who", "--json", "--room", room], env=self.env,
                                capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            return set()
        return {agent["name"] for agent in json.loads(result.stdout)["agents"]}

    def stop(self) -> None:
        self.tmux("kill-server")
        for process in self.started:
            if process.poll() is None:
                process.terminate()
                process.wait(10)
        # the embedded Redis that the agents and the tail pane started, by its pid file
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((self.runtime / "redis.pid").read_text()), signal.SIGTERM)
        shutil.rmtree(self.runtime, ignore_errors=True)


@pytest.fixture
def tmux_team(tmux: str, tmp_path: Path) -> Iterator[TmuxTeam]:
    # a short runtime dir: the embedded Redis's unix socket path must fit in 108 bytes
    runtime = Path(tempfile.mkdtemp(prefix="bt-", dir="/tmp"))
    env = clean_env(BRIDGE_RUNTIME_DIR=str(runtime), BRIDGE_DATA_DIR=str(tmp_path / "data"))
    handle = TmuxTeam(f"bt-{os.getpid()}-{tmp_path.name[-12:]}".replace(".", "-"), runtime, env)
    try:
        yield handle
    finally:
        handle.stop()


def test_panes_run_each_agent_with_the_environment_passed_through(
    tmux_team: TmuxTeam, tmp_path: Path
) -> None:
    # A stand-in for Claude Code records its argv, environment and folder, then waits.
    records = tmp_path / "records"
    records.mkdir()
    standin = tmp_path / "claude-standin"
    standin.write_text(f"""#!{sys.executable}
import json, os, sys, time
name = sys.argv[sys.argv.index("--name") + 1]
path = os.path.join(os.environ["STANDIN_RECORDS"], name + ".json")
with open(path + ".tmp", "w") as f:
    json.dump({{"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}}, f)
os.replace(path + ".tmp", path)
time.sleep(600)
""")
    standin.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    tmux_team.env |= {"STANDIN_RECORDS": str(records),
                      "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/passed-through"}
    args = ["--no-attach", "--room", "panes", "--session", tmux_team.session, "--claude",
            str(standin), "--workdir", str(work), *TEAM]
    started = team(*args, env=tmux_team.env)
    assert started.returncode == 0, started.stderr
    assert f"tmux -L {tmux_team.session} attach-session -t {tmux_team.session}" in started.stdout

    def recorded() -> dict[str, Any] | None:
        found = {p.stem: json.loads(p.read_text()) for p in records.glob("*.json")}
        return found if len(found) == 3 else None

    seen = wait_until("the three agents' panes to start", recorded, 30, tmux_team.screens)
    for spec in TEAM:
        name, role = spec.split(":")
        record = seen[name]
        assert record["cwd"] == str(work)
        assert record["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9/passed-through"
        assert record["env"]["BRIDGE_RUNTIME_DIR"] == str(tmux_team.runtime)
        argv = record["argv"]
        server = json.loads(flag(argv, "--mcp-config"))["mcpServers"]["bridge"]
        assert server["args"] == ["serve", "--name", name, "--role", role, "--room", "panes"]
        assert flag(argv, "--append-system-prompt-file") == str(PROMPTS / f"{role}.md")

    panes = tmux_team.panes()
    assert sorted(panes) == ["alice", "bob", "carol", "tail"]
    assert not any(dead for _, dead in panes.values()), tmux_team.screens()
    # the tail pane follows the room on the same (embedded) Redis the agents would use
    wait_until("bridge tail to follow room panes",
               lambda: "following room panes on unix://" + str(tmux_team.runtime)
               in tmux_team.screen(panes["tail"][0]), 30, tmux_team.screens)

    # a second team on the same session is refused, and the first one is left alone
    again = team(*args, env=tmux_team.env)
    assert again.returncode == 1
    assert again.stderr.startswith(f"bridge: a team already runs in tmux session "
                                   f"{tmux_team.session}: watch it with"), again.stderr
    assert tmux_team.panes() == panes


def test_a_codex_pane_starts_codex_with_the_home_bridge_team_wrote(
    tmux_team: TmuxTeam, tmp_path: Path
) -> None:
    """dave:developer:codex: a pane runs `codex FIRST-PROMPT` with CODEX_HOME set to a home
    whose config.toml registers this bridge for dave (the room's settings named in env_vars,
    bridge's tools approved, the work folder trusted), keeps the user's own settings but not
    their MCP servers, and links their login."""
    import tomllib

    records = tmp_path / "records"
    records.mkdir()
    claude = standin(tmp_path / "claude-standin", records, "--name")
    codex = standin(tmp_path / "codex-standin", records, "codex-home")
    work, user = tmp_path / "work", tmp_path / "user-codex"
    work.mkdir()
    user.mkdir()
    (user / "config.toml").write_text(
        'model = "gpt-test"\napproval_policy = "on-request"\n'
        '[mcp_servers.mine]\ncommand = "/bin/false"\n')
    (user / "auth.json").write_text('{"OPENAI_API_KEY": "sk-test"}')
    tmux_team.env |= {"CODEX_HOME": str(user), "BRIDGE_REDIS_URL": "",
                      "BRIDGE_LOG_LEVEL": "DEBUG"}
    started = team("--no-attach", "--room", "mixed", "--session", tmux_team.session,
                   "--claude", str(claude), "--codex", str(codex), "--workdir", str(work),
                   *MIXED, env=tmux_team.env)
    assert started.returncode == 0, started.stderr
    assert "Each Codex starts with its role prompt and calls list_participants" in started.stdout

    seen = wait_until("the three agents' panes to start", lambda: (
        found if len(found := {p.stem: json.loads(p.read_text())
                               for p in records.glob("*.json")}) == 3 else None),
        30, tmux_team.screens)
    assert flag(seen["alice"]["argv"], "--append-system-prompt-file") == str(
        PROMPTS / "developer.md")
    dave = seen["dave"]
    home = Path(tmux_team.env["BRIDGE_DATA_DIR"]) / "codex" / "mixed" / "dave"
    assert dave["env"]["CODEX_HOME"] == str(home) and dave["cwd"] == str(work)
    assert dave["env"]["BRIDGE_RUNTIME_DIR"] == str(tmux_team.runtime)  # passed through
    # its first prompt: who it is, its role, and a bridge tool call at once
    prompt = dave["argv"][0]
    assert dave["argv"] == [prompt] and prompt == (home / "bridge-first-prompt.md").read_text()
    assert prompt.startswith("You are dave, the developer, in bridge room mixed. The team: "
                             "carol (manager), alice (developer), dave (developer). Your bridge "
                             "tools are send_message, list_participants, read_messages, "
                             "set_status, task, tasks and claims, of the MCP server bridge "
                             "(mcp__bridge).")
    assert (PROMPTS / "developer.md").read_text().strip() in prompt
    assert prompt.endswith("Start now: call list_participants once (that also tells bridge "
                           "where to deliver your teammates' messages), then work as your "
                           "role says.")
    assert "mcp__bridge__" not in prompt and "ToolSearch" not in prompt

    config = tomllib.loads((home / "config.toml").read_text())
    assert config["model"] == "gpt-test" and config["approval_policy"] == "on-request"
    assert config["mcp_servers"] == {"bridge": {
        "command": BRIDGE, "args": ["serve", "--name", "dave", "--role", "developer",
                                    "--room", "mixed"],
        "env": {"BRIDGE_CODEX_BIN": str(codex)},
        # the values stay in the environment (Codex passes only an allow-list otherwise)
        "env_vars": ["CODEX_HOME", "BRIDGE_DATA_DIR", "BRIDGE_LOG_LEVEL",
                     "BRIDGE_RUNTIME_DIR"],
        "required": True, "startup_timeout_sec": 30, "default_tools_approval_mode": "approve"}}
    assert config["projects"] == {str(work): {"trust_level": "trusted"}}
    assert (home / "config.toml").stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o700
    # the user's login, shared (Codex rewrites auth.json in place)
    assert (home / "auth.json").is_symlink()
    assert (home / "auth.json").resolve() == (user / "auth.json").resolve()
    assert sorted(tmux_team.panes()) == ["alice", "carol", "dave", "tail"]

    # the next team keeps what Codex wrote into its config (a notice shown, say), takes the
    # user's settings anew, and keeps a login of the agent's own
    tmux_team.tmux("kill-server")
    with (home / "config.toml").open("a") as f:
        f.write('\n[notice]\nseen = true\n')
    (user / "config.toml").write_text('model = "gpt-newer"\n')
    (home / "auth.json").unlink()
    (home / "auth.json").write_text("{}")
    for record in records.glob("*.json"):
        record.unlink()
    again = team("--no-attach", "--room", "mixed", "--session", tmux_team.session,
                 "--claude", str(claude), "--codex", str(codex), "--workdir", str(work),
                 *MIXED, env=tmux_team.env)
    assert again.returncode == 0, again.stderr
    wait_until("dave's pane again", lambda: (records / "dave.json").exists(), 30,
               tmux_team.screens)
    config = tomllib.loads((home / "config.toml").read_text())
    assert config["model"] == "gpt-newer" and config["notice"] == {"seen": True}
    assert config["mcp_servers"]["bridge"]["default_tools_approval_mode"] == "approve"
    assert not (home / "auth.json").is_symlink()


# --------------------------------------------------------------------------- end to end

KICKOFF = "KICKOFF-TEAM-E2E: build a todo app, a backend and a frontend"
ASK = ("alice (backend) and bob (frontend): before you write code, agree between you on "
       "GET /api/todos: the response JSON shape, status codes, and the CORS origin. "
       "TOKEN-7F3A")
# one message of an inbox post (bridge/mcp/posts.py): its header line, then its text quoted
POST_RE = re.compile(r"^(?:\[bridge\] message from|from) ([a-z0-9][a-z0-9_.-]*)(?: \([^)\n]*\))?"
                     r", id ([0-9]+-[0-9]+)(?:, reply to [^:\n]+)?:\n((?:> .*(?:\n|$))+)", re.M)
IDENTITY_RE = re.compile(r"You are ([a-z0-9_.-]+), the ([a-z0-9_.-]+), in bridge room e2e\.")
DIALOGS = {  # screen text -> keys, as tests/support/claude_driver.py answers them
    "Yes, I trust this folder": ["Enter"],
    "Detected a custom API key": ["Up", "Enter"],
}
CHANNEL_DIALOG = "I am using this for local development"  # must not show: no flag
READY_RE = re.compile(r"^\s*❯\s*$", re.M)  # the empty input prompt


PROPOSAL = "PROPOSAL: GET /api/todos -> 200 [{id, title, done}], CORS origin localhost:5173"
AGREED = "CONTRACT AGREED: GET /api/todos -> 200 [{id, title, done}], CORS localhost:5173"


def script() -> dict[str, Any]:
    """The fake model, told apart by the identity bridge team puts in each system prompt: the
    manager, given the kickoff, messages both developers; alice, given that, proposes the
    contract to bob; bob confirms it to alice and the manager. Otherwise everyone says OK."""
    def send(to: str | list[str], text: str) -> list[dict[str, Any]]:
        return [{"type": "tool_use", "name": "mcp__bridge__send_message",
                 "input": {"to": to, "text": text}}]

    return {"default_reply": "OK", "side_reply": "OK", "rules": [
        {"id": "assign", "when": {"last_user_contains": "KICKOFF-TEAM-E2E",
                                  "body_contains": "You are carol, the manager"},
         "reply": send(["alice", "bob"], ASK)},
        {"id": "propose", "when": {"last_user_contains": "TOKEN-7F3A",
                                   "body_contains": "You are alice, the developer"},
         "reply": send("bob", PROPOSAL)},
        {"id": "agree", "when": {"last_user_contains": "PROPOSAL:",
                                 "body_contains": "You are bob, the developer"},
         "reply": send(["alice", "carol"], AGREED)},
    ]}


def requests(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    found = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record.get("body"), dict) and "messages" in record["body"]:
                found.append(record)
    return found


def conversations(log: Path) -> dict[str, list[dict[str, Any]]]:
    """Agent name (from its system prompt) -> the requests its Claude Code sent."""
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for record in requests(log):
        match = IDENTITY_RE.search(json.dumps(record["body"].get("system"), ensure_ascii=False))
        if match:
            by_agent.setdefault(match.group(1), []).append(record)
    return by_agent


def posts(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(sender, message id, text) of every bridge message posted to the session inbox, as
    the request's user turns show them."""
    found = []
    for message in record["body"]["messages"]:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        blocks = [content] if isinstance(content, str) else [
            b.get("text", "") for b in content or [] if isinstance(b, dict)]
        for text in blocks:
            if not isinstance(text, str) or "[bridge] " not in text:
                continue
            found += [(m.group(1), m.group(2),
                       "\n".join(line[2:] for line in m.group(3).rstrip("\n").split("\n")))
                      for m in POST_RE.finditer(text)]
    return found


def received(records: list[dict[str, Any]], sender: str, text: str) -> dict[str, str] | None:
    """`sender`'s message `text` in this conversation ({"from", "message_id"}), once there."""
    return next(({"from": who, "message_id": message_id} for record in records
                 for who, message_id, content in posts(record)
                 if who == sender and text in content), None)


def the_ask(records: list[dict[str, Any]]) -> dict[str, str] | None:
    return received(records, "carol", ASK)


def tool_results(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [block for record in records for message in record["body"]["messages"]
            if message.get("role") == "user" and isinstance(message.get("content"), list)
            for block in message["content"]
            if isinstance(block, dict) and block.get("type") == "tool_result"]


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 600)
@pytest.mark.slow
def test_a_scripted_manager_reaches_both_developers_through_bridge_team(
    claude_bin: Path, tmux_team: TmuxTeam, tmp_path: Path
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    seed_home(home, work)  # no channels flag cached: the session inbox needs none
    (tmp_path / "turns.json").write_text(json.dumps(script(), indent=1))
    log, port_file = tmp_path / "requests.jsonl", tmp_path / "api.port"
    api_out = open(tmp_path / "fake_api.out", "w")  # noqa: SIM115 (closed with the process)
    tmux_team.started.append(subprocess.Popen(
        [sys.executable, str(FAKE_API), "--port", "0", "--port-file", str(port_file), "--log",
         str(log), "--script", str(tmp_path / "turns.json")],
        stdout=api_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    port = wait_until("the fake Messages API", lambda: port_file.exists()
                      and port_file.read_text().strip(), 20,
                      lambda: read_tail(tmp_path / "fake_api.out"))
    # The driver's environment (throwaway HOME, no telemetry), with the fake API as the
    # model: bridge team must hand it to every pane.
    tmux_team.env = minimal_env(home) | {
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
        "BRIDGE_RUNTIME_DIR": tmux_team.env["BRIDGE_RUNTIME_DIR"],
        "BRIDGE_DATA_DIR": tmux_team.env["BRIDGE_DATA_DIR"],
    }

    def diagnose() -> str:
        agents = {name: len(records) for name, records in conversations(log).items()}
        return (f"requests per agent: {agents}\n{tmux_team.screens()}\n--- last requests ---\n"
                f"{read_tail(log, 3)[-3000:]}")

    started = team("--no-attach", "--room", "e2e", "--session", tmux_team.session,
                   "--claude", str(claude_bin), "--workdir", str(work), *TEAM,
                   env=tmux_team.env)
    assert started.returncode == 0, started.stderr
    # DISABLE_TELEMETRY (the driver's) switches channels off, not the inbox: no warning
    assert "warning" not in started.stderr, started.stderr
    assert "development channel" not in started.stdout, started.stdout

    # Answer each Claude Code's start-up dialogs as a person would, until all three sit at an
    # empty prompt and all three bridges are in the room. No channel, so no channel dialog.
    pressed: dict[tuple[str, str], float] = {}

    def ready() -> bool:
        panes = tmux_team.panes()
        if any(dead for _, dead in panes.values()):
            pytest.fail(f"a pane died\n{diagnose()}")
        waiting = False
        for name in ("carol", "alice", "bob"):
            pane = panes[name][0]
            screen = tmux_team.screen(pane)
            if CHANNEL_DIALOG in screen:
                pytest.fail(f"{name} asks to confirm a development channel\n{diagnose()}")
            dialog = next((text for text in DIALOGS if text in screen), None)
            if dialog:
                waiting = True
                if time.monotonic() - pressed.get((name, dialog), 0) > 3:
                    pressed[(name, dialog)] = time.monotonic()
                    for key in DIALOGS[dialog]:
                        tmux_team.tmux("send-keys", "-t", pane, key)
            elif not READY_RE.search(screen):
                waiting = True
        return not waiting and tmux_team.who("e2e") == {"carol", "alice", "bob"}

    wait_until("three Claude Codes ready, with their bridges in room e2e", ready, 240, diagnose)
    carol = tmux_team.panes()["carol"][0]
    tmux_team.tmux("send-keys", "-t", carol, "-l", KICKOFF)
    tmux_team.tmux("send-keys", "-t", carol, "Enter")

    def both_got_it() -> dict[str, list[dict[str, Any]]] | None:
        seen = conversations(log)
        return seen if all(the_ask(seen.get(name, [])) for name in ("alice", "bob")) else None

    seen = wait_until("alice's and bob's conversations to receive carol's message", both_got_it,
                      180, diagnose)
    # Each conversation is the right agent's: its role prompt and its identity, from bridge
    # team, are in its system prompt.
    for name, role in (("carol", "manager"), ("alice", "developer"), ("bob", "developer")):
        system = json.dumps(seen[name][-1]["body"]["system"], ensure_ascii=False)
        assert f"# Your role: {role}" in system, f"{name}: no {role} prompt\n{diagnose()}"
    # One message, not two: both developers saw the id that the manager's send returned.
    ids = {the_ask(seen[name])["message_id"] for name in ("alice", "bob")}  # type: ignore[index]
    assert len(ids) == 1, ids
    results = wait_until("the manager's send_message result", lambda: tool_results(
        conversations(log).get("carol", [])), 60, diagnose)
    assert not results[0].get("is_error"), results
    assert ids.pop() in json.dumps(results[0]["content"]), results
    # and the tail pane showed it to the people watching (cut to the pane's width)
    tail = tmux_team.panes()["tail"][0]
    wait_until("the tail pane to show carol's message",
               lambda: f"carol → alice,bob  {ASK[:40]}" in tmux_team.screen(tail), 30, diagnose)

    # The developers settle the contract peer to peer: alice's proposal reaches bob, and bob's
    # confirmation reaches alice and the manager.
    def settled() -> bool:
        seen = conversations(log)
        return bool(received(seen.get("bob", []), "alice", PROPOSAL)
                    and received(seen.get("alice", []), "bob", AGREED)
                    and received(seen.get("carol", []), "bob", AGREED))

    wait_until("alice's proposal at bob, and bob's CONTRACT AGREED at alice and carol",
               settled, 120, diagnose)


# --------------------------------------------------------------------------- a real Codex


@pytest.mark.slow
@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 300)
def test_a_real_codex_agent_joins_and_answers_through_bridge_team(
    tmux_team: TmuxTeam, tmp_path: Path
) -> None:
    """dave:developer:codex with the real Codex 0.171.0: Codex must accept the config.toml
    bridge team wrote; its first prompt makes the model call list_participants, which runs
    without an approval question although the user's approval_policy is on-request (bridge's
    tools are approved); boss's message wakes the idle session through codex queue, and the
    answer reaches boss. A second bridge team stops the first one's Codex daemon, whose
    bridge would otherwise stay in the room."""
    from tests.support.codex_cli import ensure_codex
    from tests.support.codex_driver import FAKE_KEY, FAKE_KEY_ENV, FAKE_OPENAI, alive, turn_metadata

    codex = ensure_codex()
    work, user = tmp_path / "work", tmp_path / "user-codex"
    work.mkdir()
    user.mkdir()
    call = {"type": "function_call", "namespace": "mcp__bridge"}
    (tmp_path / "turns.json").write_text(json.dumps({"default_reply": "OK", "rules": [
        {"id": "start", "times": -1, "when": {
            "last_user_contains": "Start now: call list_participants"},
         "reply": [call | {"name": "list_participants", "arguments": {}}]},
        {"id": "answer", "when": {"last_user_contains": "PING-DAVE"},
         "reply": [call | {"name": "send_message",
                           "arguments": {"to": "boss", "text": "PONG-FROM-DAVE"}}]}]}))
    log, port_file = tmp_path / "requests.jsonl", tmp_path / "api.port"
    api_out = open(tmp_path / "fake_openai.out", "w")  # noqa: SIM115 (closed with the process)
    tmux_team.started.append(subprocess.Popen(
        [sys.executable, FAKE_OPENAI, "--port", "0", "--port-file", str(port_file), "--log",
         str(log), "--script", str(tmp_path / "turns.json")],
        stdout=api_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    port = wait_until("the fake Responses API", lambda: port_file.exists()
                      and port_file.read_text().strip(), 20,
                      lambda: read_tail(tmp_path / "fake_openai.out"))
    # the user's own Codex config: the model (the fake), and approvals on request; bridge
    # team takes these into the agent's home
    (user / "config.toml").write_text(f"""model = "gpt-fake"
model_provider = "fake"
approval_policy = "on-request"
check_for_update_on_startup = false
[analytics]
enabled = false
[model_providers.fake]
name = "fake"
base_url = "http://127.0.0.1:{port}/v1"
wire_api = "responses"
env_key = "{FAKE_KEY_ENV}"
request_max_retries = 0
stream_max_retries = 0
""")
    tmux_team.env |= {"CODEX_HOME": str(user), FAKE_KEY_ENV: FAKE_KEY}
    home = Path(tmux_team.env["BRIDGE_DATA_DIR"]) / "codex" / "cx" / "dave"
    args = ["--no-attach", "--room", "cx", "--session", tmux_team.session, "--codex",
            str(codex), "--workdir", str(work), "dave:developer:codex"]

    def daemon_pids() -> set[int]:
        """The Codex daemon of dave's home and its updater, by their binary."""
        mark = str(home / "packages") + os.sep
        pids = set()
        for entry in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
                if argv0.decode(errors="replace").startswith(mark):
                    pids.add(int(entry))
        return pids

    def screen() -> str:
        return f"{tmux_team.screens()}\n--- requests ---\n{read_tail(log, 4)[-3000:]}"

    def asked() -> bool:
        return "to run tool" in tmux_team.screens()

    try:
        started = team(*args, env=tmux_team.env)
        assert started.returncode == 0, started.stderr

        def joined() -> bool:
            assert not asked(), f"Codex asked to approve a bridge tool\n{screen()}"
            return tmux_team.who("cx") == {"dave"}

        wait_until("dave's first prompt to bring its bridge into room cx", joined, 120, screen)
        def listed_() -> dict[str, Any] | None:
            assert not asked(), f"Codex asked to approve a bridge tool\n{screen()}"
            return next((r for r in load_requests(log)
                         if "delivery codex" in json.dumps(r["body"])), None)

        listed = wait_until("list_participants answered", listed_, 60, screen)
        assert "You are dave, the developer, in bridge room cx." in json.dumps(listed["body"])
        first = Path(f"/proc/{server_pid(home)}") if server_pid(home) else None

        sent = subprocess.run([BRIDGE, "send", "--as", "boss", "--room", "cx", "dave",
                               "PING-DAVE: which port?"], env=tmux_team.env,
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr

        def answered() -> bool:
            assert not asked(), f"Codex asked to approve a bridge tool\n{screen()}"
            history = subprocess.run([BRIDGE, "history", "--room", "cx", "--json"],
                                     env=tmux_team.env, capture_output=True, text=True,
                                     timeout=30)
            return "PONG-FROM-DAVE" in history.stdout

        wait_until("dave's answer to boss, woken by boss's message", answered, 90, screen)
        woken = next(r for r in load_requests(log) if "PING-DAVE" in json.dumps(r["body"]))
        assert turn_metadata(woken)["turn_trigger"] == "queue"  # no keystroke woke it

        # the team stopped as docs/team.md says: Codex's daemon, and the bridge it runs, stay;
        # the next bridge team stops them before its own Codex starts
        assert first is not None and first.exists()
        tmux_team.tmux("kill-server")
        assert first.exists() and daemon_pids()
        again = team(*args, env=tmux_team.env)
        assert again.returncode == 0, again.stderr
        wait_until("the first team's bridge for dave to end", lambda: not first.exists(), 30,
                   screen)
        wait_until("dave back in the room", lambda: tmux_team.who("cx") == {"dave"}, 120,
                   screen)
    finally:
        tmux_team.tmux("kill-server")
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in daemon_pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(alive(p) for p in daemon_pids()):
                time.sleep(0.1)
        shutil.rmtree(home / "packages", ignore_errors=True)  # the daemon's copy: 424 MB


def load_requests(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    found = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return [r for r in found if isinstance(r.get("body"), dict)]


def server_pid(home: Path) -> int | None:
    """The `bridge serve` that dave's Codex runs (its environment names dave's home)."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            if b"serve" in argv and f"CODEX_HOME={home}".encode() in environ:
                return int(entry)
    return None
