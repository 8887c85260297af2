"""Run real Claude Code sessions against tests/support/fake_api.py and check what reached the model.

    python3 tests/support/claude_driver.py --scenario FILE --claude PATH [--run-dir DIR]

Stdlib only: bench/inbox_limits.py uses it too, and it runs without the venv. Exit status 0
when every expectation held, 1 when one did not, 2 when the driver itself failed; the run
directory keeps everything (``summary.json``, and per instance ``requests.jsonl``,
``claude-debug.txt``, ``screen.txt``, ``launch.sh`` to start that Claude Code again by hand).

A scenario (JSON)::

    {"timeout": 150, "mode": "interactive" | "print", "negotiation": "legacy",
     "env": {...}, "growthbook": {"tengu_harbor_kite": false},
     "services": [{"name": "redis", "command": [...], "ready_tcp": 6390}],
     "instances": [{
        "name": "alice",
        "mcp_servers": {"bridge": {"command": "/abs/bridge", "args": [...], "env": {...}}},
        "channels": ["bridge"],          # --dangerously-load-development-channels (default:
                                         # every server; [] for none)
        "prompt": "say hi", "prompt_after": ["bob"],   # typed once these are up too
        "turns": {...},                  # the fake model's script (tests/support/fake_api.py)
        "env": {...}, "claude_args": [...],
        "expect": {"channel": [{"source": "bridge", "contains": "PING", "meta": {"from": "bob"}}],
                   "tool_round_trips": [{"name": "mcp__bridge__send_message",
                                         "result_contains": "sent"}],
                   "tools_listed": ["mcp__bridge__send_message"],
                   "request_contains": ["raw text of a logged request"]}}]}

Services start first (a redis-server, a program that acts in the room) and are stopped last.
Each instance gets its own fake API, a throwaway HOME that skips onboarding, trusts the work
folder, approves the fake key and caches the GrowthBook flags (``tengu_harbor``, which gates
channels, plus ``growthbook``), and an environment with nothing but what Claude Code needs:
ANTHROPIC_BASE_URL is the fake API, and telemetry, updates and downloads are off. In
``interactive`` mode each runs in a private tmux server: the driver confirms the start-up
dialogs, waits for the input prompt and for its MCP servers, then types ``prompt``. In
``print`` mode it runs ``claude -p PROMPT`` and the run ends when every one has exited.
As root, the whole run happens in a private network namespace that has only loopback.
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
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

FAKE_API = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_api.py")
FAKE_API_KEY = "sk-ant-api03-fake-bridge-tests-0000000000"
# Off for every Claude Code we start: it must reach nothing but the fake API. With telemetry
# off, Claude Code reads GrowthBook flags only from its disk cache, and only with the last one.
QUIET_ENV = {
    "DISABLE_TELEMETRY": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_GB_DISK_CACHE_WHEN_TELEMETRY_OFF": "1",
}
NETNS_MARK = "BRIDGE_TEST_NETNS"  # set inside the private network namespace

# Start-up dialogs (Claude Code 2.1.328): screen text -> keys that accept it.
DIALOGS = [
    ("dev-channels", "I am using this for local development", ["Enter"]),
    ("trust-folder", "Yes, I trust this folder", ["Enter"]),
    ("api-key", "Detected a custom API key", ["Up", "Enter"]),
    ("theme", "Choose the text style", ["Enter"]),
]
PROMPT_RE = re.compile(r"^\s*[❯>]\s", re.M)
CHANNEL_RE = re.compile(r'<channel source="([^"]*)"([^>]*)>(.*?)</channel>', re.S)
ATTR_RE = re.compile(r'([A-Za-z_]\w*)="([^"]*)"')
MCP_NAME_RE = re.compile(r"mcp__[\w-]+__[\w-]+")


def claude_config(work: str, growthbook: Json | None = None) -> Json:
    """A ~/.claude.json with onboarding done, the work folder trusted, the fake key approved
    and, given ``growthbook``, those flags cached."""
    config: Json = {
        "hasCompletedOnboarding": True, "lastOnboardingVersion": "2.1.328", "theme": "dark",
        "numStartups": 1,
        "customApiKeyResponses": {"approved": [FAKE_API_KEY[-20:]], "rejected": []},
        "projects": {work: {"hasTrustDialogAccepted": True, "allowedTools": [],
                            "hasCompletedProjectOnboarding": True}},
    }
    if growthbook is not None:
        config["cachedGrowthBookFeatures"] = growthbook
    return config


# --------------------------------------------------------------------------- the request log


def load_log(path: str) -> list[Json]:
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                with contextlib.suppress(ValueError):  # a line being written
                    records.append(json.loads(line))
    except OSError:
        pass
    return records


def texts(content: Any) -> list[str]:
    """The texts of one message's content: a string, or text and tool_result blocks."""
    if isinstance(content, str):
        return [content]
    found: list[str] = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            found.append(block.get("text", ""))
        elif isinstance(block, dict) and block.get("type") == "tool_result":
            found += texts(block.get("content"))
    return found


