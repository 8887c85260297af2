"""A scripted Gemini API (generativelanguage, v1beta) on 127.0.0.1, for driving the real Gemini
CLI offline.

    python3 tests/support/fake_gemini.py --port 0 --port-file DIR/port --log DIR/requests.jsonl \
        --script DIR/turns.json

Stdlib only, like tests/support/fake_openai.py (its twin for Codex). Gemini CLI reaches it with
``GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:PORT`` and any ``GEMINI_API_KEY`` (API-key auth,
``security.auth.selectedType: "gemini-api-key"`` in its settings.json). Gemini CLI 0.61 asks:

- ``POST /v1beta/models/MODEL:streamGenerateContent?alt=sse`` for every turn of the
  conversation (``main``; it offers the tools), answered as server-sent events, one
  ``data: {GenerateContentResponse}`` chunk with every part and ``finishReason: "STOP"``;
- ``POST /v1beta/models/MODEL:generateContent`` for side questions (``side``), each with a
  JSON schema (``generationConfig.responseJsonSchema``): the router that picks a model for a
  prompt (a complexity score), and, every few turns, a check of whether the conversation
  loops (a confidence). The fake fills the schema in (each required property: an enum's first
  value, a string, 1 for an integer, 0 for a number: a simple prompt, no loop) unless a rule
  or ``side_reply`` says otherwise;
- ``:countTokens`` (``count``) is answered with a small count; anything else 404 (``unknown``).

Every request is appended to the log as one JSON line: ``seq``, ``t`` (epoch seconds, taken
when the request was read, before any ``delay``), ``method``, ``path``, ``model`` (from the
path), ``kind``, ``served`` (the id of the rule that answered, or null), ``headers`` (the API
key masked) and ``body`` (the parsed JSON).

The script (re-read on every request, so it may change while Gemini runs)::

    {"default_reply": "OK",        # a main request that no rule answers
     "side_reply": "...",          # a side request that no rule answers (default: JSON that
                                   # fits the requested schema, else default_reply)
     "rules": [{"id": "read", "when": {"last_user_contains": "check messages"}, "delay": 0,
                "times": 1, "reply": [{"type": "function_call",
                                       "name": "mcp_bridge_read_messages",
                                       "arguments": {"wait_seconds": 0}}]}]}

The first rule that is not used up (``times``: default 1, -1 for unlimited) and whose
``when`` holds answers. ``when`` (every key must hold; a value may be a string or a list):
``last_user_contains`` / ``last_user_not_contains`` (the contents after the last one the model
produced: what this request brings, a user's text or a function's response),
``contains`` (any content), ``body_contains`` (the whole body, system instruction and tools
included), ``header_contains`` (the request's headers as JSON), ``after`` (rule ids that must
have answered before), ``kind`` (``main`` by default, ``side`` or ``any``). ``reply`` is a
string or a list of ``text`` and ``function_call`` items (``name``, ``arguments``: an object);
``delay`` waits that many seconds before answering; ``error`` (``{"status": 500, "message":
...}``) answers with that HTTP error instead.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import re
import sys
import threading
import time
from typing import Any

Json = dict[str, Any]

PATH_RE = re.compile(r"/models/([^/:]+):(\w+)$")
KINDS = {"streamGenerateContent": "main", "generateContent": "side", "countTokens": "count"}


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
            print(f"fake_gemini: cannot read the script {self.path}: {e}", file=sys.stderr)
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def answer(self, kind: str, body: Json, headers: Json) -> tuple[str | None, Json]:
        """(rule id or None, the rule that answers this request)."""
        script = self.load()
        with self.lock:
            for i, rule in enumerate(script.get("rules", [])):
                rule_id = str(rule.get("id") or f"rule{i}")
                used = self.fired.get(rule_id, 0)
                times = int(rule.get("times", 1))
                if (times == -1 or used < times) and self.holds(rule.get("when") or {},
                                                                 kind, body, headers):
                    self.fired[rule_id] = used + 1
                    return rule_id, rule
        fallback = script.get("default_reply", "OK")
        if kind == "side":
            fallback = script.get("side_reply", structured_reply(body) or fallback)
        return None, {"reply": fallback}

    def holds(self, when: Json, kind: str, body: Json, headers: Json) -> bool:
        wanted = when.get("kind", "main")
        if wanted != "any" and kind != wanted:
            return False
        contents = body_contents(body)
        new = json.dumps(since_last_reply(contents), ensure_ascii=False)
        checks = [
            (when.get("last_user_contains"), new, True),
            (when.get("last_user_not_contains"), new, False),
            (when.get("contains"), json.dumps(contents, ensure_ascii=False), True),
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


def body_contents(body: Any) -> list[Json]:
    contents = body.get("contents") if isinstance(body, dict) else None
    return [c for c in contents or [] if isinstance(c, dict)]


def since_last_reply(contents: list[Json]) -> list[Json]:
    """The contents after the last one the model produced: what this request brings."""
    new: list[Json] = []
    for content in reversed(contents):
        if content.get("role") == "model":
            break
        new.append(content)
    return new[::-1]


def part_text(part: Json) -> str:
    """A part as text: its text, or a function call's or response's JSON."""
    if isinstance(part.get("text"), str):
        return str(part["text"])
    for key in ("functionCall", "functionResponse"):
        if key in part:
            return json.dumps({key: part[key]}, ensure_ascii=False)
    return ""


def fill(schema: Any) -> Any:
    """A value that fits a (simple) JSON schema: an object with every required property, an
    enum's first value, a string, a number (its minimum, else 1 for an integer and 0 for a
    number), false, a list of one."""
    if not isinstance(schema, dict):
        return "Fake"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "string")).lower()
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: fill(properties.get(name)) for name in schema.get("required") or []}
    if kind == "array":
        return [fill(schema.get("items"))]
    if kind == "integer":  # 1: Gemini CLI's router wants a complexity score of 1 to 100
        return schema.get("minimum", 1)
    if kind == "number":  # 0: its loop check reads a confidence (0.0 to 1.0) that it loops
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return "Fake"


def structured_reply(body: Json) -> str | None:
    """For a request that asks for JSON (``responseJsonSchema`` or ``responseSchema`` in its
    ``generationConfig``, e.g. Gemini CLI's routing classifier), JSON that fits; else None."""
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    if not isinstance(schema, dict):
        return None
    return json.dumps(fill(schema))


def reply_parts(reply: Any) -> list[Json]:
    """The reply as Gemini content parts."""
    if isinstance(reply, str):
        reply = [{"type": "text", "text": reply}]
    parts: list[Json] = []
    for item in reply:
        kind = item.get("type")
        if kind == "text":
            parts.append({"text": item["text"]})
        elif kind == "function_call":
            call: Json = {"name": item["name"], "args": item.get("arguments") or {}}
            if item.get("call_id"):
                call["id"] = item["call_id"]
            parts.append({"functionCall": call})
        else:
            raise ValueError(f"fake_gemini: a reply item must be text or function_call: {item}")
    return parts


def response(parts: list[Json], model: str) -> Json:
    return {"candidates": [{"content": {"role": "model", "parts": parts},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                              "totalTokenCount": 15},
            "modelVersion": model, "responseId": f"fake-{time.time_ns()}"}


class Api(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, log_path: str, script: Script,
                 host: str = "127.0.0.1") -> None:
        super().__init__((host, port), Handler)
        self.log_path, self.script = log_path, script
        self.seq = 0
        self.lock = threading.Lock()

    def record(self, t: float, method: str, path: str, model: str | None, kind: str,
               headers: Json, body: Any, served: str | None = None) -> None:
        with self.lock:
            self.seq += 1
            line = json.dumps({"seq": self.seq, "t": t, "method": method, "path": path,
                               "model": model, "kind": kind, "served": served,
                               "headers": headers, "body": body}, ensure_ascii=False)
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
            if name.lower() in ("x-goog-api-key", "authorization"):
                value = value[:4] + "…"
            seen[name.lower()] = value
        return seen

    def read_body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode("utf-8", "replace")

    def do_POST(self) -> None:
        t = time.time()
        body = self.read_body()
        match = PATH_RE.search(self.path.split("?")[0])
        kind = KINDS.get(match.group(2), "unknown") if match else "unknown"
        model = match.group(1) if match else None
        if kind == "unknown" or not isinstance(body, dict):
            self.unknown(t, model, body)
        elif kind == "count":
            self.server.record(t, "POST", self.path, model, kind, self.headers_seen(), body)
            self.send_json(200, {"totalTokens": 10})
        else:
            self.model_turn(t, kind, str(model), body)

    def do_GET(self) -> None:
        self.unknown(time.time(), None, None)

    def unknown(self, t: float, model: str | None, body: Any) -> None:
        self.server.record(t, self.command, self.path, model, "unknown", self.headers_seen(),
                           body)
        self.send_json(404, {"error": {"code": 404, "status": "NOT_FOUND",
                                       "message": f"fake_gemini: no such path {self.path}"}})

    def send_json(self, status: int, payload: Json) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def model_turn(self, t: float, kind: str, model: str, body: Json) -> None:
        headers = self.headers_seen()
        rule_id, rule = self.server.script.answer(kind, body, headers)
        self.server.record(t, "POST", self.path, model, kind, headers, body, rule_id)
        if rule.get("delay"):
            time.sleep(float(rule["delay"]))
        if rule.get("error"):
            error = rule["error"] if isinstance(rule["error"], dict) else {}
            status = int(error.get("status", 500))
            self.send_json(status, {"error": {
                "code": status, "status": error.get("code", "INTERNAL"),
                "message": error.get("message", "fake_gemini: a scripted error")}})
            return
        answer = response(reply_parts(rule.get("reply", "OK")), model)
        if kind != "main":
            self.send_json(200, answer)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        with contextlib.suppress(OSError):  # Gemini may hang up on a cancelled turn
            self.wfile.write(f"data: {json.dumps(answer)}\r\n\r\n".encode())
            self.wfile.flush()


# ---- reading the log (for tests) -------------------------------------------------------


def load_log(path: str) -> list[Json]:
    """The request log's records (a line still being written is skipped)."""
    records = []
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


def function_calls(records: list[Json]) -> list[Json]:
    """Every function call the model made, from the main requests that carry it back, with
    its response: ``name``, ``args``, ``response`` (the functionResponse's ``response``),
    ``seq`` (the request that brought the response)."""
    calls: list[Json] = []
    for record in records:
        if record.get("kind") != "main":
            continue
        contents = body_contents(record.get("body"))
        pending: list[Json] = []
        for content in contents:
            for part in content.get("parts") or []:
                if "functionCall" in part:
                    pending.append({"name": part["functionCall"].get("name"),
                                    "args": part["functionCall"].get("args"),
                                    "response": None, "seq": None})
                elif "functionResponse" in part:
                    for call in pending:
                        if call["response"] is None and call["name"] == (
                                part["functionResponse"].get("name")):
                            call["response"] = part["functionResponse"].get("response")
                            call["seq"] = record.get("seq")
                            break
        for call in pending:
            if call["response"] is not None and not any(
                    c["name"] == call["name"] and c["args"] == call["args"]
                    and c["response"] == call["response"] for c in calls):
                calls.append(call)
    return calls


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
    print(f"fake_gemini: listening on {args.host}:{port}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        api.serve_forever()


if __name__ == "__main__":
    main()
