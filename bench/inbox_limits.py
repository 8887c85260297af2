"""Measure Claude Code's session inbox (CLAUDE_CODE_MESSAGING_SOCKET) with the real binary.

Issue 12, item 3: how many posts one sender may make (burst, refill), how long an identical
body is refused, how big a post may be, how fast a post reaches the model, and whether queued
posts share a turn. The figures and what a server should do about them: docs/inbox.md.

Run (stdlib only; root is used for a private loopback-only network namespace when available):

    python3 bench/inbox_limits.py --claude .cache/claude/node_modules/.bin/claude \
        [--only auth,burst,...] [--json out.json]

Groups (--only, default all, ~9 min): auth burst refill dedup timing queue (one interactive
session), size (its own session), bypass (--dangerously-skip-permissions; IS_SANDBOX=1 lets
root use it), flag (limits seeded through GrowthBook), print (`claude -p`). It prints each
figure; Claude Code's request and debug logs stay in --run-dir.

It drives Claude Code with the tests' driver (tests/support/claude_driver.py), which starts the
real `claude` in tmux against a scripted fake Messages API on 127.0.0.1
(tests/support/fake_api.py).
Nothing leaves the machine: the model is fake, and every request Claude Code makes is logged.

How it counts: a tiny MCP server (this file, `_mcp`) is started by Claude Code, so it gets the
inbox variables; it writes them to a file and takes commands on a control socket. Each post
carries a unique marker (`MK.<tag>.<nnnn>`). A post counts as delivered when its marker is in
a user or system message the fake API received; the turns are the model requests that
brought new markers. Claude Code's debug log ("[peer-guard] drop <reason>") is counted too.
Every sender is a new process unless the experiment says otherwise, because Claude Code keys
its rate limit on the sender's pid (or the frame's `from`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Any

HERE = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository, for tests/
from tests.support import claude_driver  # noqa: E402 (stdlib only, like this file)

MARK_RE = re.compile(r"MK\.([A-Za-z0-9]+)\.(\d{4})")
GUARD_RE = re.compile(r"\[peer-guard\] drop ([a-z-]+) from")

# The fake model: answer "OK" at once; a post that says BUSY-<n> keeps the model "thinking"
# n seconds; TOOL-<n> makes it call the probe's sleep tool for n seconds.
TURNS = {
    "default_reply": "OK",
    "side_reply": "OK",
    "rules": (
        [{"id": f"busy{n}", "when": {"last_user_contains": f"BUSY-{n}"}, "delay": n,
          "reply": f"DONE-BUSY-{n}", "times": -1} for n in (4, 6, 8)]
        + [{"id": f"tool{n}", "when": {"last_user_contains": f"TOOL-{n}",
                                       "last_user_not_contains": "SLEPT"},
            "reply": [{"type": "tool_use", "name": "mcp__probe__sleep",
                       "input": {"seconds": n}}], "times": -1} for n in (5,)]
        + [{"id": "print", "when": {"last_user_contains": "PRINT-START"}, "delay": 4,
            "reply": "PRINT-REPLY", "times": 1}]
    ),
}


# --------------------------------------------------------------------------------------------
# posting (used by the probe server, by fresh sender processes, and by this process)
# --------------------------------------------------------------------------------------------
def frame(body: str, sender_from: str | None, ascii_only: bool = True) -> bytes:
    msg: dict[str, Any] = {"type": "user", "message": {"role": "user", "content": body}}
    if sender_from is not None:
        msg["from"] = sender_from
    line = json.dumps(msg, separators=(",", ":"), ensure_ascii=ascii_only) + "\n"
    return line.encode()


def do_posts(sock_path: str, token: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Post spec["items"] ([[offset_s, body], ...]) on one connection or one per post."""
    auth = spec.get("auth", "right")
    each = spec.get("conn", "one") == "each"
    sender_from = spec.get("from")
    ascii_only = spec.get("ascii", True)
    conn: socket.socket | None = None
    sent: list[dict[str, Any]] = []

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock_path)
        if auth != "none":
            tok = token if auth == "right" else "0" * len(token or "x" * 32)
            s.sendall((json.dumps({"type": "auth", "token": tok}) + "\n").encode())
        return s

    t0 = time.time()
    for k, (off, body) in enumerate(spec["items"]):
        delay = t0 + float(off) - time.time()
        if delay > 0:
            time.sleep(delay)
        rec: dict[str, Any] = {"t": time.time(), "len": len(body), "item": k}
        try:
            if conn is None:
                conn = connect()
            who = f"{sender_from}-{k}" if sender_from == "distinct" else sender_from
            conn.sendall(frame(body, who, ascii_only))
            rec["ok"] = True
        except OSError as e:
            rec["ok"], rec["error"] = False, f"{type(e).__name__}: {e}"
            conn = None
        if each and conn is not None:
            conn.close()
            conn = None
        rec["done"] = time.time()
        sent.append(rec)
    if conn is not None:
        time.sleep(0.2)
        conn.close()
    return {"pid": os.getpid(), "sent": sent}


