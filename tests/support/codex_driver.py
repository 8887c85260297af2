"""Run the real Codex CLI interactively, offline, against tests/support/fake_openai.py.

    python3 tests/support/codex_driver.py --codex PATH --scenario FILE [--run-dir DIR]

Stdlib only, like tests/support/claude_driver.py (whose isolate_network and load_log it reuses). A
library for tests and scripts (``Codex``: launch, step, wait_ready, type, screen, keys,
queue, the request log, the rollout, shutdown) and a CLI that runs one scenario. Exit status
0 when every expectation held, 1 when one did not, 2 when the driver itself failed; the run
directory keeps everything: per instance ``requests.jsonl`` (the fake API's log),
``probe.jsonl`` (what the logging MCP server received), ``screen.txt`` (the last screen),
``launch.sh`` (to start that Codex again by hand), ``home/.codex`` (its Codex home: config,
sessions/ with the rollout files, queue_1.sqlite) and ``driver.log``.

Each Codex gets a throwaway HOME (its Codex home is ``HOME/.codex``, the default, unless
``codex_home`` says otherwise), a work folder, its own fake API, and a config.toml that points
a custom model provider at the fake API (``wire_api = "responses"``, a fake key in
``FAKE_OPENAI_API_KEY``), never asks for approval (``approval_policy = "never"``,
``sandbox_mode = "danger-full-access"``), trusts the work folder, registers the MCP servers
(``[mcp_servers.NAME]``: command, args, env) and, given ``probe``, tests/support/codex_probe_mcp.py
as ``probe``. It runs in a private tmux server; as root, everything (the fake API, tmux and
Codex, its daemon, ``codex queue``) runs in a private network namespace that has only
loopback, so nothing can reach a real API. Codex's app-server daemon (which it starts and
which outlives the TUI) is stopped by ``shutdown``.

From a test (tests/test_codex_smoke.py does this)::

    from tests.support.codex_cli import ensure_codex
    from tests.support.codex_driver import Codex, tool_calls, turn_metadata

    turns = {"rules": [{"when": {"last_user_contains": "say hi"}, "reply": [
        {"type": "function_call", "namespace": "mcp__bridge", "name": "send_message",
         "arguments": {"to": "bob", "text": "hi"}}]}]}
    with Codex(str(ensure_codex()), str(tmp_path), turns=turns,
               mcp_servers={"bridge": {"command": BRIDGE, "args": ["serve", "--name", "alice"],
                                       "env": {"BRIDGE_REDIS_URL": url}}}) as cx:
        cx.launch()
        cx.wait_ready(90)                   # dialogs answered, the input box shown
        cx.type("say hi")                   # typed, then Enter
        cx.wait_idle(60)                    # the rollout says the turn ended
        assert tool_calls(cx.requests("main"))[0]["output"] ...
        queued = cx.queue("a message")      # codex queue --thread <its thread> --message ...
        request = cx.wait_request("a message", 30)   # the request that brings it
        assert turn_metadata(request)["turn_trigger"] == "queue"

Also: ``cx.screen()``, ``cx.keys("Escape")``, ``cx.step()`` (one look at the screen),
``cx.thread_id()``, ``cx.turns()`` (the rollout's turns and their triggers), ``cx.rollout()``,
``cx.watch_rollout()`` (when each rollout line appeared), ``cx.queue_items()`` (the rows of
queue_1.sqlite), ``cx.probe_requests("tools/call")``, ``cx.run("exec", ...)``,
``cx.write_turns(...)`` (a new script mid-run), ``cx.daemon_codex()`` (the daemon's copy of
Codex). The daemon copies Codex into ``$CODEX_HOME/packages`` (over 400 MB); shutdown deletes
it unless ``keep_packages=True``. tests/support/codex_facts.py measures docs/codex-facts.md with it.

A scenario (JSON)::

    {"timeout": 120,
     "turns": {...},                   # the fake model's script (tests/support/fake_openai.py)
     "probe": true,                    # or the probe's initialize instructions (a string)
     "mcp_servers": {"bridge": {"command": "/abs/bridge", "args": [...], "env": {...}}},
     "config": {...}, "env": {...}, "codex_args": [...],
     "steps": [{"type": "please call the tool"},       # typed at the prompt, then Enter
               {"wait_idle": 30},                       # until the turn has ended
               {"queue": "a message"},                  # codex queue --thread THIS --message
               {"wait_request": "a message", "timeout": 30},   # in what a request brings
               {"keys": ["Escape"]}, {"sleep": 1}],
     "expect": {"request_contains": ["text of some logged request"],
                "tool_calls": [{"namespace": "mcp__probe", "name": "echo",
                                "output_contains": "hi"}],
                "turn_triggers": ["user", "queue"]}}   # the rollout's turns, in order
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# as tests.support.codex_driver (pytest), or as a script (python3 tests/support/codex_driver.py)
try:
    from tests.support.claude_driver import NETNS_MARK, isolate_network, load_log
except ImportError:  # pragma: no cover - run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from claude_driver import NETNS_MARK, isolate_network, load_log  # type: ignore[no-redef]

Json = dict[str, Any]

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_OPENAI = os.path.join(HERE, "fake_openai.py")
PROBE_MCP = os.path.join(HERE, "codex_probe_mcp.py")
FAKE_KEY_ENV = "FAKE_OPENAI_API_KEY"
FAKE_KEY = "sk-fake-bridge-tests-0000000000"
FAKE_MODEL = "gpt-fake"

# Start-up dialogs (Codex 0.171): screen text -> keys that accept it. The config trusts the
# work folder, so "trust" shows only when that is not enough (e.g. a folder in a git repo).
DIALOGS = [
    ("trust", "Trust this folder?", ["Enter"]),  # "1. Trust and continue" is preselected
]
PROMPT_RE = re.compile(r"^› ", re.M)  # the input box (with its placeholder or a draft)
BUSY_TEXT = "esc to interrupt"  # the status line while a turn runs
QUEUED_RE = re.compile(r"Queued message (\S+) for thread (\S+?)\.?\s*$", re.M)


# --------------------------------------------------------------------------- config.toml


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(config: Json, prefix: str = "") -> str:
    """config.toml text: scalars and lists first, then a [table] for each dict."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in config.items()
             if not isinstance(v, dict)]
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, value in config.items():
        if isinstance(value, dict):
            name = f"{prefix}.{toml_key(key)}" if prefix else toml_key(key)
            text += f"\n[{name}]\n" + to_toml(value, name)
    return text


