"""A scripted Anthropic Messages API on 127.0.0.1, for driving the real Claude Code offline.

    python3 tests/support/fake_api.py --port 0 --port-file DIR/port --log DIR/requests.jsonl \
        --script DIR/turns.json

Stdlib only (bench/inbox_limits.py runs it without the venv). Claude Code reaches it through
ANTHROPIC_BASE_URL; it only ever POSTs /v1/messages (streaming), and sometimes count_tokens.

Every request is appended to the log as one JSON line: ``seq``, ``t`` (epoch seconds),
``method``, ``path``, ``kind`` (``main``: a request that offers tools, i.e. a turn of the
conversation; ``side``: one without tools, such as a title; ``aux``: count_tokens;
``unknown``: any other path, answered 404), ``served`` (the id of the rule that answered, or
null) and ``body`` (the parsed JSON).

The script (re-read on every request, so it may change while Claude Code runs)::

    {"default_reply": "OK",        # a main request that no rule answers
     "side_reply": "OK",           # a side request that no rule answers
     "rules": [{"id": "send", "when": {"last_user_contains": "say hi"}, "delay": 0,
                "times": 1, "reply": [{"type": "tool_use", "name": "mcp__bridge__send_message",
                                       "input": {"to": "bob", "text": "hi"}}]}]}

The first rule that is not used up (``times``: default 1, -1 for unlimited) and whose
``when`` holds answers. ``when`` (every key must hold; a value may be a string or a list):
``last_user_contains`` / ``last_user_not_contains`` (the messages after the last assistant
message: what this request brings), ``contains`` (any message), ``body_contains`` (the whole
body, system prompt included), ``after`` (rule ids that must have answered before), ``kind``
(``main`` by default, ``side`` or ``any``). ``reply`` is a string or a list of ``text`` and
``tool_use`` blocks; ``delay`` waits that many seconds before answering (to land something
mid-turn).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import sys
import threading
import time
import uuid
from typing import Any

Json = dict[str, Any]


class Script:
    """The rules, and which of them have answered how often (for ``times`` and ``after``)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.fired: dict[str, int] = {}
        self.lock = threading.Lock()

    def load(self) -> Json:
        if not self.path:
            return {}
        try:
            with open(self.path, encoding="utf-8") as f:
                loaded = json.load(f)
        except (OSError, ValueError) as e:
            print(f"fake_api: cannot read the script {self.path}: {e}", file=sys.stderr)
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def answer(self, body: Json) -> tuple[str | None, Json]:
        """(rule id or None, the rule that answers this request)."""
        script = self.load()
        kind = request_kind(body)
        with self.lock:
            for i, rule in enumerate(script.get("rules", [])):
                rule_id = str(rule.get("id") or f"rule{i}")
                used = self.fired.get(rule_id, 0)
                times = int(rule.get("times", 1))
                if (times == -1 or used < times) and self.holds(rule.get("when") or {}, body):
                    self.fired[rule_id] = used + 1
                    return rule_id, rule
        fallback = script.get("default_reply", "OK")
        if kind == "side":
            fallback = script.get("side_reply", fallback)
        return None, {"reply": fallback}

    def holds(self, when: Json, body: Json) -> bool:
        wanted = when.get("kind", "main")
        if wanted != "any" and request_kind(body) != wanted:
            return False
        messages = body.get("messages") or []
        new = json.dumps(since_last_reply(messages), ensure_ascii=False)
        checks = [
            (when.get("last_user_contains"), new, True),
            (when.get("last_user_not_contains"), new, False),
            (when.get("contains"), json.dumps(messages, ensure_ascii=False), True),
            (when.get("body_contains"), json.dumps(body, ensure_ascii=False), True),
        ]
        for needles, haystack, present in checks:
            if any((needle in haystack) != present for needle in as_list(needles)):
                return False
        return all(self.fired.get(rule_id) for rule_id in as_list(when.get("after")))


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def request_kind(body: Json) -> str:
    return "main" if body.get("tools") else "side"


