"""A Claude Code that ends while its model is busy, with bridge's posts queued in its session
inbox: does a new session for the same agent get every message, once?

    python3 tests/support/inbox_crash.py --claude PATH --bridge PATH --end kill|exit|none \
        [--next new|resume] [--run-dir DIR] [--json FILE]

Stdlib only (it drives Claude Code with tests/support/claude_driver.py's Run). The steps:

1. a redis-server; bob: a real interactive Claude Code (tmux) whose MCP server is
   ``bridge serve --name bob``, and whose model (tests/support/fake_api.py) is busy on its first
   prompt for BUSY_SECONDS;
2. while it is busy, ``bridge send --as alice`` sends M1, then (once M1 is in bob's session
   transcript as queued) M2..M5: bridge posts them into bob's session inbox;
3. once all five are queued there, bob's Claude Code ends: SIGKILL (``kill``), ``/exit``
   typed while busy (``exit``), or not at all (``none``: the busy turn ends, the queue is
   delivered, and then bob leaves with ``/exit``);
4. a second Claude Code for bob starts, a new session (``new``) or the same one resumed
   (``resume``), with an idle model; then alice sends M6, a marker that the second session
   is up and delivering;
5. what the models were given: each of M1..M6 counted in the last request of each session
   (the whole conversation; a resumed one holds the first session's too, so there the second
   session's count is the total).

Exit 0 when every message reached a model exactly once over both sessions, 1 otherwise, 2 on
a driver error. As root, it runs in a private network namespace (loopback only).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from claude_driver import Instance, Run, isolate_network, load_log, texts  # noqa: E402
from ports import free_port  # noqa: E402

BUSY_SECONDS = 45  # the first session's model takes this long over its first prompt: the
# five messages must be queued within it (a loaded CI run took 27 s; 25 s was too short once)
MARKERS = [f"CRASH-M{i}" for i in range(1, 7)]
STEP_TIMEOUT = 60.0
Json = dict[str, Any]



class Crash:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        run_dir = args.run_dir or tempfile.mkdtemp(prefix="inbox_crash_")
        self.run = Run(args.claude, run_dir, {"services": [{
            "name": "redis",
            "command": [shutil.which("redis-server") or "redis-server", "--port",
                        str(self.port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no"],
            "ready_tcp": self.port}], "negotiation": "legacy"})
        self.work = os.path.join(run_dir, "work")  # both sessions: one project folder
        self.home = os.path.join(run_dir, "home")  # and one HOME (for --resume)
        self.facts: Json = {"end": args.end, "next": args.next}

    # ---- helpers ------------------------------------------------------------------------------

    def server(self) -> Json:
        return {"command": self.args.bridge, "args": ["serve", "--name", "bob"],
                "env": {"BRIDGE_REDIS_URL": self.url, "BRIDGE_LOG_LEVEL": "DEBUG"}}

    def instance(self, name: str, turns: Json, prompt: str | None,
                 claude_args: list[str]) -> Instance:
        spec = {"name": name, "cwd": self.work, "channels": [], "turns": turns,
                "prompt": prompt, "claude_args": claude_args,
                "mcp_servers": {"bridge": self.server()}}
        inst = self.run.add_instance(spec)
        inst.home = self.home  # (add_instance made one of its own: use the shared one)
        inst.env["HOME"] = self.home
        os.makedirs(self.home, exist_ok=True)
        config = os.path.join(self.home, ".claude.json")
        if not os.path.exists(config):
            shutil.copy(os.path.join(inst.dir, "home", ".claude.json"), config)
        return inst

    def wait(self, what: str, check: Any, inst: Instance | None = None,
             timeout: float = STEP_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            if inst is not None:
                self.run.step(inst)
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.25)

    def send(self, text: str) -> None:
        done = subprocess.run([self.args.bridge, "send", "--redis", self.url, "--as", "alice",
                               "bob", text], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        self.run.say(f"alice -> bob {text[:40]!r}: exit {done.returncode}: "
                     f"{(done.stdout + done.stderr).strip()[:200]}")
        if done.returncode != 0:
            raise RuntimeError(f"bridge send failed: {done.stdout}{done.stderr}")

    def transcript_lines(self) -> list[Json]:
        lines: list[Json] = []
        for path in glob.glob(os.path.join(self.home, ".claude", "projects", "*", "*.jsonl")):
            for record in load_log(path):
                record["_file"] = os.path.basename(path)
                lines.append(record)
        return lines

    def queued(self, marker: str) -> bool:
        return any(r.get("type") == "queue-operation" and r.get("operation") == "enqueue"
                   and marker in json.dumps(r.get("content", "")) for r in
                   self.transcript_lines())

    def requests(self, inst: Instance) -> list[Json]:
        return [r for r in load_log(inst.log) if r.get("kind") == "main"]

    def seen(self, inst: Instance, marker: str) -> bool:
        return any(marker in json.dumps(r.get("body", {})) for r in self.requests(inst))

    def counts(self, inst: Instance) -> dict[str, int]:
        """How often each marker is in the last request (the whole conversation, once)."""
        requests = self.requests(inst)
        if not requests:
            return {m: 0 for m in MARKERS}
        body = requests[-1].get("body", {})
        text = "\n".join(t for message in body.get("messages", [])
                         for t in texts(message.get("content")))
        return {m: text.count(f"> {m}") for m in MARKERS}

    def claude_pid(self) -> int:
        for path in glob.glob(os.path.join(self.home, ".claude", "sessions", "*.json")):
            try:
                with open(path) as f:
                    record = json.load(f)
                pid = int(record["pid"])
                os.kill(pid, 0)
                return pid
            except (OSError, ValueError, KeyError):
                continue
        raise RuntimeError("no live Claude Code in ~/.claude/sessions")

    def session_id(self) -> str:
        files = sorted(glob.glob(os.path.join(self.home, ".claude", "projects", "*",
                                              "*.jsonl")), key=os.path.getmtime)
        if not files:
            raise RuntimeError("no session transcript")
        return os.path.basename(files[-1])[:-len(".jsonl")]

    def bob_present(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), 2) as s:
            key = "bridge:{main}:agent:bob"
            s.sendall(f"*2\r\n$6\r\nEXISTS\r\n${len(key)}\r\n{key}\r\n".encode())
            return s.recv(64).startswith(b":1")

    # ---- the scenario -------------------------------------------------------------------------

    def play(self) -> bool:
        self.run.start_services()
        first = self.instance("first", {"default_reply": "OK", "rules": [
            {"id": "busy", "when": {"last_user_contains": "work hard"},
             "delay": BUSY_SECONDS, "reply": "worked"}]}, "work hard", [])
        self.run.launch(first)
        self.wait("the first session's busy request",
                  lambda: any("work hard" in json.dumps(r.get("body", {}))
                              for r in self.requests(first)), first)
        busy_at = time.monotonic()
        self.send(f"{MARKERS[0]} first message")
        self.wait("M1 queued in the transcript", lambda: self.queued(MARKERS[0]), first)
        for marker in MARKERS[1:5]:
            self.send(f"{marker} next message")
        self.wait("M2..M5 queued in the transcript",
                  lambda: all(self.queued(m) for m in MARKERS[1:5]), first)
        self.facts["queued_after_s"] = round(time.monotonic() - busy_at, 1)
        self.facts["first_saw_before_end"] = {m: self.seen(first, m) for m in MARKERS[:5]}
        if self.args.end == "kill":
            pid = self.claude_pid()
            self.run.say(f"SIGKILL Claude Code pid {pid}")
            os.kill(pid, signal.SIGKILL)
        elif self.args.end == "exit":
            self.run.say("typing /exit while busy")
            self.run.tmux("send-keys", "-t", first.name, "-l", "/exit")
            time.sleep(0.3)
            self.run.keys(first, "Enter")
        else:
            self.wait("the queued messages in the first session's model",
                      lambda: all(self.seen(first, m) for m in MARKERS[:5]),
                      timeout=BUSY_SECONDS + STEP_TIMEOUT)
            self.run.tmux("send-keys", "-t", first.name, "-l", "/exit")
            time.sleep(0.3)
            self.run.keys(first, "Enter")
        self.wait("bob's bridge to leave the room", lambda: not self.bob_present())
        self.facts["first_counts"] = self.counts(first)
        session = self.session_id()
        resume = ["--resume", session] if self.args.next == "resume" else []
        second = self.instance("second", {"default_reply": "OK"}, None, resume)
        self.run.launch(second)
        self.wait("bob's bridge back in the room", self.bob_present, second)
        self.wait("the second session up", lambda: second.prompt_sent, second)
        self.send(f"{MARKERS[5]} after the restart")
        self.wait("M6 in the second session's model", lambda: self.seen(second, MARKERS[5]),
                  second)
        # M1..M5 come before M6 in the room log, and are posted in log order: a second copy
        # of any of them would have reached the second session's model by now
        counts = self.counts(second)
        self.facts["second_counts"] = counts
        if self.args.next == "resume":  # its conversation holds the first one's, replayed
            total = counts
        else:
            total = {m: self.facts["first_counts"][m] + counts[m] for m in MARKERS}
        self.facts["total"] = total
        return all(n == 1 for n in total.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claude", required=True)
    parser.add_argument("--bridge", required=True)
    parser.add_argument("--end", choices=("kill", "exit", "none"), default="kill")
    parser.add_argument("--next", choices=("new", "resume"), default="new")
    parser.add_argument("--run-dir")
    parser.add_argument("--json")
    args = parser.parse_args()
    args.claude, args.bridge = os.path.abspath(args.claude), os.path.abspath(args.bridge)
    private = isolate_network([sys.executable, os.path.abspath(__file__), *sys.argv[1:]])
    crash = Crash(args)
    crash.run.say(f"run dir {crash.run.run_dir}; network: "
                  f"{'loopback only' if private else 'the host'}")
    status = 2
    try:
        status = 0 if crash.play() else 1
    except Exception as e:
        traceback.print_exc()
        crash.run.say(f"DRIVER ERROR: {type(e).__name__}: {e}")
        crash.facts["error"] = f"{type(e).__name__}: {e}"
    finally:
        crash.run.shutdown()
        crash.facts["status"] = status
        print(json.dumps(crash.facts, indent=1), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(crash.facts, f, indent=1)
        print(f"result: {'PASS' if status == 0 else 'FAIL'}; logs in {crash.run.run_dir}")
    sys.exit(status)


if __name__ == "__main__":
    main()