def merged(base: Json, extra: Json) -> Json:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- the network


class NetNs:
    """A private network namespace with only loopback, held by a sleeping process; commands
    run in it through ``prefix`` (nsenter). Inside claude_driver.isolate_network already, or
    without root, ``prefix`` is empty (``isolated`` says whether the network is private)."""

    def __init__(self) -> None:
        self.holder: subprocess.Popen[bytes] | None = None
        self.prefix: list[str] = []
        self.isolated = os.environ.get(NETNS_MARK) == "1"
        if self.isolated or os.geteuid() != 0 or not all(
                shutil.which(t) for t in ("unshare", "nsenter", "ip")):
            return
        holder = subprocess.Popen(["unshare", "-n", "sleep", "infinity"],
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while True:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{holder.pid}/ns/net") != ours:
                    break
            if holder.poll() is not None or time.monotonic() > deadline:
                holder.kill()
                holder.wait()
                return  # no namespace here (a container without CAP_SYS_ADMIN)
            time.sleep(0.01)
        self.holder = holder
        self.prefix = ["nsenter", "-t", str(holder.pid), "-n"]
        subprocess.run([*self.prefix, "ip", "link", "set", "lo", "up"], check=True)
        self.isolated = True

    def close(self) -> None:
        if self.holder is not None and self.holder.poll() is None:
            self.holder.terminate()
            self.holder.wait(5)


# --------------------------------------------------------------------------- requests


def turn_metadata(record: Json) -> Json:
    """The x-codex-turn-metadata header of a logged request (thread_id, turn_id,
    turn_trigger, ...), parsed; {} when absent."""
    try:
        return json.loads((record.get("headers") or {}).get("x-codex-turn-metadata") or "{}")
    except ValueError:
        return {}


def input_items(record: Json) -> list[Json]:
    body = record.get("body")
    items = body.get("input") if isinstance(body, dict) else None
    return [i for i in items or [] if isinstance(i, dict)]


def item_text(item: Json) -> str:
    content = item.get("output") if "output" in item else item.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def brought(record: Json) -> list[Json]:
    """The input items a request brings: those after the last one the model produced."""
    items = input_items(record)
    for i in range(len(items) - 1, -1, -1):
        item = items[i]
        if item.get("role") == "assistant" or item.get("type") in (
                "function_call", "custom_tool_call", "reasoning"):
            return items[i + 1:]
    return items


def user_texts(record: Json) -> list[str]:
    """The text of every user message of a request, in order (the environment context too)."""
    return [item_text(i) for i in input_items(record)
            if i.get("type", "message") == "message" and i.get("role") == "user"]


def tool_calls(records: list[Json]) -> list[Json]:
    """Every function call the model made (from the requests that carry it back), with its
    output: ``namespace``, ``name``, ``arguments``, ``call_id``, ``output``, ``seq``."""
    calls: dict[str, Json] = {}
    for record in records:
        for item in input_items(record):
            if item.get("type") == "function_call":
                calls.setdefault(item.get("call_id", ""), {
                    "namespace": item.get("namespace"), "name": item.get("name"),
                    "arguments": item.get("arguments"), "call_id": item.get("call_id"),
                    "output": None, "seq": record.get("seq")})
            elif item.get("type") == "function_call_output":
                call = calls.get(item.get("call_id", ""))
                if call is not None and call["output"] is None:
                    call["output"] = item_text(item)
    return list(calls.values())


@dataclass
class Queued:
    """What one ``codex queue`` did: its exit status, output, the queued item's id, and when
    it started and ended (epoch seconds, the fake API's clock)."""
    returncode: int
    stdout: str
    stderr: str
    started: float
    ended: float
    item_id: str | None
    thread: str


# --------------------------------------------------------------------------- one Codex


class Codex:
    """One interactive Codex in its own tmux server, HOME, fake API and (as root) network
    namespace. ``with Codex(...) as cx:`` shuts it down (daemon included) at the end."""

    _count = 0

    def __init__(self, codex: str, run_dir: str, *, name: str = "codex",
                 turns: Json | None = None, mcp_servers: dict[str, Json] | None = None,
                 probe: bool | str = False, env: dict[str, str] | None = None,
                 config: Json | None = None, codex_args: list[str] | tuple[str, ...] = (),
                 codex_home: str | None = None, netns: NetNs | None = None,
                 size: tuple[int, int] = (200, 50), keep_packages: bool = False) -> None:
        Codex._count += 1
        self.codex = os.path.abspath(codex)
        self.name = name
        self.dir = os.path.abspath(os.path.join(run_dir, name))
        self.home = os.path.join(self.dir, "home")
        self.work = os.path.join(self.dir, "work")
        self.codex_home = os.path.abspath(codex_home) if codex_home else os.path.join(
            self.home, ".codex")
        for d in (self.home, self.work, self.codex_home):
            os.makedirs(d, exist_ok=True)
        self.own_netns = netns is None
        self.netns = netns or NetNs()
        self.size = size
        self.keep_packages = keep_packages
        self.tmux_socket = f"bridge-codex-{os.getpid()}-{Codex._count}"
        self.tmux_started = False
        self.launched_at = 0.0
        self.pressed: dict[str, float] = {}
        self.processes: list[subprocess.Popen[Any]] = []
        self.write_turns(turns or {})
        self.port = self.start_api()
        servers = dict(mcp_servers or {})
        if probe:
            args = [PROBE_MCP, "--log", self.probe_path]
            if isinstance(probe, str):
                args += ["--instructions", probe]
            servers["probe"] = {"command": sys.executable, "args": args}
        self.mcp_servers = servers
        projects = {self.work: {"trust_level": "trusted"}}
        root = git_root(self.work)
        if root:
            projects[root] = {"trust_level": "trusted"}
        self.config = merged({
            "model": FAKE_MODEL, "model_provider": "fake", "approval_policy": "never",
            "sandbox_mode": "danger-full-access", "check_for_update_on_startup": False,
            "model_providers": {"fake": {
                "name": "fake", "base_url": f"http://127.0.0.1:{self.port}/v1",
                "wire_api": "responses", "env_key": FAKE_KEY_ENV,
                "request_max_retries": 0, "stream_max_retries": 0}},
            "analytics": {"enabled": False},
            "projects": projects,
            "mcp_servers": servers,
        }, config or {})
        with open(os.path.join(self.codex_home, "config.toml"), "w") as f:
            f.write(to_toml(self.config))
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.home,
                    "TERM": "xterm-256color", "LANG": "C.UTF-8",
                    "USER": os.environ.get("USER", "root"), FAKE_KEY_ENV: FAKE_KEY}
        if codex_home:
            self.env["CODEX_HOME"] = self.codex_home
        self.env.update(env or {})
        self.codex_args = list(codex_args)
        self.say(f"{name}: fake API on port {self.port}; network "
                 f"{'loopback only' if self.netns.isolated else 'THE HOST (not root?)'}")

    # ---- paths ------------------------------------------------------------------------------

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    @property
    def log(self) -> str:
        return self.path("requests.jsonl")

    @property
    def probe_path(self) -> str:
        return self.path("probe.jsonl")

    @property
    def exit_file(self) -> str:
        return self.path("codex.exit")

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        with open(self.path("driver.log"), "a") as f:
            f.write(line + "\n")

    # ---- set-up -----------------------------------------------------------------------------

    def write_turns(self, turns: Json) -> None:
        """Replace the fake model's script (it is re-read on every request)."""
        with open(self.path("turns.json.tmp"), "w") as f:
            json.dump(turns, f, indent=1)
        os.replace(self.path("turns.json.tmp"), self.path("turns.json"))

    def start_api(self) -> int:
        port_file = self.path("api.port")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(port_file)
        with open(self.path("fake_openai.out"), "w") as out:
            api = subprocess.Popen([*self.netns.prefix, sys.executable, FAKE_OPENAI,
                                    "--port", "0", "--port-file", port_file, "--log", self.log,
                                    "--script", self.path("turns.json")],
                                   stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        self.processes.append(api)
        deadline = time.monotonic() + 20
        while not os.path.exists(port_file):
            if time.monotonic() > deadline or api.poll() is not None:
                raise RuntimeError(f"{self.name}: the fake API did not start; see "
                                   f"{self.path('fake_openai.out')}")
            time.sleep(0.05)
        with open(port_file) as f:
            return int(f.read())

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.tmux_socket, *args], capture_output=True,
                              text=True, check=False)
        return done.stdout if done.returncode == 0 else ""

    def launch(self) -> None:
        """Start ``codex`` in a tmux pane (it stays after Codex exits, for its last screen)."""
        launcher = self.path("launch.sh")
        with open(launcher, "w") as f:
            f.write(f"#!/bin/bash\ncd {shlex.quote(self.work)}\nenv -i "
                    + " ".join(shlex.quote(f"{k}={v}") for k, v in self.env.items())
                    + " \\\n  " + shlex.join([self.codex, *self.codex_args])
                    + f"\necho $? >{shlex.quote(self.exit_file)}\n")
        os.chmod(launcher, 0o755)
        width, height = self.size
        subprocess.run([*self.netns.prefix, "tmux", "-L", self.tmux_socket, "new-session",
                        "-d", "-s", self.name, "-x", str(width), "-y", str(height),
                        f"bash {shlex.quote(launcher)}; sleep 86400"], check=True)
        self.tmux_started = True
        self.launched_at = time.monotonic()
        self.say(f"{self.name}: launched; watch with: tmux -L {self.tmux_socket} attach -r "
                 f"-t {self.name}")

    # ---- the screen -------------------------------------------------------------------------

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.tmux("send-keys", "-t", self.name, key)
            time.sleep(0.2)  # a TUI reads keys one frame at a time

    def type(self, text: str, enter: bool = True) -> None:
        """Type ``text`` into the input box (literally), then Enter."""
        self.say(f"{self.name}: typing {text!r}")
        self.tmux("send-keys", "-t", self.name, "-l", text)
        if enter:
            time.sleep(0.3)  # keys right after a burst would count as part of a paste
            self.keys("Enter")

    def exited(self) -> bool:
        return os.path.exists(self.exit_file)

    def step(self) -> str:
        """Answer a dialog on the screen; say what the screen shows: ``dialog:NAME``,
        ``exited``, ``busy`` (a turn runs), ``prompt`` (the input box) or ``starting``."""
        if self.exited():
            return "exited"
        screen = self.screen()
        for name, text, keys in DIALOGS:
            if text in screen:
                if time.monotonic() - self.pressed.get(name, 0) > 2:  # not while it closes
                    self.say(f"{self.name}: dialog {name!r}: {keys}")
                    self.pressed[name] = time.monotonic()
                    self.keys(*keys)
                return f"dialog:{name}"
        if BUSY_TEXT in screen.lower():
            return "busy"
        return "prompt" if PROMPT_RE.search(screen) else "starting"

    def probe_ready(self) -> bool:
        """The probe server has listed its tools (true when there is no probe)."""
        if "probe" not in self.mcp_servers:
            return True
        return any(r.get("event") == "request"
                   and (r.get("message") or {}).get("method") == "tools/list"
                   for r in self.probe_log())

    def wait_ready(self, timeout: float = 60, settle: float = 1.0,
                   ready: Callable[[Codex], bool] | None = None) -> None:
        """Answer dialogs until the input box has shown for ``settle`` seconds with nothing
        over it, the probe (if any) has listed its tools and ``ready(self)`` holds."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        while True:
            state = self.step()
            if state == "exited":
                raise RuntimeError(f"{self.name}: Codex exited at start-up\n{self.diagnose()}")
            since = (since or time.monotonic()) if state == "prompt" else None
            if since and time.monotonic() - since >= settle and self.probe_ready() and (
                    ready is None or ready(self)):
                self.say(f"{self.name}: ready after "
                         f"{time.monotonic() - self.launched_at:.1f}s")
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: not ready after {timeout:.0f}s\n"
                                   f"{self.diagnose()}")
            time.sleep(0.2)

    # ---- the fake API's log -----------------------------------------------------------------

    def requests(self, kind: str | None = None) -> list[Json]:
        """The logged requests (``kind``: main, side, models, unknown; None for all)."""
        return [r for r in load_log(self.log) if kind is None or r.get("kind") == kind]

    def wait_request(self, check: Callable[[Json], bool] | str, timeout: float = 30,
                     after_seq: int = 0, kind: str | None = "main") -> Json:
        """The first logged request after ``after_seq`` for which ``check`` holds (a string:
        it is in what the request brings); TimeoutError at the deadline."""
        if isinstance(check, str):
            needle = check
            check = lambda r: any(needle in item_text(i) for i in brought(r))  # noqa: E731
        deadline = time.monotonic() + timeout
        while True:
            for record in self.requests(kind):
                if record.get("seq", 0) > after_seq and check(record):
                    return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no such request after {timeout:.0f}s\n"
                                   f"{self.diagnose()}")
            time.sleep(0.01)

    def last_seq(self) -> int:
        records = self.requests(None)
        return max((r.get("seq", 0) for r in records), default=0)

    def thread_id(self) -> str | None:
        """This session's thread: from the last turn's request, else the newest rollout file,
        else the thread writer lock the TUI takes at start."""
        for record in reversed(self.requests("main")):
            thread = (record.get("headers") or {}).get("thread-id")
            if thread:
                return str(thread)
        files = self.rollout_files()
        if files:  # rollout-2026-12-07T18-06-19-<thread uuid>.jsonl
            return "-".join(os.path.basename(files[-1])[:-len(".jsonl")].split("-")[-5:])
        locks = os.path.join(self.codex_home, "thread-writer-locks")
        with contextlib.suppress(OSError):
            for name in sorted(os.listdir(locks)):
                if name.endswith(".lock") and not name.startswith("."):
                    return name[:-len(".lock")]
        return None

    # ---- codex queue ------------------------------------------------------------------------

    def queue(self, message: str, thread: str | None = None, *, resume: bool = False,
              env: dict[str, str] | None = None, args: list[str] | tuple[str, ...] = (),
              binary: str | None = None, timeout: float = 60) -> Queued:
        """Run ``codex queue --thread THREAD --message MESSAGE`` as this Codex's user would
        (its environment, in its network namespace and work folder); ``env`` replaces
        variables (e.g. another HOME); ``binary``: another codex than the one launched
        (e.g. native_codex(), without the Node launcher)."""
        thread = thread or self.thread_id()
        if not thread:
            raise RuntimeError(f"{self.name}: no thread yet to queue into")
        command = [binary or self.codex, "queue", "--thread", thread, "--message", message,
                   *args]
        if resume:
            command.append("--resume")
        started = time.time()
        done = subprocess.run([*self.netns.prefix, *command], capture_output=True, text=True,
                              timeout=timeout, cwd=self.work, stdin=subprocess.DEVNULL,
                              env=dict(self.env, **(env or {})))
        ended = time.time()
        match = QUEUED_RE.search(done.stdout)
        self.say(f"{self.name}: codex queue -> exit {done.returncode} in "
                 f"{ended - started:.3f}s: {(done.stdout + done.stderr).strip()[:300]}")
        return Queued(done.returncode, done.stdout, done.stderr, started, ended,
                      match.group(1) if match else None, thread)

    def run(self, *args: str, background: bool = False, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.Popen[str] | subprocess.CompletedProcess[str]:
        """Run ``codex ARGS`` (e.g. ``exec PROMPT``) as this Codex's user, in its network
        namespace and work folder, ``env`` replacing variables. ``background``: a Popen whose
        output goes to files named after it in the instance's folder (stopped by shutdown)."""
        command = [*self.netns.prefix, self.codex, *args]
        full_env = dict(self.env, **(env or {}))
        self.say(f"{self.name}: running codex {shlex.join(args)}")
        if not background:
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  cwd=self.work, stdin=subprocess.DEVNULL, env=full_env)
        label = re.sub(r"\W+", "-", "-".join(args[:1]))
        n = len(self.processes)
        with open(self.path(f"run{n}-{label}.out"), "w") as out, \
                open(self.path(f"run{n}-{label}.err"), "w") as err:
            process = subprocess.Popen(command, stdout=out, stderr=err, text=True,
                                       cwd=self.work, stdin=subprocess.DEVNULL, env=full_env)
        self.processes.append(process)  # type: ignore[arg-type]
        return process

    def queue_items(self) -> list[Json]:
        """The rows of $CODEX_HOME/queue_1.sqlite's queued_items (messages not run yet)."""
        path = os.path.join(self.codex_home, "queue_1.sqlite")
        if not os.path.exists(path):
            return []
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute(
                "SELECT * FROM queued_items ORDER BY thread_id, queue_order")]
        finally:
            connection.close()

    # ---- the rollout (sessions/YYYY/MM/DD/rollout-...-THREAD.jsonl) -------------------------

    def rollout_files(self) -> list[str]:
        found = []
        for root, _, files in os.walk(os.path.join(self.codex_home, "sessions")):
            found += [os.path.join(root, f) for f in files if f.endswith(".jsonl")]
        return sorted(found, key=os.path.getmtime)

    def rollout(self, thread: str | None = None) -> list[Json]:
        """The records of the thread's rollout file (the newest one when ``thread`` is None)."""
        files = self.rollout_files()
        if thread:
            files = [f for f in files if f.endswith(f"-{thread}.jsonl")]
        return load_log(files[-1]) if files else []

    def turns(self, thread: str | None = None) -> list[Json]:
        """The turns of the rollout: ``turn_id``, ``trigger``, ``started`` (its task_started
        record's timestamp) and ``ended`` (task_complete or turn_aborted; None while it
        runs)."""
        turns: dict[str, Json] = {}
        for record in self.rollout(thread):
            payload = record.get("payload") or {}
            kind = payload.get("type") if record.get("type") == "event_msg" else None
            if kind == "task_started":
                turn_id = payload.get("turn_id")
                turns[turn_id] = {"turn_id": turn_id, "started": record.get("timestamp"),
                                  "trigger": (payload.get("turn_attribution") or {}).get(
                                      "turn_trigger"), "ended": None, "how": None}
            elif kind in ("task_complete", "turn_aborted") and payload.get("turn_id") in turns:
                turns[payload["turn_id"]].update(ended=record.get("timestamp"), how=kind)
        return list(turns.values())

    def idle(self, turns: int = 1) -> bool:
        """The rollout has at least ``turns`` turns, and every one has ended."""
        seen = self.turns()
        return len(seen) >= turns and all(t["ended"] for t in seen)

    def wait_idle(self, timeout: float = 30, turns: int = 1) -> None:
        """Until the rollout has at least ``turns`` turns and none runs."""
        deadline = time.monotonic() + timeout
        while not self.idle(turns):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: a turn still runs after {timeout:.0f}s\n"
                                   f"{self.diagnose()}")
            time.sleep(0.05)

    def watch_rollout(self, interval: float = 0.001) -> RolloutWatch:
        """Start noting when each line of the rollout files first appears (``stop()`` it)."""
        return RolloutWatch(self, interval)

    # ---- the probe MCP server ---------------------------------------------------------------

    def probe_log(self) -> list[Json]:
        return load_log(self.probe_path)

    def probe_requests(self, method: str | None = None) -> list[Json]:
        """The JSON-RPC messages the probe received (``method``: only those)."""
        return [r["message"] for r in self.probe_log() if r.get("event") == "request"
                and (method is None or (r.get("message") or {}).get("method") == method)]

    # ---- the daemon -------------------------------------------------------------------------

    def pid_file(self, name: str) -> int | None:
        try:
            with open(os.path.join(self.codex_home, "app-server-daemon", name)) as f:
                return int(json.load(f)["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def daemon_pid(self) -> int | None:
        return self.pid_file("daemon.pid")

    def daemon_codex(self) -> str:
        """The daemon's own copy of Codex (it may not exist yet)."""
        return os.path.join(self.codex_home, "packages", "app-server-daemon", "current", "bin",
                            "codex")

    def our_processes(self) -> list[int]:
        """Processes run from this Codex home's daemon package (the daemon, its updater)."""
        mark = os.path.join(self.codex_home, "packages") + os.sep
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read().split(b"\0")[0].decode(errors="replace").startswith(mark):
                    pids.append(int(entry))
        return pids

    # ---- the end ----------------------------------------------------------------------------

    def diagnose(self) -> str:
        screen = "\n".join(line for line in self.screen().splitlines() if line.strip())
        return (f"-- screen of {self.name}:\n{screen[-3000:]}\n-- requests: "
                f"{[(r.get('seq'), r.get('kind'), r.get('served')) for r in self.requests()]}"
                f"\n-- run dir {self.dir}")

    def shutdown(self) -> None:
        """Quit Codex, stop its daemon (and the daemon's updater), tmux, the fake API."""
        if self.tmux_started:
            with open(self.path("screen.txt"), "w") as f:
                f.write(self.screen())
            for _ in range(2):
                if self.exited():
                    break
                self.keys("C-c")
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline and not self.exited():
                    time.sleep(0.1)
            self.tmux("kill-server")
            self.tmux_started = False
        pids = {p for p in (self.pid_file("daemon.pid"), self.pid_file("daemon-updater.pid"))
                if p} | set(self.our_processes())
        pids = {p for p in pids if p in self.our_processes()}  # still ours, by its binary
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(alive(p) for p in pids):
                time.sleep(0.05)
            pids = {p for p in pids if alive(p)}
            if not pids:
                break
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self.own_netns:
            self.netns.close()
        if not self.keep_packages:  # the daemon's own copy of Codex: over 400 MB a run
            shutil.rmtree(os.path.join(self.codex_home, "packages"), ignore_errors=True)

    def __enter__(self) -> Codex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class RolloutWatch:
    """A thread that reads the rollout files every ``interval`` seconds and notes, for each
    new line, the time it was first seen: ``lines`` is a list of (epoch seconds, file,
    record). Precise to about the interval (plus the time a read takes)."""

    def __init__(self, cx: Codex, interval: float) -> None:
        self.cx, self.interval = cx, interval
        self.lines: list[tuple[float, str, Json]] = []
        self.offsets: dict[str, int] = {}
        self.partial: dict[str, bytes] = {}
        self.stopping = threading.Event()
        self.poll()  # what is there already counts as seen now
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def poll(self) -> None:
        for path in self.cx.rollout_files():
            try:
                with open(path, "rb") as f:
                    f.seek(self.offsets.get(path, 0))
                    data = f.read()
            except OSError:
                continue
            now = time.time()
            if not data:
                continue
            self.offsets[path] = self.offsets.get(path, 0) + len(data)
            data = self.partial.pop(path, b"") + data
            *complete, rest = data.split(b"\n")
            if rest:
                self.partial[path] = rest
            for line in complete:
                with contextlib.suppress(ValueError):
                    self.lines.append((now, path, json.loads(line)))

    def loop(self) -> None:
        while not self.stopping.is_set():
            self.poll()
            time.sleep(self.interval)

    def first(self, check: Callable[[Json], bool], since: float = 0) -> tuple[float, Json] | None:
        """(when it was seen, the record) of the first line seen after ``since`` for which
        ``check`` holds."""
        for seen, _, record in list(self.lines):
            if seen >= since and check(record):
                return seen, record
        return None

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)


def native_codex(launcher: str) -> str | None:
    """The native binary behind the npm launcher (node_modules/.bin/codex), if found."""
    modules = os.path.dirname(os.path.dirname(os.path.realpath(launcher)))  # node_modules/@openai
    if os.path.basename(modules) != "@openai":
        modules = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(launcher))),
                               "@openai")
    with contextlib.suppress(OSError):
        for package in sorted(os.listdir(modules)):
            vendor = os.path.join(modules, package, "vendor")
            if package.startswith("codex-") and os.path.isdir(vendor):
                for target in sorted(os.listdir(vendor)):
                    binary = os.path.join(vendor, target, "bin", "codex")
                    if os.access(binary, os.X_OK):
                        return binary
    return None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def git_root(path: str) -> str | None:
    """The git work tree that holds ``path`` (Codex's trust applies to it), if any."""
    path = os.path.abspath(path)
    while True:
        if os.path.exists(os.path.join(path, ".git")):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