def since_last_reply(messages: list[Json]) -> list[Json]:
    """The messages after the last assistant message: what this request brings."""
    new: list[Json] = []
    for message in reversed(messages):
        if message.get("role") == "assistant":
            break
        new.append(message)
    return new[::-1]


def content_blocks(reply: Any) -> list[Json]:
    if isinstance(reply, str):
        reply = [{"type": "text", "text": reply}]
    blocks = []
    for block in reply:
        block = dict(block)
        if block["type"] == "tool_use":
            block.setdefault("id", "toolu_" + uuid.uuid4().hex[:24])
            block.setdefault("input", {})
        elif block["type"] != "text":
            raise ValueError(f"fake_api: a reply block must be text or tool_use: {block}")
        blocks.append(block)
    return blocks


USAGE = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0,
         "cache_read_input_tokens": 0}


def sse_events(message: Json) -> list[tuple[str, Json]]:
    """The Messages API's streaming events for one finished message."""
    start = dict(message, content=[], stop_reason=None, usage=dict(USAGE, output_tokens=1))
    events: list[tuple[str, Json]] = [("message_start", {"message": start}), ("ping", {})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(("content_block_start",
                           {"index": index, "content_block": {"type": "text", "text": ""}}))
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            events.append(("content_block_start", {"index": index, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}))
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events.append(("content_block_delta", {"index": index, "delta": delta}))
        events.append(("content_block_stop", {"index": index}))
    events.append(("message_delta", {
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": USAGE["output_tokens"]}}))
    events.append(("message_stop", {}))
    return [(name, dict(data, type=name)) for name, data in events]


class Api(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, log_path: str, script: Script,
                 host: str = "127.0.0.1") -> None:
        super().__init__((host, port), Handler)
        self.log_path, self.script = log_path, script
        self.seq = 0
        self.lock = threading.Lock()

    def record(self, method: str, path: str, kind: str, body: Any,
               served: str | None = None) -> None:
        with self.lock:
            self.seq += 1
            line = json.dumps({"seq": self.seq, "t": time.time(), "method": method,
                               "path": path, "kind": kind, "served": served, "body": body},
                              ensure_ascii=False)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Api

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log says it all

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path = self.path.split("?")[0]
        if path == "/v1/messages" and isinstance(body, dict):
            self.messages(body)
        elif path == "/v1/messages/count_tokens":
            self.server.record("POST", self.path, "aux", body)
            self.send_json(200, {"input_tokens": max(1, len(raw) // 4)})
        else:
            self.unknown(body)

    def do_GET(self) -> None:
        self.unknown(None)

    def unknown(self, body: Any) -> None:
        self.server.record(self.command, self.path, "unknown", body)
        self.send_json(404, {"type": "error", "error": {
            "type": "not_found_error", "message": f"fake_api: no such path {self.path}"}})

    def send_json(self, status: int, payload: Json) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def messages(self, body: Json) -> None:
        rule_id, rule = self.server.script.answer(body)
        self.server.record("POST", self.path, request_kind(body), body, rule_id)
        if rule.get("delay"):
            time.sleep(float(rule["delay"]))
        blocks = content_blocks(rule.get("reply", "OK"))
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        message = {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
                   "model": body.get("model", "claude-fake"), "content": blocks,
                   "stop_reason": stop, "stop_sequence": None, "usage": USAGE}
        if not body.get("stream"):
            self.send_json(200, message)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        for name, data in sse_events(message):
            self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (0.0.0.0 inside a test's container)")
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--log", required=True, help="the request log (JSON lines)")
    parser.add_argument("--script", help="the rules (JSON), re-read on every request")
    args = parser.parse_args()
    api = Api(args.port, args.log, Script(args.script), args.host)
    port = api.server_address[1]
    if args.port_file:  # written whole, then renamed: a reader never sees half a number
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(port))
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"fake_api: listening on {args.host}:{port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        api.serve_forever()


if __name__ == "__main__":
    main()
