"""A scripted OpenAI-compatible Chat Completions API on 127.0.0.1, for driving the real
OpenCode offline.

    python3 tests/support/fake_chat.py --port 0 --port-file DIR/port --log DIR/requests.jsonl \
        --script DIR/turns.json

Stdlib only, the twin of tests/support/fake_openai.py (the Responses API, for Codex), with the
same rule, script and log design. OpenCode reaches it through a provider in its opencode.json
(``"npm": "@ai-sdk/openai-compatible"``, ``"options": {"baseURL":
"http://127.0.0.1:PORT/v1"}``; tests/support/opencode_driver.py writes one) and POSTs
``/v1/chat/completions`` (``stream: true``) for every model request: the turns (``main``: they
offer tools) and one ``side`` request per session for its title (no tools). ``GET .../models``
is answered with an empty list, anything else 404, and logged as ``models`` or ``unknown``.

Every request is appended to the log as one JSON line: ``seq``, ``t`` (epoch seconds, taken
when the request was read, before any ``delay``), ``method``, ``path``, ``kind`` (``main``,
``side``, ``models``, ``unknown``), ``served`` (the id of the rule that answered, or null),
``headers`` (the Authorization value masked) and ``body`` (the parsed JSON).

The script (re-read on every request, so it may change while OpenCode runs)::

    {"default_reply": "OK",        # a main request that no rule answers
     "side_reply": "A title",      # a side request that no rule answers (default: "Fake title")
     "rules": [{"id": "send", "when": {"last_user_contains": "say hi"}, "delay": 0,
                "times": 1, "reply": [{"type": "function_call", "name": "bridge_send_message",
                                       "arguments": {"to": "bob", "text": "hi"}}]}]}

The first rule that is not used up (``times``: default 1, -1 for unlimited) and whose
``when`` holds answers. ``when`` (every key must hold; a value may be a string or a list):
``last_user_contains`` / ``last_user_not_contains`` (the messages after the model's last one:
what this request brings, a user message or a tool's result), ``contains`` (any message),
``body_contains`` (the whole body), ``header_contains`` (the request's headers as JSON),
``after`` (rule ids that must have answered before), ``kind`` (``main`` by default, ``side`` or
``any``). ``reply`` is a string or a list of ``text`` and ``function_call`` items (``name`` as
the client offers it, e.g. ``bridge_send_message``; ``arguments``: an object or a JSON string;
optional ``call_id``); ``delay`` waits that many seconds before answering; ``error``
(``{"status": 500, "message": ...}``) answers with that HTTP error instead.
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
            print(f"fake_chat: cannot read the script {self.path}: {e}", file=sys.stderr)
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def answer(self, body: Json, headers: Json) -> tuple[str | None, Json]:
        """(rule id or None, the rule that answers this request)."""
        script = self.load()
        with self.lock:
            for i, rule in enumerate(script.get("rules", [])):
                rule_id = str(rule.get("id") or f"rule{i}")
                used = self.fired.get(rule_id, 0)
                times = int(rule.get("times", 1))
                if (times == -1 or used < times) and self.holds(rule.get("when") or {},
                                                                 body, headers):
                    self.fired[rule_id] = used + 1
                    return rule_id, rule
        if request_kind(body) == "side":
            return None, {"reply": script.get("side_reply", "Fake title")}
        return None, {"reply": script.get("default_reply", "OK")}

    def holds(self, when: Json, body: Json, headers: Json) -> bool:
        wanted = when.get("kind", "main")
        if wanted != "any" and request_kind(body) != wanted:
            return False
        messages = body_messages(body)
        new = "\n".join(message_text(m) for m in brought(messages))
        checks = [
            (when.get("last_user_contains"), new, True),
            (when.get("last_user_not_contains"), new, False),
            (when.get("contains"), "\n".join(message_text(m) for m in messages), True),
            (when.get("body_contains"), json.dumps(body, ensure_ascii=False), True),
            (when.get("header_contains"), json.dumps(headers, ensure_ascii=False), True),
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


def body_messages(body: Json) -> list[Json]:
    return [m for m in body.get("messages") or [] if isinstance(m, dict)]


def message_text(message: Json) -> str:
    """The text of one chat message: its content (a string or text parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or []
                     if isinstance(p, dict) and isinstance(p.get("text"), str))