def run_worker() -> None:
    """`_worker`: a fresh sender process. Reads {socket, token, spec} on stdin."""
    req = json.load(sys.stdin)
    json.dump(do_posts(req["socket"], req["token"], req["spec"]), sys.stdout)


def post_in_fresh_process(sock_path: str, token: str, spec: dict[str, Any]) -> dict[str, Any]:
    p = subprocess.run([sys.executable, HERE, "_worker"], input=json.dumps(
        {"socket": sock_path, "token": token, "spec": spec}), capture_output=True, text=True,
        timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"worker failed: {p.stderr[-500:]}")
    return dict(json.loads(p.stdout))


# --------------------------------------------------------------------------------------------
# the probe MCP server (`_mcp --out FILE --ctl SOCK`), stdlib only, legacy handshake
# --------------------------------------------------------------------------------------------
def run_mcp(out_path: str, ctl_path: str) -> None:
    sock_path = os.environ.get("CLAUDE_CODE_MESSAGING_SOCKET", "")
    token = os.environ.get("CLAUDE_CODE_MESSAGING_TOKEN", "")
    lock = threading.Lock()

    def send(msg: dict[str, Any]) -> None:
        with lock:
            sys.stdout.write(json.dumps(msg) + "\n")
            sys.stdout.flush()

    def control() -> None:
        if os.path.exists(ctl_path):
            os.unlink(ctl_path)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(ctl_path)
        srv.listen(8)
        while True:
            c, _ = srv.accept()
            threading.Thread(target=serve_ctl, args=(c,), daemon=True).start()

    def serve_ctl(c: socket.socket) -> None:
        with c, c.makefile("rw") as f:
            for line in f:
                cmd = json.loads(line)
                try:
                    if cmd.get("proc") == "fresh":  # a new child of this server
                        res = post_in_fresh_process(sock_path, token, cmd["spec"])
                    else:  # this server process itself
                        res = do_posts(sock_path, token, cmd["spec"])
                except Exception as e:  # noqa: BLE001 - reported to the driver
                    res = {"error": f"{type(e).__name__}: {e}"}
                f.write(json.dumps(res) + "\n")
                f.flush()

    threading.Thread(target=control, daemon=True).start()
    with open(out_path + ".tmp", "w") as f:
        json.dump({"socket": sock_path, "token": token, "pid": os.getpid(),
                   "ppid": os.getppid(), "ctl": ctl_path}, f)
    os.replace(out_path + ".tmp", out_path)
    tools = [{"name": "sleep", "description": "Sleep N seconds, then answer SLEPT.",
              "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}}}]
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        mid, method = msg.get("id"), msg.get("method")
        if mid is None or method is None:
            continue
        params = msg.get("params") or {}
        if method == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}}, "serverInfo": {"name": "probe", "version": "0"}}
        elif method == "tools/list":
            result = {"tools": tools}
        elif method == "tools/call":
            secs = float((params.get("arguments") or {}).get("seconds", 1))

            def later(mid: Any = mid, secs: float = secs) -> None:
                time.sleep(secs)
                send({"jsonrpc": "2.0", "id": mid,
                      "result": {"content": [{"type": "text", "text": f"SLEPT {secs}"}]}})
            threading.Thread(target=later, daemon=True).start()
            continue
        elif method == "ping":
            result = {}
        else:
            send({"jsonrpc": "2.0", "id": mid,
                  "error": {"code": -32601, "message": f"Method not found: {method}"}})
            continue
        send({"jsonrpc": "2.0", "id": mid, "result": result})