def summarize(path: str) -> Json:
    """What the model saw: channel blocks, tool calls and their results, tools offered."""
    channels: dict[str, Json] = {}
    tool_uses: dict[str, Json] = {}
    tool_results: dict[str, Json] = {}
    in_array: set[str] = set()
    mentioned: set[str] = set()
    records = load_log(path)
    for record in records:
        body = record.get("body")
        if not isinstance(body, dict) or "messages" not in body:
            continue
        in_array.update(t["name"] for t in body.get("tools") or [] if t.get("name"))
        mentioned.update(MCP_NAME_RE.findall(json.dumps(body, ensure_ascii=False)))
        for message in body["messages"]:
            role, content = message.get("role"), message.get("content")
            for block in content if isinstance(content, list) else []:
                if not isinstance(block, dict):
                    continue
                if role == "assistant" and block.get("type") == "tool_use":
                    tool_uses.setdefault(block["id"], {"id": block["id"],
                                                       "name": block.get("name"),
                                                       "input": block.get("input")})
                elif role == "user" and block.get("type") == "tool_result":
                    tool_results.setdefault(block["tool_use_id"], {
                        "tool_use_id": block["tool_use_id"],
                        "is_error": bool(block.get("is_error")),
                        "text": "\n".join(texts(block.get("content")))[:2000],
                        "first_seq": record["seq"]})
            if role not in ("user", "system"):
                continue  # a channel arrives as a user turn, or mid-turn as a system notice
            for text in texts(content):
                for match in CHANNEL_RE.finditer(text):
                    channels.setdefault(match.group(0), {
                        "source": match.group(1), "attrs": dict(ATTR_RE.findall(match.group(2))),
                        "content": match.group(3).strip(), "first_seq": record["seq"]})
    return {"requests": len(records),
            "main_requests": sum(r.get("kind") == "main" for r in records),
            "unknown_paths": [f"{r['method']} {r['path']}" for r in records
                              if r.get("kind") == "unknown"],
            "channels": list(channels.values()), "tool_uses": list(tool_uses.values()),
            "tool_results": list(tool_results.values()),
            "tools_in_tools_array": sorted(in_array), "mcp_names_mentioned": sorted(mentioned)}


def check(summary: Json, raw_log: str, expect: Json) -> list[tuple[bool, str]]:
    """(held, what) for each expectation of one instance."""
    results: list[tuple[bool, str]] = []
    for want in expect.get("channel", []):
        hits = [c for c in summary["channels"] if want.get("contains", "") in c["content"]
                and want.get("source", c["source"]) == c["source"]
                and all(c["attrs"].get(k) == v for k, v in (want.get("meta") or {}).items())]
        results.append((bool(hits), f"channel {json.dumps(want)} -> " + (
            f"seen in request #{hits[0]['first_seq']}" if hits else "NOT seen")))
    by_id = {r["tool_use_id"]: r for r in summary["tool_results"]}
    for want in expect.get("tool_round_trips", []):
        why, held = "no tool_use with that name", False
        for use in (u for u in summary["tool_uses"] if u["name"] == want["name"]):
            result = by_id.get(use["id"])
            if result is None:
                why = f"tool_use {use['id']} got no tool_result"
            elif result["is_error"]:
                why = f"tool_result is an error: {result['text'][:200]!r}"
            elif want.get("result_contains", "") not in result["text"]:
                why = f"tool_result lacks {want['result_contains']!r}: {result['text'][:200]!r}"
            else:
                why, held = f"result in request #{result['first_seq']}", True
                break
        results.append((held, f"tool round trip {json.dumps(want)} -> {why}"))
    for name in expect.get("tools_listed", []):
        # MCP tools are deferred behind ToolSearch: then only their names are in the request
        held = name in summary["tools_in_tools_array"] or name in summary["mcp_names_mentioned"]
        results.append((held, f"tool listed {name} -> {'yes' if held else 'NOT seen'}"))
    for text in expect.get("request_contains", []):
        results.append((text in raw_log, f"some request contains {text!r}"))
    return results


# --------------------------------------------------------------------------- the run