def brought(messages: list[Json]) -> list[Json]:
    """The messages after the model's last one: what this request brings."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "assistant":
            return messages[i + 1:]
    return [m for m in messages if m.get("role") != "system"]


def chunks(reply: Any, model: str) -> list[Json]:
    """The streamed chunks of one answer: text, then tool calls, then the finish."""
    if isinstance(reply, str):
        reply = [{"type": "text", "text": reply}]
    base = {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}

    def chunk(delta: Json, finish: str | None = None) -> Json:
        return dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])

    out = [chunk({"role": "assistant", "content": ""})]
    calls = 0
    for part in reply:
        if part.get("type") == "text":
            out.append(chunk({"content": part["text"]}))
        elif part.get("type") == "function_call":
            arguments = part.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            out.append(chunk({"tool_calls": [{
                "index": calls, "id": part.get("call_id") or "call_" + uuid.uuid4().hex[:24],
                "type": "function", "function": {"name": part["name"], "arguments": ""}}]}))
            out.append(chunk({"tool_calls": [{"index": calls,
                                              "function": {"arguments": arguments}}]}))
            calls += 1
        else:
            raise ValueError(f"fake_chat: a reply item must be text or function_call: {part}")
    out.append(chunk({}, "tool_calls" if calls else "stop"))
    out.append(dict(base, choices=[], usage={"prompt_tokens": 10, "completion_tokens": 5,
                                             "total_tokens": 15}))
    return out


class Api(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, log_path: str, script: Script,
                 host: str = "127.0.0.1") -> None:
        super().__init__((host, port), Handler)
        self.log_path, self.script = log_path, script
        self.seq = 0
        self.lock = threading.Lock()

    def record(self, t: float, method: str, path: str, kind: str, headers: Json, body: Any,
               served: str | None = None) -> None:
        with self.lock:
            self.seq += 1
            line = json.dumps({"seq": self.seq, "t": t, "method": method, "path": path,
                               "kind": kind, "served": served, "headers": headers,
                               "body": body}, ensure_ascii=False)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Api

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log says it all

    def headers_seen(self) -> Json:
        return {name.lower(): (value[:12] + "…" if name.lower() == "authorization" else value)
                for name, value in self.headers.items()}

    def do_POST(self) -> None:
        t = time.time()
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        if self.path.split("?")[0].endswith("/chat/completions") and isinstance(body, dict):
            self.model_turn(t, body)
        else:
            self.unknown(t, body)

    def do_GET(self) -> None:
        t = time.time()
        if self.path.split("?")[0].endswith("/models"):
            self.server.record(t, "GET", self.path, "models", self.headers_seen(), None)
            self.send_json(200, {"object": "list", "data": []})
        else:
            self.unknown(t, None)

    def unknown(self, t: float, body: Any) -> None:
        self.server.record(t, self.command, self.path, "unknown", self.headers_seen(), body)
        self.send_json(404, {"error": {"type": "not_found", "code": "not_found",
                                       "message": f"fake_chat: no such path {self.path}"}})

    def send_json(self, status: int, payload: Json) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def model_turn(self, t: float, body: Json) -> None:
        headers = self.headers_seen()
        rule_id, rule = self.server.script.answer(body, headers)
        self.server.record(t, "POST", self.path, request_kind(body), headers, body, rule_id)
        if rule.get("delay"):
            time.sleep(float(rule["delay"]))
        if rule.get("error"):
            error = rule["error"] if isinstance(rule["error"], dict) else {}
            self.send_json(int(error.get("status", 500)), {"error": {
                "type": error.get("type", "server_error"), "code": error.get("code"),
                "message": error.get("message", "fake_chat: a scripted error")}})
            return
        model = str(body.get("model", "fake-model"))
        streamed = chunks(rule.get("reply", "OK"), model)
        if not body.get("stream"):
            text = "".join(c["choices"][0]["delta"].get("content", "")
                           for c in streamed if c["choices"])
            calls = [tc for c in streamed if c["choices"]
                     for tc in c["choices"][0]["delta"].get("tool_calls", []) if "id" in tc]
            self.send_json(200, {"id": streamed[0]["id"], "object": "chat.completion",
                                 "created": streamed[0]["created"], "model": model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant",
                                                          "content": text,
                                                          "tool_calls": calls or None}}],
                                 "usage": streamed[-1]["usage"]})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may hang up on an aborted turn
            for c in streamed:
                self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
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
    print(f"fake_chat: listening on {args.host}:{port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        api.serve_forever()


if __name__ == "__main__":
    main()