# --------------------------------------------------------------------------------------------
# driving one Claude Code session through the driver
# --------------------------------------------------------------------------------------------
class Session:
    def __init__(self, claude: str, run_dir: str, mode: str = "interactive",
                 prompt: str | None = None, claude_args: list[str] | None = None,
                 settings: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None,
                 growthbook: dict[str, Any] | None = None) -> None:
        self.mode = mode
        os.makedirs(run_dir, exist_ok=True)
        self.run_dir = run_dir
        d = os.path.join(run_dir, "cc")
        self.info_path = os.path.join(d, "probe.json")
        spec = {"name": "cc", "turns": TURNS, "channels": [], "prompt": prompt,
                "claude_args": claude_args or [], "env": env or {},
                "mcp_servers": {"probe": {"command": sys.executable, "args": [
                    HERE, "_mcp", "--out", self.info_path, "--ctl", os.path.join(d, "ctl.sock")]}}}
        sc = {"mode": mode, "instances": [spec], "timeout": 600, "settle_timeout": 30,
              "growthbook": growthbook or {}}
        self.run = claude_driver.Run(claude, run_dir, sc)
        self.inst = self.run.add_instance(spec)
        if settings:
            os.makedirs(os.path.join(self.inst.home, ".claude"), exist_ok=True)
            with open(os.path.join(self.inst.home, ".claude", "settings.json"), "w") as f:
                json.dump(settings, f)
        self.info: dict[str, Any] = {}

    def start(self, timeout: float = 90) -> None:
        self.run.launch(self.inst)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.mode == "interactive":
                self.run.step(self.inst)
            if os.path.exists(self.info_path) and (self.mode == "print"
                                                   or self.inst.prompt_sent):
                with open(self.info_path) as f:
                    self.info = json.load(f)
                if self.mode == "interactive":
                    time.sleep(1.0)  # let the prompt settle before the first post
                return
            time.sleep(0.2)
        raise RuntimeError(f"Claude Code did not come up; see {self.inst.dir}")

    def stop(self) -> None:
        self.run.shutdown()

    # ---- posting ----------------------------------------------------------------------------
    def post(self, items: list[tuple[float, str]], proc: str = "fresh",
             **spec: Any) -> dict[str, Any]:
        """proc: fresh (new child of the MCP server), self (the MCP server process), outside
        (a new process that is no descendant of Claude Code)."""
        spec = dict(spec, items=items)
        if proc == "outside":
            return post_in_fresh_process(self.info["socket"], self.info["token"], spec)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(self.info["ctl"])
            c.sendall((json.dumps({"proc": proc, "spec": spec}) + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = c.recv(65536)
                if not chunk:
                    break
                buf += chunk
        return dict(json.loads(buf))

    # ---- counting ---------------------------------------------------------------------------
    def requests(self) -> list[dict[str, Any]]:
        out = []
        for r in claude_driver.load_log(self.inst.log):
            b = r.get("body")
            if r.get("kind") == "main" and isinstance(b, dict) and "messages" in b:
                out.append(r)
        return out

    def scan(self, tag: str) -> dict[str, Any]:
        """Markers of `tag` seen: first request (seq, t) for each, occurrences in the last
        request's history, and the requests that brought new ones (the turns)."""
        first: dict[str, tuple[int, float]] = {}
        turns: list[dict[str, Any]] = []
        reqs = self.requests()
        for r in reqs:
            tail = trailing(r["body"]["messages"])
            text = "\n".join(t for m in tail for t in claude_driver.texts(m.get("content")))
            new = [mk for mk in dict.fromkeys(f"MK.{a}.{b}" for a, b in MARK_RE.findall(text)
                                              if a == tag) if mk not in first]
            for mk in new:
                first[mk] = (r["seq"], r["t"])
            if new:
                turns.append({"seq": r["seq"], "t": r["t"], "new": len(new),
                              "roles": sorted({m.get("role") for m in tail})})
        occ: dict[str, int] = {}
        if reqs:
            for m in reqs[-1]["body"]["messages"]:
                if m.get("role") in ("user", "system"):
                    for t in claude_driver.texts(m.get("content")):
                        for a, b in MARK_RE.findall(t):
                            if a == tag:
                                occ[f"MK.{a}.{b}"] = occ.get(f"MK.{a}.{b}", 0) + 1
        return {"first": first, "turns": turns, "occurrences": occ}

    def texts_with(self, marker: str) -> list[str]:
        """Every distinct user/system text block (last request) that carries `marker`."""
        reqs = self.requests()
        if not reqs:
            return []
        return [t for m in reqs[-1]["body"]["messages"] if m.get("role") in ("user", "system")
                for t in claude_driver.texts(m.get("content")) if marker in t]

    def guard_drops(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        try:
            with open(self.inst.debug, errors="replace") as f:
                for reason in GUARD_RE.findall(f.read()):
                    counts[reason] = counts.get(reason, 0) + 1
        except OSError:
            pass
        return counts

    def settle(self, tag: str, quiet: float = 3.0, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until no new marker of `tag` has arrived for `quiet` seconds."""
        last, changed = -1, time.time()
        deadline = time.time() + timeout
        while time.time() < deadline:
            n = len(self.scan(tag)["first"]) + len(self.requests())
            if n != last:
                last, changed = n, time.time()
            elif time.time() - changed >= quiet:
                break
            time.sleep(0.25)
        return self.scan(tag)


def trailing(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages after the last assistant message: what this request brought."""
    out: list[dict[str, Any]] = []
    for m in reversed(messages):
        if m.get("role") == "assistant":
            break
        out.append(m)
    return list(reversed(out))


def bodies(tag: str, n: int, start: int = 0, pad: str = "") -> list[str]:
    return [f"MK.{tag}.{i:04d} bench post {i}{pad}" for i in range(start, start + n)]


def burst(tag: str, n: int, start: int = 0) -> list[tuple[float, str]]:
    return [(0.0, b) for b in bodies(tag, n, start)]


def delivered(s: Session, tag: str, quiet: float = 3.0) -> int:
    return len(s.settle(tag, quiet)["first"])


# --------------------------------------------------------------------------------------------
# experiments: each returns a dict of figures
# --------------------------------------------------------------------------------------------
def exp_auth(s: Session) -> dict[str, Any]:
    """Q5: no auth line / wrong token / right token, from the MCP child and from outside."""
    out: dict[str, Any] = {}
    i = 0
    for proc in ("self", "outside"):
        for auth in ("none", "wrong", "right"):
            tag = f"A{i}"
            s.post([(0.0, bodies(tag, 1)[0])], proc=proc, auth=auth)
            out[f"{proc}/{auth}"] = delivered(s, tag, quiet=2.0)
            i += 1
    return out


def exp_burst(s: Session) -> dict[str, Any]:
    """Q1: back-to-back posts; per connection, per process, per token, per `from`."""
    out: dict[str, Any] = {}
    s.post(burst("B1", 40), proc="fresh", conn="one")
    out["fresh process, one connection: 40 sent"] = delivered(s, "B1")
    order = [int(b) for text in s.texts_with("MK.B1.") for a, b in MARK_RE.findall(text)
             if a == "B1"]
    out["fresh process, one connection: which were delivered, in what order"] = (
        f"{order[:3]}...{order[-3:]}, in the order sent: {order == sorted(order)}")
    out["fresh process, one connection: turns the delivered posts took"] = len(
        s.scan("B1")["turns"])
    text = s.texts_with("MK.B1.0000 ")
    out["characters Claude Code wraps around each post (idle)"] = (
        len(text[0]) - len(bodies("B1", 1)[0]) if text else None)
    s.post(burst("B2", 40), proc="fresh", conn="each")
    out["fresh process, a connection per post: 40 sent"] = delivered(s, "B2")
    s.post(burst("B3", 40), proc="fresh", conn="one", auth="none")
    out["fresh process, no auth line: 40 sent"] = delivered(s, "B3")
    # per process: A drains its bucket, B (same token) posts right after, then A again
    t0 = time.time()
    s.post(burst("B4", 40), proc="fresh")
    a = delivered(s, "B4", quiet=2.0)
    res = s.post(burst("B5", 40), proc="self")
    b = delivered(s, "B5", quiet=2.0)
    out["process A (fresh): 40 sent"] = a
    out["process B (the MCP server) right after A: 40 sent"] = b
    out["seconds between A's and B's bursts"] = round(res["sent"][0]["t"] - t0, 1)
    # the same process again after its burst: only the refill
    res2 = s.post(burst("B6", 10), proc="self")
    out["process B again, 10 sent, seconds after its burst"] = round(
        res2["sent"][0]["t"] - res["sent"][0]["t"], 1)
    out["process B again: delivered"] = delivered(s, "B6", quiet=2.0)
    # the frame's `from` field: two fresh processes that give the same `from`
    s.post(burst("B7", 20), proc="fresh", **{"from": "bench-shared-from"})
    s.post(burst("B8", 20), proc="fresh", **{"from": "bench-shared-from"})
    out["two fresh processes, same `from`, 20+20 sent"] = (
        delivered(s, "B7", quiet=2.0) + delivered(s, "B8", quiet=2.0))
    s.post(burst("B9", 40), proc="fresh", **{"from": "distinct"})
    out["one fresh process, a different `from` on each post, 40 sent"] = delivered(s, "B9")
    return out


def exp_refill(s: Session) -> dict[str, Any]:
    """Q1: after a burst of 30, one post every P s for 30 s."""
    out: dict[str, Any] = {}
    for k, period in enumerate((0.5, 1.0, 2.0, 3.0)):
        tag = f"R{k}"
        items = [(0.0, b) for b in bodies(tag, 30)]
        n = int(30 / period)
        items += [(0.5 + period * (j + 1), b) for j, b in enumerate(bodies(tag, n, start=30))]
        s.post(items, proc="fresh")
        sc = s.settle(tag)
        firsts = sc["first"]
        burst_n = sum(1 for mk in firsts if int(mk.rsplit(".", 1)[1]) < 30)
        paced = sum(1 for mk in firsts if int(mk.rsplit(".", 1)[1]) >= 30)
        out[f"every {period} s"] = {"burst delivered": burst_n, "paced sent": n,
                                    "paced delivered": paced,
                                    "paced per second": round(paced / (n * period), 2)}
    return out


def exp_dedup(s: Session) -> dict[str, Any]:
    """Q2: the same body again after d seconds (one fresh process per d, in parallel);
    and A, B, A."""
    out: dict[str, Any] = {}
    delays = (1, 5, 25, 29, 31, 35, 60)
    threads, tags = [], {}
    for k, d in enumerate(delays):
        tag = f"D{k}"
        tags[d] = tag
        body = bodies(tag, 1)[0]
        th = threading.Thread(target=s.post, args=([(0.0, body), (float(d), body)],),
                              kwargs={"proc": "fresh"})
        th.start()
        threads.append(th)
    same = bodies("D8", 1)[0]
    s.post([(0.0, same)], proc="fresh")
    s.post([(0.0, same)], proc="fresh")
    tag = "D9"
    a, b = bodies(tag, 2)
    s.post([(0.0, a), (1.0, b), (2.0, a)], proc="fresh")
    for th in threads:
        th.join()
    for d, tg in tags.items():
        sc = s.settle(tg, quiet=2.0)
        out[f"identical body again after {d} s"] = sum(sc["occurrences"].values())
    sc = s.settle(tag, quiet=2.0)
    out["A, B, A one second apart"] = sum(sc["occurrences"].values())
    sc = s.settle("D8", quiet=2.0)
    out["identical body from two processes, back to back"] = sum(sc["occurrences"].values())
    return out


def exp_timing(s: Session) -> dict[str, Any]:
    """Q4: idle wake latency; a post mid-turn (model busy; tool running); posts queued
    while busy."""
    out: dict[str, Any] = {}
    items = [(3.0 * j, b) for j, b in enumerate(bodies("T1", 5))]
    res = s.post(items, proc="fresh")
    sc = s.settle("T1")
    lat = []
    for rec, body in zip(res["sent"], bodies("T1", 5), strict=True):
        mk = body.split()[0]
        if mk in sc["first"]:
            lat.append(round(sc["first"][mk][1] - rec["t"], 3))
    out["idle: post -> model request, seconds (5 posts, 3 s apart)"] = lat
    # mid-turn, model streaming: BUSY-6 keeps the reply 6 s; post at +2 s
    s.post([(0.0, "MK.T2.0000 BUSY-6 start a long reply"), (2.0, "MK.T2.0001 posted mid-turn")],
           proc="fresh")
    sc = s.settle("T2", quiet=4.0)
    f = sc["first"]
    if "MK.T2.0000" in f and "MK.T2.0001" in f:
        out["model busy 6 s, post at +2 s: arrives after the busy request, seconds"] = round(
            f["MK.T2.0001"][1] - f["MK.T2.0000"][1], 2)
        out["model busy: turns for the two posts"] = len(sc["turns"])
        out["model busy: how the mid-turn post arrived (roles)"] = sc["turns"][-1]["roles"]
    # mid-turn, tool running 5 s: post at +2 s
    s.post([(0.0, "MK.T3.0000 TOOL-5 run the sleep tool"), (2.0, "MK.T3.0001 posted mid-tool")],
           proc="fresh")
    sc = s.settle("T3", quiet=4.0)
    f = sc["first"]
    if "MK.T3.0001" in f:
        reqs = {r["seq"]: r for r in s.requests()}
        r = reqs[f["MK.T3.0001"][0]]
        carries_result = "SLEPT" in json.dumps(trailing(r["body"]["messages"]))
        out["tool running 5 s, post at +2 s: seconds after the tool call started"] = round(
            f["MK.T3.0001"][1] - f["MK.T3.0000"][1], 2)
        out["tool running: arrived with the tool result (same turn)"] = carries_result
        out["tool running: roles of that request's new messages"] = sorted(
            {m.get("role") for m in trailing(r["body"]["messages"])})
        texts = s.texts_with("MK.T3.0001")
        out["tool running: text begins"] = texts[0][:80] if texts else None
    # queued while busy: BUSY-8, then 20 posts 0.2 s apart (one fresh process)
    items = [(0.0, "MK.T4.0000 BUSY-8 a long reply")]
    items += [(1.0 + 0.2 * j, b) for j, b in enumerate(bodies("T4", 20, start=1))]
    s.post(items, proc="fresh")
    sc = s.settle("T4", quiet=4.0)
    out["busy 8 s, 20 posts queued: delivered"] = len(sc["first"]) - 1
    out["busy 8 s, 20 posts queued: turns they took"] = len(sc["turns"]) - 1
    out["busy 8 s, 20 posts queued: posts per turn"] = [t["new"] for t in sc["turns"][1:]]
    return out


def exp_queue(s: Session) -> dict[str, Any]:
    """Queue cap: while busy, three fresh processes post 20 each (60 queued, each process
    within its own rate limit)."""
    s.post([(0.0, "MK.Q0.0000 BUSY-8 a long reply")], proc="fresh")
    time.sleep(1.0)
    ths = [threading.Thread(target=s.post, args=(burst(f"Q{k}", 20),), kwargs={"proc": "fresh"})
           for k in (1, 2, 3)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    n = sum(len(s.settle(f"Q{k}", quiet=10.0)["first"]) for k in (1, 2, 3))
    return {"busy, 3 processes x 20 posts queued: delivered": n}


def exp_size(s: Session) -> dict[str, Any]:
    """Q3: one post of N characters (ASCII): delivered whole? The cap is on the line."""
    out: dict[str, Any] = {}
    env_len = len(frame("", None))  # the frame around the body, newline included
    sizes = [("64 KiB", 65536), ("256 KiB", 262144), ("512 KiB", 524288),
             ("line = 1,048,576 chars", 1048576 - env_len),
             ("line = 1,048,577 chars", 1048577 - env_len), ("2 MiB", 2097152)]
    for k, (label, n) in enumerate(sizes):
        tag = f"S{k}"
        head = f"MK.{tag}.0000 "
        tail = f" END.{tag}"
        body = head + ("abcdefghij" * (n // 10 + 1))[: n - len(head) - len(tail)] + tail
        assert len(body) == n
        res = s.post([(0.0, body), (0.5, f"MK.{tag}.0001 after the big one, same connection")],
                     proc="fresh")
        sc = s.settle(tag, quiet=4.0)
        texts = s.texts_with(f"MK.{tag}.0000")
        whole = any(body in t for t in texts)
        out[label] = {"body chars": n, "delivered": f"MK.{tag}.0000" in sc["first"],
                      "whole": whole,
                      # the worker reconnects when a write fails, so this is "the same
                      # connection" only when the sender saw no error on the big post
                      "the post after it": f"MK.{tag}.0001" in sc["first"],
                      "sender errors (post index: error)": [
                          f'{r["item"]}: {r.get("error")}' for r in res["sent"] if not r.get("ok")]}
        if texts and not whole:
            out[label]["delivered chars"] = max(len(t) for t in texts)
    # non-ASCII: is the cap on characters or bytes, and do JSON escapes count?
    for k, (label, n, ascii_only) in enumerate([
            ("700,000 x 'é' written raw (1.4 MB of UTF-8)", 700000, False),
            ("200,000 x 'é' written as \\u00e9 escapes (1.2 M line chars)", 200000, True)]):
        tag = f"U{k}"
        body = f"MK.{tag}.0000 " + "é" * n
        res = s.post([(0.0, body)], proc="fresh", ascii=ascii_only)
        sc = s.settle(tag, quiet=4.0)
        out[label] = {"line bytes": len(frame(body, None, ascii_only)),
                      "delivered": f"MK.{tag}.0000" in sc["first"],
                      "whole": any(body in t for t in s.texts_with(f"MK.{tag}.0000")),
                      "sender errors": [r.get("error") for r in res["sent"] if not r.get("ok")]}
    return out


def exp_bypass(s: Session) -> dict[str, Any]:
    """Q5 in --dangerously-skip-permissions: who is let in without the Deny/Deliver hold."""
    out: dict[str, Any] = {}
    cases = [("self", "none"), ("self", "wrong"), ("self", "right"), ("fresh", "none"),
             ("fresh", "right"), ("outside", "none"), ("outside", "right")]
    for k, (proc, auth) in enumerate(cases):
        tag = f"X{k}"
        s.post([(0.0, bodies(tag, 1)[0])], proc=proc, auth=auth)
        out[f"{proc}/{auth}"] = delivered(s, tag, quiet=3.0)
    scr = s.run.screen(s.inst)
    out["Deny/Deliver dialog on screen at the end"] = bool(re.search(r"Deliver|Deny", scr))
    return out


EXPERIMENTS = {"auth": exp_auth, "burst": exp_burst, "refill": exp_refill, "dedup": exp_dedup,
               "timing": exp_timing, "queue": exp_queue}


def print_mode(claude: str, run_dir: str) -> dict[str, Any]:
    """Q6: claude -p with the probe; a post during the (4 s) reply."""
    s = Session(claude, run_dir, mode="print", prompt="PRINT-START hello")
    try:
        s.start()
        time.sleep(1.0)
        s.post([(0.0, "MK.P1.0000 posted during the print-mode run")], proc="fresh")
        deadline = time.time() + 60
        while time.time() < deadline and s.inst.process and s.inst.process.poll() is None:
            time.sleep(0.2)
        sc = s.scan("P1")
        with open(s.inst.path("claude.stdout"), errors="replace") as f:
            stdout = f.read()
        return {"delivered": "MK.P1.0000" in sc["first"], "model requests": len(s.requests()),
                "turns with the post": len(sc["turns"]),
                "exit code": s.inst.process and s.inst.process.returncode,
                "stdout": stdout.strip()[-200:]}
    finally:
        s.stop()


def maybe_isolate(mode: str) -> None:
    """Re-exec in a private network namespace (loopback only), as the driver does."""
    if mode == "no":
        return
    if not claude_driver.isolate_network([sys.executable, HERE, *sys.argv[1:]]) and mode == "yes":
        raise SystemExit("--isolate-net yes needs root, `ip` and a working `unshare -n`")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        run_worker()
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_mcp":
        p = argparse.ArgumentParser()
        p.add_argument("_mcp")
        p.add_argument("--out", required=True)
        p.add_argument("--ctl", required=True)
        a = p.parse_args()
        run_mcp(a.out, a.ctl)
        return
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--claude", default=os.environ.get("CLAUDE_BIN") or shutil.which("claude"))
    p.add_argument("--only", default="auth,burst,refill,dedup,timing,queue,size,bypass,flag,print",
                   help="comma-separated experiments")
    p.add_argument("--run-dir", default=None, help="logs (default: a new /tmp dir)")
    p.add_argument("--json", help="write the figures here too")
    p.add_argument("--isolate-net", choices=["auto", "yes", "no"], default="auto")
    a = p.parse_args()
    if not a.claude:
        raise SystemExit("no claude binary: give --claude PATH")
    maybe_isolate(a.isolate_net)
    run_dir = a.run_dir or f"/tmp/inbox_limits_{time.strftime('%Y%m%d_%H%M%S')}"
    version = subprocess.run([a.claude, "--version"], capture_output=True, text=True).stdout
    want = [w.strip() for w in a.only.split(",") if w.strip()]
    results: dict[str, Any] = {"claude": version.strip(),
                               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "run_dir": run_dir}
    print(f"Claude Code {version.strip()}; logs in {run_dir}", flush=True)

    def show(name: str, figs: Any) -> None:
        results[name] = figs
        print(f"\n== {name}", flush=True)
        for k, v in (figs.items() if isinstance(figs, dict) else [("", figs)]):
            print(f"  {k}: {v}", flush=True)

    main_exps = [w for w in want if w in EXPERIMENTS]
    if main_exps:
        s = Session(a.claude, os.path.join(run_dir, "interactive"))
        try:
            s.start()
            for name in main_exps:
                show(name, EXPERIMENTS[name](s))
            show("guard drops in the debug log (interactive session)", s.guard_drops())
        finally:
            s.stop()
    if "size" in want:
        s = Session(a.claude, os.path.join(run_dir, "size"))
        try:
            s.start()
            show("size", exp_size(s))
            show("guard drops in the debug log (size session)", s.guard_drops())
        finally:
            s.stop()
    if "bypass" in want:
        s = Session(a.claude, os.path.join(run_dir, "bypass"),
                    claude_args=["--dangerously-skip-permissions"],
                    settings={"skipDangerousModePermissionPrompt": True},
                    env={"IS_SANDBOX": "1"})  # root may use the flag only in a sandbox
        try:
            s.start()
            show("bypass", exp_bypass(s))
        finally:
            s.stop()
    if "flag" in want:
        # The limits come from the GrowthBook feature tengu_harbor_kite_limits (its fallback
        # is what the other experiments measure); seed other values and burst again.
        limits = {"bucketCapacity": 5, "refillPerSecond": 0.05, "dedupWindowMs": 0,
                  "maxQueuedPeerMessages": 10}
        s = Session(a.claude, os.path.join(run_dir, "flag"),
                    growthbook={"tengu_harbor_kite_limits": limits})
        try:
            s.start()
            s.post(burst("F1", 40), proc="fresh")
            same = bodies("F2", 1)[0]
            s.post([(0.0, same), (1.0, same)], proc="fresh")
            show("flag", {"seeded tengu_harbor_kite_limits": limits,
                          "burst of 40: delivered": delivered(s, "F1"),
                          "identical body 1 s later: copies delivered": sum(
                              s.settle("F2", quiet=2.0)["occurrences"].values())})
        finally:
            s.stop()
    if "print" in want:
        show("print", print_mode(a.claude, os.path.join(run_dir, "print")))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