@dataclass
class Instance:
    name: str
    dir: str
    spec: Json
    home: str
    work: str
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    port: int = 0
    started_at: float = 0.0
    ready_at: float | None = None
    prompt_sent: bool = False
    exited_early: bool = False  # Claude Code ended before the run did (interactive)
    pressed: dict[str, float] = field(default_factory=dict)  # dialog -> when its keys went
    process: subprocess.Popen[bytes] | None = None  # print mode

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    @property
    def log(self) -> str:
        return self.path("requests.jsonl")

    @property
    def debug(self) -> str:
        return self.path("claude-debug.txt")

    @property
    def exit_file(self) -> str:
        return self.path("claude.exit")

    def debug_text(self) -> str:
        try:
            with open(self.debug, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def servers_up(self) -> bool:
        """Each MCP server connected (or failed), and each channel registered (or skipped)."""
        debug = self.debug_text()
        for server in self.spec.get("mcp_servers") or {}:
            if not re.search(re.escape(f'MCP server "{server}":')
                             + r" (Successfully connected|.*[Ff]ailed)", debug):
                return False
        for server in self.spec.get("channels", list(self.spec.get("mcp_servers") or {})):
            if not re.search(re.escape(f'MCP server "{server}":')
                             + r" Channel notifications (registered|skipped)", debug):
                return False
        return True


class Run:
    def __init__(self, claude: str, run_dir: str, scenario: Json) -> None:
        self.claude = os.path.abspath(claude)
        self.run_dir = run_dir
        self.scenario = scenario
        self.mode = scenario.get("mode", "interactive")
        self.tmux_socket = f"bridge-claude-{os.getpid()}"
        self.tmux_started = False
        self.instances: list[Instance] = []
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []  # ours, to stop
        os.makedirs(run_dir, exist_ok=True)

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        with open(os.path.join(self.run_dir, "driver.log"), "a") as f:
            f.write(line + "\n")

    def tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.tmux_socket, *args], capture_output=True,
                              text=True, check=False)
        return done.stdout if done.returncode == 0 else ""

    def start(self, name: str, command: list[str], out: str, **kw: Any) -> subprocess.Popen[bytes]:
        with open(out, "w") as f:
            process = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, **kw)
        self.processes.append((name, process))
        return process

    # ---- set-up -------------------------------------------------------------------------------

    def start_services(self) -> None:
        for service in self.scenario.get("services", []):
            name = service["name"]
            # its own process group: a service's children stop with it
            process = self.start(f"service {name}", service["command"],
                                 os.path.join(self.run_dir, f"service-{name}.log"),
                                 cwd=self.run_dir, start_new_session=True,
                                 env=dict(os.environ, **service.get("env", {})))
            port = service.get("ready_tcp")
            deadline = time.monotonic() + 15
            while port:
                try:
                    socket.create_connection(("127.0.0.1", int(port)), 0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError(f"service {name} is not listening on {port}; see "
                                           f"service-{name}.log") from None
                    time.sleep(0.1)
            self.say(f"service {name}: pid {process.pid}")

    def add_instance(self, spec: Json) -> Instance:
        """Its folder, fake API, HOME, environment and command line (not started yet)."""
        name = spec["name"]
        d = os.path.join(self.run_dir, name)
        inst = Instance(name, d, spec, os.path.join(d, "home"),
                        os.path.abspath(spec.get("cwd") or os.path.join(d, "work")))
        os.makedirs(inst.home, exist_ok=True)
        os.makedirs(inst.work, exist_ok=True)
        with open(inst.path("turns.json"), "w") as f:
            json.dump(spec.get("turns") or {}, f, indent=1)
        port_file = inst.path("api.port")
        api = self.start(f"fake API {name}", [
            sys.executable, FAKE_API, "--port", "0", "--port-file", port_file,
            "--log", inst.log, "--script", inst.path("turns.json")], inst.path("fake_api.out"))
        deadline = time.monotonic() + 20
        while not os.path.exists(port_file):
            if time.monotonic() > deadline or api.poll() is not None:
                raise RuntimeError(f"{name}: the fake API did not start; see fake_api.out")
            time.sleep(0.05)
        with open(port_file) as f:
            inst.port = int(f.read())
        growthbook = {"tengu_harbor": True, **(self.scenario.get("growthbook") or {})}
        with open(os.path.join(inst.home, ".claude.json"), "w") as f:
            json.dump(claude_config(inst.work, growthbook), f, indent=1)
        inst.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": inst.home,
                    "TERM": "xterm-256color", "LANG": "C.UTF-8",
                    "USER": os.environ.get("USER", "root"), "ANTHROPIC_API_KEY": FAKE_API_KEY,
                    "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{inst.port}", **QUIET_ENV}
        negotiation = spec.get("negotiation", self.scenario.get("negotiation"))
        if negotiation:
            inst.env["MCP_PROTOCOL_NEGOTIATION"] = negotiation
        inst.env.update(self.scenario.get("env") or {})
        inst.env.update(spec.get("env") or {})
        servers = spec.get("mcp_servers") or {}
        with open(inst.path("mcp.json"), "w") as f:
            json.dump({"mcpServers": {k: {"type": "stdio", **v} for k, v in servers.items()}},
                      f, indent=1)
        inst.args = ["--mcp-config", inst.path("mcp.json"), "--strict-mcp-config"]
        channels = spec.get("channels", list(servers))
        if channels:
            inst.args += ["--dangerously-load-development-channels",
                          *[f"server:{c}" for c in channels]]
        if servers:  # no permission prompt for our tools
            inst.args += ["--allowedTools", *[f"mcp__{s}" for s in servers]]
        inst.args += ["--debug-file", inst.debug, *spec.get("claude_args", [])]
        self.instances.append(inst)
        return inst

    def launch(self, inst: Instance) -> None:
        command = [self.claude, *inst.args]
        redirect = ""
        if self.mode == "print":
            command[1:1] = ["-p", inst.spec.get("prompt") or "hello"]
            redirect = (f" >{shlex.quote(inst.path('claude.stdout'))}"
                        f" 2>{shlex.quote(inst.path('claude.stderr'))}")
        launcher = inst.path("launch.sh")
        with open(launcher, "w") as f:
            f.write(f"#!/bin/bash\ncd {shlex.quote(inst.work)}\nenv -i "
                    + " ".join(shlex.quote(f"{k}={v}") for k, v in inst.env.items())
                    + " \\\n  " + shlex.join(command) + redirect
                    + f"\necho $? >{shlex.quote(inst.exit_file)}\n")
        os.chmod(launcher, 0o755)
        inst.started_at = time.monotonic()
        if self.mode == "print":
            inst.process = self.start(f"claude {inst.name}", ["bash", launcher],
                                      inst.path("launch.out"))
        else:  # the pane stays after Claude Code exits, so that its last screen can be saved
            self.tmux("new-session", "-d", "-s", inst.name, "-x", "200", "-y", "50",
                      f"bash {shlex.quote(launcher)}; sleep 86400")
            self.tmux_started = True
            self.say(f"{inst.name}: watch with: tmux -L {self.tmux_socket} attach -r "
                     f"-t {inst.name}")
        self.say(f"{inst.name}: launched ({self.mode}); fake API on port {inst.port}")

    # ---- interactive --------------------------------------------------------------------------

    def screen(self, inst: Instance) -> str:
        return self.tmux("capture-pane", "-p", "-t", inst.name)

    def keys(self, inst: Instance, *keys: str) -> None:
        for key in keys:
            self.tmux("send-keys", "-t", inst.name, key)
            time.sleep(0.2)  # a TUI reads keys one frame at a time

    def step(self, inst: Instance) -> None:
        """Confirm a dialog on screen, or type the prompt once everything is up."""
        screen = self.screen(inst)
        for name, text, keys in DIALOGS:
            if text in screen:
                if time.monotonic() - inst.pressed.get(name, 0) > 2:  # not while it closes
                    self.say(f"{inst.name}: dialog {name!r}: {keys}")
                    inst.pressed[name] = time.monotonic()
                    self.keys(inst, *keys)
                return
        if inst.prompt_sent or not PROMPT_RE.search(screen):
            return
        settled = inst.servers_up() or time.monotonic() - inst.started_at > float(
            self.scenario.get("settle_timeout", 30))
        if not settled:
            return
        if inst.ready_at is None:
            inst.ready_at = time.monotonic()
        others = {i.name: i for i in self.instances}
        if time.monotonic() - inst.ready_at < 1.0 or not all(
                others[o].servers_up() for o in inst.spec.get("prompt_after", [])):
            return
        prompt = inst.spec.get("prompt")
        if prompt:
            self.say(f"{inst.name}: typing {prompt!r}")
            self.tmux("send-keys", "-t", inst.name, "-l", prompt)
            time.sleep(0.3)
            self.keys(inst, "Enter")
        inst.prompt_sent = True

    # ---- checking -----------------------------------------------------------------------------

    def evaluate(self) -> tuple[bool, Json]:
        report: Json = {}
        for inst in self.instances:
            summary = summarize(inst.log)
            try:
                with open(inst.log, encoding="utf-8") as f:
                    raw = f.read()
            except OSError:
                raw = ""
            checks = check(summary, raw, inst.spec.get("expect") or {})
            if inst.exited_early:
                checks.append((False, f"Claude Code exited early; see {inst.dir}"))
            report[inst.name] = {"ok": all(held for held, _ in checks), "checks": checks,
                                 "summary": summary}
        if not any(r["checks"] for r in report.values()):
            for r in report.values():  # nothing was asked: never a vacuous pass
                r["ok"], r["checks"] = False, [(False, "no expectations given")]
        return all(r["ok"] for r in report.values()), report

    def run(self) -> tuple[bool, Json]:
        self.start_services()
        for spec in self.scenario["instances"]:
            self.add_instance(spec)
        for inst in self.instances:
            self.launch(inst)
        deadline = time.monotonic() + float(self.scenario.get("timeout", 90))
        held_since = None
        while True:
            if self.mode == "interactive":
                for inst in self.instances:
                    inst.exited_early = os.path.exists(inst.exit_file)
                    self.step(inst)
            ok, report = self.evaluate()
            now = time.monotonic()
            if ok:  # hold on a little: a late failure (an exit) should still show
                held_since = held_since or now
                if now - held_since >= float(self.scenario.get("linger", 2)):
                    return ok, report
            finished = (all(os.path.exists(i.exit_file) for i in self.instances)
                        if self.mode == "print"
                        else any(os.path.exists(i.exit_file) for i in self.instances))
            if finished or now > deadline:
                return ok, report
            time.sleep(0.5)

    def shutdown(self) -> None:
        if self.tmux_started:
            for inst in self.instances:
                with open(inst.path("screen.txt"), "w") as f:
                    f.write(self.screen(inst))
                self.keys(inst, "Escape", "C-c", "C-c")
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and not all(
                    os.path.exists(i.exit_file) for i in self.instances):
                time.sleep(0.3)
            self.tmux("kill-server")
        for name, process in reversed(self.processes):
            if process.poll() is not None:
                continue
            try:
                if name.startswith("service"):
                    os.killpg(process.pid, signal.SIGTERM)  # its own group, started by us
                else:
                    process.terminate()
                process.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()


