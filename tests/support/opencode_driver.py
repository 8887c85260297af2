"""Run the real OpenCode offline against tests/support/fake_chat.py: the TUI in a private tmux
server, or ``opencode run``; as root in a private network namespace with only loopback (with
the room's redis-server: ``Room``), so nothing can reach a real API.

Each OpenCode gets a throwaway HOME and XDG folders, a work folder whose ``opencode.json``
points a provider ``fake`` (``@ai-sdk/openai-compatible``, built into OpenCode) at its own fake
API, switches off updates, sharing and the models list, and registers the MCP servers given.
``bridge(...)`` makes the entry of a `bridge serve` named after the instance (BRIDGE_NAME in
OpenCode's environment, which its MCP servers inherit), wrapped so that its stderr (its JSON
log) lands in the instance's ``bridge.log``: ``log(event)`` reads it. ``share=`` another
instance runs a second OpenCode in the same folders (its config, storage and fake API).

    with OpenCode(str(ensure_opencode()), str(tmp_path), name="oc", netns=room.ns,
                  turns={"rules": [...]}, port=free_port()) as oc:
        oc.mcp["bridge"] = oc.bridge(room.url)
        oc.launch()                          # opencode --port PORT, in tmux
        oc.wait_ready(90, ready=lambda: room.present("oc"))
        oc.type("start")                     # typed, then Enter
        oc.wait_request("start", 60)         # the fake API's log
        oc.wait_idle(30)                     # GET /session/status on its server says so
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.support.claude_driver import load_log
from tests.support.codex_driver import NetNs, alive, merged
from tests.support.fake_chat import brought, message_text
from tests.support.mcp_client import BRIDGE

Json = dict[str, Any]

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_CHAT = os.path.join(HERE, "fake_chat.py")
READY_TEXT = "Ask anything"  # the empty prompt of a new session
QUIET_ENV = {"OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1",
             "OPENCODE_DISABLE_SHARE": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1"}


class Room:
    """A redis-server in the network namespace ``ns`` (its own, by default)."""

    def __init__(self, tmp: str, port: int, ns: NetNs | None = None) -> None:
        self.ns = ns or NetNs()
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.redis = subprocess.Popen(
            [*self.ns.prefix, shutil.which("redis-server") or "redis-server", "--port",
             str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
             tmp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.cli("ping") != "PONG":
            assert time.monotonic() < deadline and self.redis.poll() is None, \
                "redis-server did not start"
            time.sleep(0.05)

    def cli(self, *args: str) -> str:
        return subprocess.run([*self.ns.prefix, "redis-cli", "-p", str(self.port), *args],
                              capture_output=True, text=True).stdout.strip()

    def present(self, name: str) -> bool:
        return self.cli("exists", f"bridge:{{main}}:agent:{name}") == "1"

    def close(self) -> None:
        self.redis.kill()
        self.redis.wait()
        self.ns.close()


class OpenCode:
    _count = 0

    def __init__(self, binary: str, run_dir: str, *, name: str = "opencode",
                 turns: Json | None = None, netns: NetNs | None = None,
                 port: int | None = None, config: Json | None = None,
                 env: dict[str, str] | None = None, size: tuple[int, int] = (200, 50),
                 share: OpenCode | None = None) -> None:
        OpenCode._count += 1
        self.binary, self.name, self.port, self.size = binary, name, port, size
        self.share = share
        self.dir = os.path.abspath(os.path.join(run_dir, name))
        self.home = share.home if share else os.path.join(self.dir, "home")
        self.work = share.work if share else os.path.join(self.dir, "work")
        for d in (self.dir, self.home, self.work):
            os.makedirs(d, exist_ok=True)
        self.netns = netns or NetNs()
        self.own_netns = netns is None
        self.tmux_socket = f"bridge-opencode-{os.getpid()}-{OpenCode._count}"
        self.tmux_started = False
        self.processes: list[subprocess.Popen[Any]] = []
        self.mcp: dict[str, Json] = {}
        self.extra_config = config or {}
        self.requests_path = share.requests_path if share else self.path("requests.jsonl")
        if share is None:
            self.write_turns(turns or {})
        self.api_port = share.api_port if share else self.start_api()
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.home,
                    "XDG_CONFIG_HOME": f"{self.home}/.config",
                    "XDG_DATA_HOME": f"{self.home}/.local/share",
                    "XDG_CACHE_HOME": f"{self.home}/.cache",
                    "XDG_STATE_HOME": f"{self.home}/.local/state",
                    "TERM": "xterm-256color", "LANG": "C.UTF-8", **QUIET_ENV,
                    "BRIDGE_NAME": name, "BRIDGE_TEST_LOG": self.path("bridge.log"),
                    **(env or {})}

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    # ---- set-up -----------------------------------------------------------------------------

    def write_turns(self, turns: Json) -> None:
        """Replace the fake model's script (re-read on every request)."""
        with open(self.path("turns.json.tmp"), "w") as f:
            json.dump(turns, f, indent=1)
        os.replace(self.path("turns.json.tmp"), self.path("turns.json"))

    def start_api(self) -> int:
        port_file = self.path("api.port")
        with open(self.path("fake_chat.out"), "w") as out:
            api = subprocess.Popen([*self.netns.prefix, sys.executable, FAKE_CHAT, "--port", "0",
                                    "--port-file", port_file, "--log", self.requests_path,
                                    "--script", self.path("turns.json")],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.processes.append(api)
        deadline = time.monotonic() + 20
        while not os.path.exists(port_file):
            if time.monotonic() > deadline or api.poll() is not None:
                raise RuntimeError(f"{self.name}: the fake API did not start")
            time.sleep(0.05)
        with open(port_file) as f:
            return int(f.read())

    def bridge(self, redis_url: str, *args: str, **env: str) -> Json:
        """The MCP entry of `bridge serve ARGS`, its stderr kept in ``bridge.log`` of the
        instance that starts it (the wrapper execs it: OpenCode is still its parent)."""
        if os.environ.get("PYTHONPATH"):  # another tree of bridge under test
            env.setdefault("PYTHONPATH", os.environ["PYTHONPATH"])
        return {"type": "local", "enabled": True,
                "command": ["/bin/sh", "-c", 'exec "$0" "$@" 2>>"$BRIDGE_TEST_LOG"', BRIDGE[0],
                            "serve", *args],
                "environment": {"BRIDGE_REDIS_URL": redis_url, "BRIDGE_LOG_LEVEL": "DEBUG",
                                **env}}

    def write_config(self) -> None:
        if self.share:
            return
        model = {"name": "fake", "tool_call": True, "limit": {"context": 128000, "output": 4096}}
        config = merged({
            "$schema": "https://opencode.ai/config.json",
            "provider": {"fake": {"npm": "@ai-sdk/openai-compatible", "name": "fake",
                                  "options": {"baseURL": f"http://127.0.0.1:{self.api_port}/v1",
                                              "apiKey": "fake-key"},
                                  "models": {"fake-model": model}}},
            "model": "fake/fake-model", "small_model": "fake/fake-model",
            "autoupdate": False, "share": "disabled", "mcp": self.mcp}, self.extra_config)
        with open(os.path.join(self.work, "opencode.json"), "w") as f:
            json.dump(config, f, indent=1)

    # ---- running ----------------------------------------------------------------------------

    def launch(self, *args: str) -> None:
        """``opencode [--port PORT] ARGS`` in a tmux pane of its own."""
        self.write_config()
        command = [self.binary, *(["--port", str(self.port)] if self.port else []), *args]
        with open(self.path("launch.sh"), "w") as f:
            f.write(f"#!/bin/bash\ncd {shlex.quote(self.work)}\nenv -i "
                    + " ".join(shlex.quote(f"{k}={v}") for k, v in self.env.items())
                    + " \\\n  " + shlex.join(command)
                    + f"\necho $? >{shlex.quote(self.path('exit'))}\n")
        width, height = self.size
        subprocess.run([*self.netns.prefix, "tmux", "-L", self.tmux_socket, "new-session", "-d",
                        "-s", self.name, "-x", str(width), "-y", str(height),
                        f"bash {shlex.quote(self.path('launch.sh'))}; sleep 86400"], check=True)
        self.tmux_started = True

    def run(self, prompt: str, timeout: float = 120) -> subprocess.Popen[str]:
        """``opencode run PROMPT`` in the background (its output in run.out / run.err)."""
        self.write_config()
        with open(self.path("run.out"), "w") as out, open(self.path("run.err"), "w") as err:
            process = subprocess.Popen([*self.netns.prefix, self.binary, "run", prompt],
                                       cwd=self.work, env=self.env, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=err, text=True)
        self.processes.append(process)
        return process

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.tmux_socket, *args], capture_output=True,
                              text=True, check=False)
        return done.stdout if done.returncode == 0 else ""

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name)

    def type(self, text: str) -> None:
        """Type ``text`` into the prompt (literally), then Enter."""
        self.tmux("send-keys", "-t", self.name, "-l", text)
        time.sleep(0.3)  # keys right after a burst would count as part of a paste
        self.tmux("send-keys", "-t", self.name, "Enter")

    def wait_ready(self, timeout: float, ready: Callable[[], bool] = lambda: True) -> None:
        deadline = time.monotonic() + timeout
        while not (READY_TEXT in self.screen() and ready()):
            if os.path.exists(self.path("exit")) or time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: not ready after {timeout:.0f}s\n"
                                   f"{self.diagnose()}")
            time.sleep(0.1)

    def api(self, path: str, method: str = "GET") -> Any:
        """METHOD PATH on the TUI's server (from inside its network namespace): the JSON
        answer, or None."""
        code = ("import sys, urllib.request as u; sys.stdout.write(u.urlopen(u.Request("
                "sys.argv[1], method=sys.argv[2]), timeout=5).read().decode())")
        done = subprocess.run([*self.netns.prefix, sys.executable, "-c", code,
                               f"http://127.0.0.1:{self.port}{path}", method],
                              capture_output=True, text=True, timeout=30)
        with contextlib.suppress(ValueError):
            return json.loads(done.stdout) if done.returncode == 0 else None
        return None

    def wait_idle(self, timeout: float) -> None:
        """Until no session of this OpenCode is busy (GET /session/status: ``{}``)."""
        deadline = time.monotonic() + timeout
        while (status := self.api("/session/status")) is None or any(
                s.get("type") != "idle" for s in status.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: still busy after {timeout:.0f}s")
            time.sleep(0.05)

    # ---- what happened ----------------------------------------------------------------------

    def requests(self, kind: str | None = "main") -> list[Json]:
        return [r for r in load_log(self.requests_path)
                if kind is None or r.get("kind") == kind]

    def last_seq(self) -> int:
        return max((r.get("seq", 0) for r in self.requests(None)), default=0)

    def wait_request(self, check: Callable[[Json], bool] | str, timeout: float = 30,
                     after_seq: int = 0) -> Json:
        """The first main request after ``after_seq`` for which ``check`` holds (a string: it
        is in what the request brings)."""
        if isinstance(check, str):
            needle = check
            check = lambda r: needle in "\n".join(texts_brought(r))  # noqa: E731
        deadline = time.monotonic() + timeout
        while True:
            for record in self.requests():
                if record.get("seq", 0) > after_seq and check(record):
                    return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no such request after {timeout:.0f}s\n"
                                   f"{self.diagnose()}")
            time.sleep(0.01)

    def log(self, event: str | None = None) -> list[Json]:
        """The JSON lines this OpenCode's `bridge serve` logged (``event``: only those)."""
        lines = []
        with contextlib.suppress(OSError), open(self.path("bridge.log")) as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line))
        return [x for x in lines if isinstance(x, dict) and event in (None, x.get("event"))]

    def diagnose(self) -> str:
        screen = "\n".join(line for line in self.screen().splitlines() if line.strip())
        return (f"-- screen of {self.name}:\n{screen[-3000:]}\n-- requests: "
                f"{[(r.get('seq'), r.get('kind'), r.get('served')) for r in self.requests(None)]}"
                f"\n-- run dir {self.dir}")

    # ---- the end ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop OpenCode and what it started (its MCP servers), tmux, the fake API."""
        pids: list[int] = []
        if self.tmux_started:
            with open(self.path("screen.txt"), "w") as f:
                f.write(self.screen())
            panes = self.tmux("list-panes", "-a", "-F", "#{pane_pid}").split()
            pids = [p for pane in panes if pane.isdigit() for p in descendants(int(pane))]
        for process in self.processes:
            if process.poll() is None:
                pids += [process.pid, *descendants(process.pid)]
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(alive(p) for p in pids):
                time.sleep(0.05)
            pids = [p for p in pids if alive(p)]
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        if self.tmux_started:
            self.tmux("kill-server")
            self.tmux_started = False
        if self.own_netns:
            self.netns.close()

    def __enter__(self) -> OpenCode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def texts_brought(record: Json) -> list[str]:
    """The texts of the messages a logged request brings (after the model's last one)."""
    body = record.get("body")
    messages = [m for m in (body.get("messages") or []) if isinstance(m, dict)] \
        if isinstance(body, dict) else []
    return [message_text(m) for m in brought(messages)]


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (Linux: /proc/PID/task/*/children), deepest first."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    found = [*descendants(int(child)), int(child), *found]
    return found
