"""A scripted OpenAI Responses API on 127.0.0.1, for driving the real Codex CLI offline.

    python3 tests/support/fake_openai.py --port 0 --port-file DIR/port --log DIR/requests.jsonl \
        --script DIR/turns.json

Stdlib only, like tests/support/fake_api.py (its twin for Claude Code). Codex reaches it through a
custom model provider in its config.toml (``base_url = "http://127.0.0.1:PORT/v1"``,
``wire_api = "responses"``; tests/support/codex_driver.py writes one). Codex POSTs ``/v1/responses``
(streaming SSE) for every model request: the turns (``main``: they offer tools) and, after
the first prompt, one ``side`` request for the thread's title (no tools, its own thread id,
``thread_source: "thread_title"`` in its metadata, a JSON schema ``{"title": ...}`` for the
answer, which the fake fills in unless ``side_reply`` says otherwise). With a custom provider
Codex 0.171 asked nothing else; ``GET .../models`` is answered with an empty list, anything
else 404, and logged as ``models`` or ``unknown``.

Every request is appended to the log as one JSON line: ``seq``, ``t`` (epoch seconds, taken
when the request was read, before any ``delay``), ``method``, ``path``, ``kind`` (``main``: a
request that offers tools, i.e. a turn of the conversation; ``side``: a /v1/responses request
without tools, such as a title or a compaction; ``models``: the models list; ``unknown``: any
other path), ``served`` (the id of the rule that answered, or null), ``headers`` (the request's
headers, the Authorization value masked) and ``body`` (the parsed JSON).

The script (re-read on every request, so it may change while Codex runs)::

    {"default_reply": "OK",        # a main request that no rule answers
     "side_reply": "OK",           # a side request that no rule answers (default: JSON
                                   # that fits the requested schema, if any, else default_reply)
     "rules": [{"id": "send", "when": {"last_user_contains": "say hi"}, "delay": 0,
                "times": 1, "reply": [{"type": "function_call", "name": "send_message",
                                       "namespace": "mcp__bridge",
                                       "arguments": {"to": "bob", "text": "hi"}}]}]}

The first rule that is not used up (``times``: default 1, -1 for unlimited) and whose
``when`` holds answers. ``when`` (every key must hold; a value may be a string or a list):
``last_user_contains`` / ``last_user_not_contains`` (the input items after the last item the
model produced: what this request brings, a user message or a tool's output),
``contains`` (any input item), ``body_contains`` (the whole body, instructions included),
``header_contains`` (the request's headers as JSON), ``after`` (rule ids that must have
answered before), ``kind`` (``main`` by default, ``side`` or ``any``). ``reply`` is a string
or a list of ``text`` and ``function_call`` items (``name``, ``arguments``: an object or a JSON
string, optional ``call_id`` and ``namespace``); ``delay`` waits that many seconds before
answering (to land something mid-turn); ``error`` (``{"status": 500, "message": ...}``)
answers with that HTTP error instead. Codex 0.171 offers the tools of an MCP server as
one tool of type ``namespace`` named ``mcp__SERVER`` (its description is the server's
``instructions``), whose functions carry the tools' own names: a call must name the function
and its namespace (``"name": "send_message", "namespace": "mcp__bridge"``); Codex answers a
flat ``mcp__bridge__send_message`` with "unsupported call".
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

# what the model produced: the items a "what this request brings" look starts after
MODEL_ITEMS = {"function_call", "custom_tool_call", "reasoning", "local_shell_call",
               "web_search_call", "tool_search_call"}


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
            print(f"fake_openai: cannot read the script {self.path}: {e}", file=sys.stderr)
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
        fallback = script.get("default_reply", "OK")
        if request_kind(body) == "side":
            fallback = script.get("side_reply", structured_reply(body) or fallback)
        return None, {"reply": fallback}

    def holds(self, when: Json, body: Json, headers: Json) -> bool:
        wanted = when.get("kind", "main")
        if wanted != "any" and request_kind(body) != wanted:
            return False
        items = input_items(body)
        new = json.dumps(since_last_reply(items), ensure_ascii=False)
        checks = [
            (when.get("last_user_contains"), new, True),
            (when.get("last_user_not_contains"), new, False),
            (when.get("contains"), json.dumps(items, ensure_ascii=False), True),
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


def input_items(body: Json) -> list[Json]:
    items = body.get("input")
    if isinstance(items, str):
        return [{"type": "message", "role": "user", "content": items}]
    return [i for i in items or [] if isinstance(i, dict)]


def produced_by_model(item: Json) -> bool:
    return item.get("type") in MODEL_ITEMS or item.get("role") == "assistant"


def since_last_reply(items: list[Json]) -> list[Json]:
    """The input items after the last one the model produced: what this request brings."""
    new: list[Json] = []
    for item in reversed(items):
        if produced_by_model(item):
            break
        new.append(item)
    return new[::-1]


def item_texts(item: Json) -> list[str]:
    """The texts of one input item: a message's text parts, or a tool output."""
    content = item.get("content")
    if item.get("type") in ("function_call_output", "custom_tool_call_output"):
        content = item.get("output")
    if isinstance(content, str):
        return [content]
    found: list[str] = []
    for part in content or []:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            found.append(part["text"])
    return found


def user_texts(body: Json) -> list[str]:
    """The text of every user message in a request, in order."""
    return ["\n".join(item_texts(i)) for i in input_items(body)
            if i.get("type", "message") == "message" and i.get("role") == "user"]