# --------------------------------------------------------------------------- the CLI


def check(cx: Codex, expect: Json) -> list[tuple[bool, str]]:
    results: list[tuple[bool, str]] = []
    raw = ""
    with contextlib.suppress(OSError), open(cx.log, encoding="utf-8") as f:
        raw = f.read()
    for text in expect.get("request_contains", []):
        results.append((text in raw, f"some request contains {text!r}"))
    calls = tool_calls(cx.requests("main"))
    for want in expect.get("tool_calls", []):
        hits = [c for c in calls if c["name"] == want["name"]
                and want.get("namespace", c["namespace"]) == c["namespace"]
                and want.get("output_contains", "") in (c["output"] or "")]
        results.append((bool(hits), f"tool call {json.dumps(want)} -> " + (
            f"output {hits[0]['output'][:120]!r}" if hits
            else f"NOT seen (calls: {[(c['namespace'], c['name']) for c in calls]})")))
    if "turn_triggers" in expect:
        seen = [t["trigger"] for t in cx.turns()]
        results.append((seen == expect["turn_triggers"],
                        f"turn triggers {expect['turn_triggers']} -> {seen}"))
    return results


def run_scenario(codex: str, run_dir: str, scenario: Json) -> tuple[bool, list[tuple[bool, str]]]:
    cx = Codex(codex, run_dir, turns=scenario.get("turns"), probe=scenario.get("probe", False),
               mcp_servers=scenario.get("mcp_servers"), env=scenario.get("env"),
               config=scenario.get("config"), codex_args=scenario.get("codex_args", ()))
    print(f"run dir {run_dir}; network: "
          f"{'loopback only' if cx.netns.isolated else 'the host'}", flush=True)
    try:
        cx.launch()
        cx.wait_ready(float(scenario.get("ready_timeout", 60)))
        deadline = time.monotonic() + float(scenario.get("timeout", 120))
        for step in scenario.get("steps", []):
            left = max(1.0, deadline - time.monotonic())
            if "type" in step:
                cx.type(step["type"])
            elif "queue" in step:
                done = cx.queue(step["queue"], step.get("thread"))
                if done.returncode != 0:
                    raise RuntimeError(f"codex queue failed: {done.stdout}{done.stderr}")
            elif "wait_request" in step:
                cx.wait_request(step["wait_request"], min(left, step.get("timeout", left)))
            elif "wait_idle" in step:
                time.sleep(0.5)  # the turn's first record may not be written yet
                cx.wait_idle(min(left, float(step["wait_idle"] or left)))
            elif "keys" in step:
                cx.keys(*step["keys"])
            elif "sleep" in step:
                time.sleep(float(step["sleep"]))
            else:
                raise ValueError(f"unknown step {step}")
        time.sleep(float(scenario.get("linger", 1)))
        results = check(cx, scenario.get("expect") or {})
        if not results:
            results = [(False, "no expectations given")]
        return all(held for held, _ in results), results
    finally:
        cx.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", required=True, help="the scenario (JSON)")
    parser.add_argument("--codex", required=True, help="the codex launcher or binary")
    parser.add_argument("--run-dir", help="where everything is kept (default: a new temp dir)")
    args = parser.parse_args()
    isolate_network([sys.executable, os.path.abspath(__file__), *sys.argv[1:]])
    if not shutil.which("tmux"):
        raise SystemExit("tmux is needed (apt-get install -y tmux)")
    with open(args.scenario) as f:
        scenario = json.load(f)
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="codex_driver_")
    status = 2
    try:
        ok, results = run_scenario(args.codex, run_dir, scenario)
        for held, what in results:
            print(f"  [{'ok' if held else 'FAIL'}] {what}")
        status = 0 if ok else 1
    except Exception as e:  # a driver error: reported, exit 2
        traceback.print_exc()
        print(f"DRIVER ERROR: {type(e).__name__}: {e}")
    print(f"\nresult: {'PASS' if status == 0 else 'FAIL'} (exit {status}); logs in {run_dir}",
          flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
