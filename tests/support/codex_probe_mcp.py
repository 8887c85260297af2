"""A tiny MCP server on stdio that logs everything Codex sends it, for
tests/support/codex_driver.py.

    python3 tests/support/codex_probe_mcp.py --log DIR/probe.jsonl [--instructions TEXT]

Stdlib only. Each line of the log is one JSON object with ``t`` (epoch seconds) and ``event``:
``start`` (once: ``pid``, ``ppid``, the parent's command line ``parent_cmdline``, ``argv``,
``cwd`` and the whole environment ``env``), ``request`` (a JSON-RPC message as received:
``message``), ``eof`` (stdin closed), ``signal`` (SIGTERM, SIGINT or SIGHUP: it exits). It
answers ``initialize`` (with ``instructions`` when given), ``tools/list`` and ``tools/call``,
and ignores notifications.

Tools: ``send_message`` (``to``, ``text``; answers ``sent to TO``), ``echo`` (``text``;
answers it back) and ``run`` (``argv``: a command to run, e.g. ``codex queue ...``, with this
server's own environment; answers its exit status, stdout and stderr, and logs a ``run``
event with the times it started and ended).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

Json = dict[str, Any]

TOOLS = [
    {"name": "send_message", "description": "Send a message to another agent.",
     "inputSchema": {"type": "object", "properties": {
         "to": {"type": "string"}, "text": {"type": "string"}}, "required": ["text"]}},
    {"name": "echo", "description": "Answer the text back.",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "run", "description": "Run a command; answer its exit status and output.",
     "inputSchema": {"type": "object", "properties": {
         "argv": {"type": "array", "items": {"type": "string"}}}, "required": ["argv"]}},
]


class Probe:
    def __init__(self, log: str, instructions: str | None) -> None:
        self.log_path, self.instructions = log, instructions

    def log(self, event: str, **fields: Any) -> None:
        line = json.dumps({"t": time.time(), "event": event, **fields}, ensure_ascii=False)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def send(self, message: Json) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    def handle(self, message: Json) -> Json | None:
        method, params = message.get("method"), message.get("params") or {}
        if method == "initialize":
            result: Json = {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                            "capabilities": {"tools": {}},
                            "serverInfo": {"name": "codex-probe", "version": "1.0"}}
            if self.instructions:
                result["instructions"] = self.instructions
            return result
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "tools/call":
            return self.call(params.get("name"), params.get("arguments") or {})
        if method == "ping":
            return {}
        return None

    def call(self, name: Any, args: Json) -> Json:
        if name == "send_message":
            text = f"sent to {args.get('to', 'everyone')}"
        elif name == "echo":
            text = str(args.get("text", ""))
        elif name == "run":
            started = time.time()
            try:
                done = subprocess.run([str(a) for a in args["argv"]], capture_output=True,
                                      text=True, timeout=60, stdin=subprocess.DEVNULL)
                text = (f"exit {done.returncode}\nstdout: {done.stdout}\n"
                        f"stderr: {done.stderr}")
            except (OSError, subprocess.TimeoutExpired) as e:
                text = f"failed: {e}"
            self.log("run", argv=args.get("argv"), started=started, ended=time.time(),
                     result=text)
        else:
            return {"content": [{"type": "text", "text": f"no tool {name}"}], "isError": True}
        return {"content": [{"type": "text", "text": text}]}

    def on_signal(self, signum: int, _frame: Any) -> None:
        self.log("signal", signal=signal.Signals(signum).name)
        sys.exit(128 + signum)

    def serve(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.on_signal)
        try:
            with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
                parent = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            parent = []
        self.log("start", pid=os.getpid(), ppid=os.getppid(), parent_cmdline=parent,
                 argv=sys.argv, cwd=os.getcwd(), env=dict(os.environ))
        for line in sys.stdin:
            try:
                message = json.loads(line)
            except ValueError:
                self.log("garbage", line=line)
                continue
            self.log("request", message=message)
            if not isinstance(message, dict) or "id" not in message or "method" not in message:
                continue
            result = self.handle(message)
            if result is None:
                self.send({"jsonrpc": "2.0", "id": message["id"],
                           "error": {"code": -32601, "message": "no such method"}})
            else:
                self.send({"jsonrpc": "2.0", "id": message["id"], "result": result})
        self.log("eof")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", required=True, help="where to log (JSON lines)")
    parser.add_argument("--instructions", help="the initialize result's instructions")
    args = parser.parse_args()
    Probe(args.log, args.instructions).serve()


if __name__ == "__main__":
    main()