def structured_reply(body: Json) -> str | None:
    """For a request that asks for JSON output (``text.format`` a json_schema, e.g. Codex's
    thread title: ``{"title": ...}``), a JSON object with a string for each required string
    property; None otherwise."""
    form = (body.get("text") or {}).get("format") or {}
    schema = form.get("schema") or {}
    if form.get("type") != "json_schema" or schema.get("type") != "object":
        return None
    properties = schema.get("properties") or {}
    return json.dumps({name: f"Fake {name}" for name in schema.get("required") or []
                       if (properties.get(name) or {}).get("type") == "string"})


def output_items(reply: Any) -> list[Json]:
    """The reply as Responses API output items."""
    if isinstance(reply, str):
        reply = [{"type": "text", "text": reply}]
    items: list[Json] = []
    for part in reply:
        kind = part.get("type")
        if kind == "text":
            items.append({"type": "message", "id": "msg_" + uuid.uuid4().hex[:24],
                          "role": "assistant", "status": "completed",
                          "content": [{"type": "output_text", "text": part["text"],
                                       "annotations": []}]})
        elif kind == "function_call":
            arguments = part.get("arguments", {})
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            item = {"type": "function_call", "id": "fc_" + uuid.uuid4().hex[:24],
                    "status": "completed", "name": part["name"], "arguments": arguments,
                    "call_id": part.get("call_id") or "call_" + uuid.uuid4().hex[:24]}
            if part.get("namespace"):
                item["namespace"] = part["namespace"]
            items.append(item)
        else:
            raise ValueError(f"fake_openai: a reply item must be text or function_call: {part}")
    return items


USAGE = {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0},
         "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
         "total_tokens": 15}


def sse_events(response: Json) -> list[Json]:
    """The Responses API's streaming events for one finished response."""
    started = dict(response, status="in_progress", output=[], usage=None)
    events: list[Json] = [{"type": "response.created", "response": started},
                          {"type": "response.in_progress", "response": started}]
    for index, item in enumerate(response["output"]):
        if item["type"] == "message":
            events.append({"type": "response.output_item.added", "output_index": index,
                           "item": dict(item, status="in_progress", content=[])})
            text = item["content"][0]["text"]
            events.append({"type": "response.content_part.added", "output_index": index,
                           "item_id": item["id"], "content_index": 0,
                           "part": {"type": "output_text", "text": "", "annotations": []}})
            events.append({"type": "response.output_text.delta", "output_index": index,
                           "item_id": item["id"], "content_index": 0, "delta": text})
            events.append({"type": "response.output_text.done", "output_index": index,
                           "item_id": item["id"], "content_index": 0, "text": text})
            events.append({"type": "response.content_part.done", "output_index": index,
                           "item_id": item["id"], "content_index": 0,
                           "part": item["content"][0]})
        else:
            events.append({"type": "response.output_item.added", "output_index": index,
                           "item": dict(item, status="in_progress", arguments="")})
            events.append({"type": "response.function_call_arguments.delta",
                           "output_index": index, "item_id": item["id"],
                           "delta": item["arguments"]})
            events.append({"type": "response.function_call_arguments.done",
                           "output_index": index, "item_id": item["id"],
                           "arguments": item["arguments"]})
        events.append({"type": "response.output_item.done", "output_index": index,
                       "item": item})
    events.append({"type": "response.completed", "response": response})
    return [dict(event, sequence_number=n) for n, event in enumerate(events)]


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
        seen = {}
        for name, value in self.headers.items():
            if name.lower() == "authorization":
                value = value[:12] + "…"
            seen[name.lower()] = value
        return seen

    def read_body(self) -> tuple[bytes, Any]:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if raw and "zstd" in (self.headers.get("content-encoding") or ""):
            return raw, "<zstd-compressed body: cannot decode with the stdlib>"
        try:
            return raw, json.loads(raw) if raw else None
        except ValueError:
            return raw, raw.decode("utf-8", "replace")

    def do_POST(self) -> None:
        t = time.time()
        _, body = self.read_body()
        path = self.path.split("?")[0]
        if path.endswith("/responses") and isinstance(body, dict):
            self.model_turn(t, body)
        else:
            self.unknown(t, body)

    def do_GET(self) -> None:
        t = time.time()
        path = self.path.split("?")[0]
        if path.endswith("/models"):
            self.server.record(t, "GET", self.path, "models", self.headers_seen(), None)
            self.send_json(200, {"object": "list", "data": [], "models": []})
        else:
            self.unknown(t, None)

    def unknown(self, t: float, body: Any) -> None:
        self.server.record(t, self.command, self.path, "unknown", self.headers_seen(), body)
        self.send_json(404, {"error": {"type": "not_found", "code": "not_found",
                                       "message": f"fake_openai: no such path {self.path}"}})

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
                "message": error.get("message", "fake_openai: a scripted error")}})
            return
        response = {"id": "resp_" + uuid.uuid4().hex[:24], "object": "response",
                    "created_at": int(time.time()), "status": "completed",
                    "model": body.get("model", "gpt-fake"),
                    "output": output_items(rule.get("reply", "OK")), "usage": USAGE}
        if not body.get("stream"):
            self.send_json(200, response)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        with contextlib.suppress(OSError):  # Codex may hang up on an aborted turn
            for event in sse_events(response):
                self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                                 .encode())
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
    print(f"fake_openai: listening on {args.host}:{port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        api.serve_forever()


if __name__ == "__main__":
    main()