def isolate_network(argv: list[str]) -> bool:
    """As root, re-run ``argv`` in a new network namespace that has only loopback (this
    process is replaced); inside it, bring loopback up. False when that cannot be done."""
    if os.environ.get(NETNS_MARK) == "1":
        subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
        return True
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return False
    os.execvpe("unshare", ["unshare", "-n", *argv], dict(os.environ, **{NETNS_MARK: "1"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", required=True, help="the scenario (JSON)")
    parser.add_argument("--claude", required=True, help="the claude binary")
    parser.add_argument("--run-dir", help="where everything is kept (default: a new temp dir)")
    args = parser.parse_args()
    private = isolate_network([sys.executable, os.path.abspath(__file__), *sys.argv[1:]])
    with open(args.scenario) as f:
        scenario = json.load(f)
    if scenario.get("mode", "interactive") == "interactive" and not shutil.which("tmux"):
        raise SystemExit("tmux is needed for interactive mode (apt-get install -y tmux)")
    run = Run(args.claude, args.run_dir or tempfile.mkdtemp(prefix="claude_driver_"), scenario)
    run.say(f"run dir {run.run_dir}; network: {'loopback only' if private else 'the host'}")
    status, report = 2, {}
    try:
        ok, report = run.run()
        status = 0 if ok else 1
    except Exception as e:  # a driver error: reported, cleaned up, exit 2
        traceback.print_exc()
        run.say(f"DRIVER ERROR: {type(e).__name__}: {e}")
    finally:
        run.shutdown()
        if status != 2:
            ok, report = run.evaluate()  # one last look, after everything stopped
            status = 0 if ok else 1
        for name, result in report.items():
            print(f"\n== {name}: {'PASS' if result['ok'] else 'FAIL'}")
            for held, what in result["checks"]:
                print(f"  [{'ok' if held else 'FAIL'}] {what}")
            summary = result["summary"]
            print(f"  requests={summary['requests']} main={summary['main_requests']} "
                  f"unknown paths={summary['unknown_paths']}")
        for inst in run.instances:  # why a channel or a server did not come up
            lines = [line for line in inst.debug_text().splitlines()
                     if "MCP server" in line or "hannel" in line][:30]
            print(f"\n-- {inst.name}: Claude Code's debug log, MCP lines:\n  "
                  + "\n  ".join(line[:220] for line in lines))
        with open(os.path.join(run.run_dir, "summary.json"), "w") as f:
            json.dump(report, f, indent=1)
        print(f"\nresult: {'PASS' if status == 0 else 'FAIL'} (exit {status}); "
              f"logs in {run.run_dir}", flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
