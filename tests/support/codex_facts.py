"""Measure what docs/codex-facts.md says about the real Codex CLI, with
tests/support/codex_driver.py.

    python3 tests/support/codex_facts.py --codex .cache/codex/node_modules/.bin/codex \
        [--runs 12] [--only basics,exec,more,...] [--out report.json]

Stdlib only. Runs one Codex at a time (a 2-core machine), each in its own throwaway HOME,
fake API and (as root) network namespace; prints each finding as it goes and writes them all
as JSON (default: <run dir>/report.json). About 3 minutes with the defaults.

- ``basics``: one interactive session (the default daemon) with two logging MCP servers
  (tests/support/codex_probe_mcp.py: ``probe`` with initialize instructions, ``plain`` without):
  initialize, tools/call ``_meta``, the MCP server's environment and parent, where the
  instructions end up, then ``codex queue`` into it: the wake time of the idle session over
  ``--runs`` runs and when the rollout's evidence lines are written, a queued turn that calls
  a tool, a message queued while a turn runs (and the queue row it waits in), one queued over a
  half-typed draft, one queued by the MCP server itself, one with ``--resume``, one with a
  wrong HOME, and one after the TUI quit (the daemon alone).
- ``exec``: ``codex exec`` with a message queued during its turn and after it ended, then
  ``codex exec resume``.
- ``no_daemon``: the TUI with ``--no-daemon``: how long a queued message waits.
- ``no_autostart``: the same with ``--disable daemon_auto_start``.
- ``codex_home``: a session whose CODEX_HOME is not ``HOME/.codex``: what its MCP server sees,
  and ``codex queue`` run with only that server's environment.
- ``env_vars``: whether an MCP server entry's ``env_vars`` passes CODEX_HOME through.
- ``idle_long``: a TUI idle for 90 s, then a queued message.
- ``unload``: after the TUI quits, how long its MCP server lives, and a message queued after.
- ``more``: a message queued before the first prompt, one with odd characters (verbatim?),
  and bursts of three queued messages, idle and while a turn runs.
- ``approvals``: approval_policy x sandbox_mode x the entry's default_tools_approval_mode: does
  a call of an MCP tool (no annotations, as bridge's) run, ask in the TUI, or fail, in a typed
  turn and in one woken by ``codex queue``? (~4 minutes)
- ``startup_grace``: a first prompt on the command line and an MCP server 3 s slow to start:
  are its tools in the first request, optional and with ``required = true``?
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

try:
    from tests.support.codex_driver import (
        PROBE_MCP,
        Codex,
        alive,
        brought,
        item_text,
        native_codex,
        tool_calls,
        turn_metadata,
        user_texts,
    )
except ImportError:  # pragma: no cover - run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from codex_driver import (  # type: ignore[no-redef]
        PROBE_MCP,
        Codex,
        alive,
        brought,
        item_text,
        native_codex,
        tool_calls,
        turn_metadata,
        user_texts,
    )

Json = dict[str, Any]
PROBE_INSTRUCTIONS = "PROBE-INSTRUCTIONS: say who you are when you send."
EXTRA_ENV = {"LOGNAME": "root", "SHELL": "/bin/bash", "TMPDIR": "/tmp", "TZ": "UTC",
             "LC_ALL": "C.UTF-8", "BRIDGE_PROBE_VAR": "1"}

REPORT: Json = {}


def note(section: str, key: str, value: Any) -> None:
    REPORT.setdefault(section, {})[key] = value
    shown = json.dumps(value, ensure_ascii=False)
    print(f"[{section}] {key}: {shown[:600]}{'…' if len(shown) > 600 else ''}", flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def stats(values: list[float]) -> Json:
    if not values:
        return {}
    return {"n": len(values), "min": round(min(values), 3), "p50": round(
        statistics.median(values), 3), "p90": round(pct(values, 0.9), 3),
        "max": round(max(values), 3)}


def queued_payload(row: Json) -> Json:
    try:
        return json.loads(row["payload_json"])
    except (KeyError, ValueError):
        return {}


# rollout records that tell a queued message's fate
def is_queue_start(record: Json) -> bool:
    payload = record.get("payload") or {}
    return payload.get("type") == "task_started" and (
        payload.get("turn_attribution") or {}).get("turn_trigger") == "queue"


def is_user_item(text: str):  # type: ignore[no-untyped-def]
    return lambda r: (r.get("type") == "response_item" and (r.get("payload") or {}).get(
        "role") == "user" and text in item_text(r["payload"]))


def is_user_completed(text: str):  # type: ignore[no-untyped-def]
    def check(record: Json) -> bool:
        payload = record.get("payload") or {}
        item = payload.get("item") or {}
        return (payload.get("type") == "item_completed" and item.get("type") == "UserMessage"
                and any(text in (c.get("text") or "") for c in item.get("content") or []))
    return check


def turn_records(cx: Codex, turn_id: str) -> list[Json]:
    """The rollout records of one turn (by the turn id they carry), in order."""
    out = []
    for record in cx.rollout():
        payload = record.get("payload") or {}
        ids = {payload.get("turn_id"), (payload.get("turn_attribution") or {}).get("turn_id"),
               (payload.get("internal_chat_message_metadata_passthrough") or {}).get(
                   "turn_id")}
        if turn_id in ids:
            out.append(record)
    return out


def shape(record: Json) -> str:
    payload = record.get("payload") or {}
    kind = payload.get("type")
    if kind == "item_completed":
        kind += "/" + str((payload.get("item") or {}).get("type"))
    if record.get("type") == "response_item":
        kind = f"{kind}/{payload.get('role') or ''}"
    return f"{record.get('type')}:{kind}"


# --------------------------------------------------------------------------- basics


def basics(codex: str, run_dir: str, runs: int) -> None:
    section = "basics"
    turns = {"rules": [
        {"id": "tool", "when": {"last_user_contains": "call the probe"}, "reply": [
            {"type": "function_call", "namespace": "mcp__probe", "name": "echo",
             "arguments": {"text": "typed-turn"}}]},
        {"id": "queued-tool", "when": {"last_user_contains": "QTOOL"}, "reply": [
            {"type": "function_call", "namespace": "mcp__probe", "name": "echo",
             "arguments": {"text": "queued-turn"}}]},
        {"id": "slow", "when": {"last_user_contains": "slow turn"}, "delay": 4,
         "reply": "slow done"},
        {"id": "self-queue", "when": {"last_user_contains": "queue yourself"}, "reply": [
            {"type": "function_call", "namespace": "mcp__probe", "name": "run",
             "arguments": {"argv": ["__DAEMON_CODEX__", "queue", "--thread", "__THREAD__",
                                    "--message", "QSELF from the MCP server"]}}]},
        {"id": "which", "when": {"last_user_contains": "which codex"}, "reply": [
            {"type": "function_call", "namespace": "mcp__probe", "name": "run",
             "arguments": {"argv": ["sh", "-c", "command -v codex || echo NONE"]}}]},
    ], "default_reply": "OK"}
    plain = {"command": sys.executable, "args": [
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "codex_probe_mcp.py"),
        "--log", os.path.join(run_dir, "basics", "plain.jsonl")]}
    with Codex(codex, run_dir, name="basics", turns=turns, probe=PROBE_INSTRUCTIONS,
               mcp_servers={"plain": plain}, env=EXTRA_ENV) as cx:
        started = time.monotonic()
        cx.launch()
        cx.wait_ready(90)
        note(section, "ready_seconds", round(time.monotonic() - started, 1))
        note(section, "thread_before_first_prompt", cx.thread_id())
        note(section, "rollout_files_before_first_prompt", len(cx.rollout_files()))
        note(section, "requests_at_start", [(r["method"], r["path"], r["kind"])
                                            for r in cx.requests()])

        # a typed turn that calls a tool
        cx.type("please call the probe")
        cx.wait_idle(30)
        init = cx.probe_requests("initialize")
        note(section, "initialize_params", init[0].get("params") if init else None)
        starts = [r for r in cx.probe_log() if r.get("event") == "start"]
        note(section, "probe_processes", len(starts))
        if starts:
            start = starts[0]
            note(section, "mcp_child_env", start["env"])
            note(section, "mcp_child_env_keys", sorted(start["env"]))
            note(section, "extra_env_passed", sorted(k for k in EXTRA_ENV if k in start["env"]))
            note(section, "mcp_child_parent_cmdline", start["parent_cmdline"])
            note(section, "mcp_child_parent_is_daemon",
                 "app-server" in " ".join(start["parent_cmdline"]))
            note(section, "daemon_pid_file", cx.daemon_pid())
            note(section, "mcp_child_ppid", start["ppid"])
        calls = cx.probe_requests("tools/call")
        note(section, "typed_tools_call_params", calls[0].get("params") if calls else None)
        main = cx.requests("main")
        body = main[0]["body"] if main else {}
        tools = body.get("tools") or []
        namespaces = {t.get("name"): t for t in tools if t.get("type") == "namespace"}
        note(section, "mcp_namespaces", {
            name: {"description": t.get("description"),
                   "functions": [f.get("name") for f in t.get("tools") or []]}
            for name, t in namespaces.items() if name.startswith("mcp__")})
        raw = json.dumps(body, ensure_ascii=False)
        note(section, "instructions_occurrences_in_request", raw.count(PROBE_INSTRUCTIONS))
        note(section, "instructions_in_input", any(
            PROBE_INSTRUCTIONS in item_text(i) for i in body.get("input") or []))
        note(section, "instructions_in_body_instructions_field",
             PROBE_INSTRUCTIONS in str(body.get("instructions") or ""))
        note(section, "request_headers", sorted(main[0].get("headers") or {})
             if main else None)
        note(section, "typed_turn_metadata", turn_metadata(main[0]) if main else None)
        note(section, "body_keys", sorted(body))
        thread = cx.thread_id()
        note(section, "thread_id", thread)

        # wake-ups of the idle session
        watch = cx.watch_rollout()
        wakes, commands, evidence = [], [], {"task_started": [], "user_item": [],
                                             "user_completed": []}
        for i in range(runs):
            time.sleep(0.7)
            text = f"QWAKE-{i}-{int(time.time() * 1000)}"
            q = cx.queue(text)
            if q.returncode != 0:
                note(section, f"wake_{i}_failed", q.stderr[-500:])
                continue
            request = cx.wait_request(text, 30)
            cx.wait_idle(30, turns=len(cx.turns()))
            wakes.append(request["t"] - q.started)
            commands.append(q.ended - q.started)
            for name, check in (("task_started", is_queue_start),
                                ("user_item", is_user_item(text)),
                                ("user_completed", is_user_completed(text))):
                hit = watch.first(check, since=q.started)
                if hit:
                    evidence[name].append(hit[0] - request["t"])
        native = {"launcher": [], "native": [], "daemon_copy": [], "cmd_native": [],
                  "cmd_daemon_copy": []}
        for i in range(max(3, runs // 2)):
            for label, binary in (("native", native_codex(codex)),
                                  ("daemon_copy", cx.daemon_codex())):
                time.sleep(0.7)
                text = f"QBIN-{label}-{i}"
                q = cx.queue(text, binary=binary)
                request = cx.wait_request(text, 30)
                cx.wait_idle(30, turns=len(cx.turns()))
                native[label].append(request["t"] - q.started)
                native[f"cmd_{label}"].append(q.ended - q.started)
        watch.stop()
        note(section, "wake_seconds_native_binary", stats(native["native"]))
        note(section, "queue_command_seconds_native_binary", stats(native["cmd_native"]))
        note(section, "wake_seconds_daemon_copy", stats(native["daemon_copy"]))
        note(section, "queue_command_seconds_daemon_copy", stats(native["cmd_daemon_copy"]))
        note(section, "wake_seconds", stats(wakes))
        note(section, "wake_all", [round(w, 3) for w in wakes])
        note(section, "queue_command_seconds", stats(commands))
        note(section, "evidence_written_relative_to_request_seconds",
             {k: stats(v) for k, v in evidence.items()})
        last_queue = [t for t in cx.turns() if t["trigger"] == "queue"][-1]
        note(section, "queued_turn_record_shapes",
             [shape(r) for r in turn_records(cx, last_queue["turn_id"])])
        samples = {}
        for record in turn_records(cx, last_queue["turn_id"]):
            kind = shape(record)
            if kind not in samples and kind.split(":")[1] in (
                    "task_started", "message/user", "item_completed/UserMessage",
                    "message/assistant", "task_complete", "None"):
                samples[kind] = record
        note(section, "queued_turn_samples", samples)
        wake_request = cx.requests("main")[-1]
        note(section, "queued_turn_metadata", turn_metadata(wake_request))
        note(section, "queued_request_brings", [
            {"type": i.get("type"), "role": i.get("role"), "text": item_text(i)}
            for i in brought(wake_request)])
        note(section, "screen_after_wakes", [line for line in cx.screen().splitlines()
                                             if "QWAKE" in line][-3:])

        # a queued turn that calls a tool: its tools/call _meta
        q = cx.queue("QTOOL please")
        cx.wait_request("queued-turn", 30)  # the tool's output comes back
        cx.wait_idle(30, turns=len(cx.turns()))
        calls = cx.probe_requests("tools/call")
        note(section, "queued_tools_call_meta", calls[-1]["params"].get("_meta"))

        # queued while a turn runs
        cx.type("slow turn")
        slow = cx.wait_request("slow turn", 30)
        time.sleep(0.5)
        q = cx.queue("QDURING")
        rows = cx.queue_items()
        note(section, "queue_row_while_held", rows)
        note(section, "queue_row_payload", queued_payload(rows[0]) if rows else None)
        held = cx.wait_request("QDURING", 30)
        note(section, "during_turn_request_after_slow_reply_seconds",
             round(held["t"] - (slow["t"] + 4), 3))
        cx.wait_idle(30, turns=len(cx.turns()))
        turns_now = cx.turns()
        note(section, "during_turn_triggers_last_two", [t["trigger"] for t in turns_now[-2:]])
        client_id = (queued_payload(rows[0]).get("UserInput") or {}).get("client_id") \
            if rows else None
        matched = [r for r in cx.rollout() if (r.get("payload") or {}).get(
            "type") == "item_completed" and ((r["payload"].get("item") or {}).get(
                "client_id") == client_id)]
        note(section, "queue_row_client_id_in_rollout_item_completed", bool(matched))
        note(section, "queue_rows_after_run", cx.queue_items())

        # a half-typed draft
        cx.type("DRAFT-NOT-SENT", enter=False)
        time.sleep(0.5)
        q = cx.queue("QDRAFT")
        request = cx.wait_request("QDRAFT", 30)
        cx.wait_idle(30, turns=len(cx.turns()))
        time.sleep(0.5)
        note(section, "draft_wake_seconds", round(request["t"] - q.started, 3))
        note(section, "draft_sent_to_model", "DRAFT-NOT-SENT" in json.dumps(request["body"]))
        note(section, "draft_still_in_input_box", any(
            line.startswith("› DRAFT-NOT-SENT") for line in cx.screen().splitlines()))
        cx.keys("C-u")  # clear the draft
        time.sleep(0.3)

        # --resume on an idle session
        q = cx.queue("QRESUME", resume=True)
        request = cx.wait_request("QRESUME", 30)
        cx.wait_idle(30, turns=len(cx.turns()))
        note(section, "resume_flag", {"exit": q.returncode, "stdout": q.stdout.strip(),
                                      "wake_seconds": round(request["t"] - q.started, 3)})

        # the MCP server runs `codex queue` itself, with its own environment
        daemon_codex = os.path.join(cx.codex_home, "packages", "app-server-daemon", "current",
                                    "bin", "codex")
        note(section, "daemon_codex", {"path": daemon_codex,
                                       "realpath": os.path.realpath(daemon_codex),
                                       "exists": os.path.exists(daemon_codex)})
        before = len(cx.turns())
        cx.type("which codex")
        cx.wait_idle(30, turns=before + 1)
        runs_logged = [r for r in cx.probe_log() if r.get("event") == "run"]
        note(section, "codex_on_mcp_child_path", runs_logged[-1]["result"] if runs_logged
             else None)
        with open(cx.path("turns.json")) as f:
            script = json.load(f)
        for rule in script["rules"]:
            if rule["id"] == "self-queue":
                rule["reply"][0]["arguments"]["argv"][0] = daemon_codex
                rule["reply"][0]["arguments"]["argv"][3] = thread
        cx.write_turns(script)
        before = len(cx.turns())
        cx.type("queue yourself")
        request = cx.wait_request("QSELF", 30)
        cx.wait_idle(30, turns=before + 2)
        runs_logged = [r for r in cx.probe_log() if r.get("event") == "run"]
        last = runs_logged[-1]
        note(section, "mcp_child_queue", {
            "result": last["result"][:300], "command_seconds": round(last["ended"] - last[
                "started"], 3), "request_after_command_start_seconds": round(
                request["t"] - last["started"], 3), "triggers": [
                t["trigger"] for t in cx.turns()[before:]]})

        # a HOME whose .codex is not the session's
        other = os.path.join(cx.dir, "other-home")
        os.makedirs(other, exist_ok=True)
        q = cx.queue("QWRONGHOME", env={"HOME": other})
        note(section, "wrong_home", {"exit": q.returncode, "stdout": q.stdout.strip(),
                                     "stderr": q.stderr.strip()[-400:],
                                     "created": sorted(os.listdir(other))})
        q = cx.queue("QNOTHREAD", thread="00000000-0000-0000-0000-000000000000")
        note(section, "unknown_thread", {"exit": q.returncode,
                                         "stderr": q.stderr.strip()[-300:]})

        # the TUI quits; the daemon stays
        cx.keys("C-c")
        deadline = time.monotonic() + 10
        while not cx.exited() and time.monotonic() < deadline:
            time.sleep(0.1)
        note(section, "tui_exited_on_ctrl_c", cx.exited())
        note(section, "daemon_alive_after_tui_quit", bool(cx.our_processes()))
        q = cx.queue("QAFTERQUIT")
        try:
            request = cx.wait_request("QAFTERQUIT", 15)
            note(section, "after_tui_quit", {"exit": q.returncode, "wake_seconds": round(
                request["t"] - q.started, 3)})
        except TimeoutError:
            note(section, "after_tui_quit", {"exit": q.returncode, "wake_seconds": None,
                                             "rows": cx.queue_items()})


# --------------------------------------------------------------------------- exec


def exec_mode(codex: str, run_dir: str) -> None:
    section = "exec"
    turns = {"rules": [{"id": "slow", "when": {"last_user_contains": "slow exec"},
                        "delay": 3, "reply": "slow done"}], "default_reply": "fine"}
    with Codex(codex, run_dir, name="exec", turns=turns, probe=True) as cx:
        process = cx.run("exec", "--skip-git-repo-check", "slow exec", background=True)
        slow = cx.wait_request("slow exec", 60)
        thread = slow["headers"]["thread-id"]
        note(section, "daemon_during_exec", bool(cx.our_processes()))
        starts = [r for r in cx.probe_log() if r.get("event") == "start"]
        note(section, "mcp_child_parent_cmdline", starts[0]["parent_cmdline"] if starts
             else None)
        q = cx.queue("QEXEC-DURING", thread=thread)
        note(section, "queue_during", {"exit": q.returncode, "stdout": q.stdout.strip()})
        process.wait(60)  # type: ignore[union-attr]
        time.sleep(0.5)
        note(section, "rows_after_exec", cx.queue_items())
        note(section, "model_saw_queued", any(
            "QEXEC-DURING" in json.dumps(r["body"]) for r in cx.requests("main")))
        queue_turns = [t for t in cx.turns(thread) if t["trigger"] == "queue"]
        note(section, "queued_turns", queue_turns)
        if queue_turns:
            note(section, "queued_turn_record_shapes",
                 [shape(r) for r in turn_records(cx, queue_turns[-1]["turn_id"])])
            aborted = [r for r in turn_records(cx, queue_turns[-1]["turn_id"])
                       if (r.get("payload") or {}).get("type") == "turn_aborted"]
            note(section, "turn_aborted_record", aborted[0] if aborted else None)
        q = cx.queue("QEXEC-AFTER", thread=thread)
        time.sleep(1)
        note(section, "rows_after_queue_without_any_codex", [
            (r["thread_id"], queued_payload(r)) for r in cx.queue_items()])
        done = cx.run("exec", "--skip-git-repo-check", "resume", thread, "next prompt")
        last = cx.requests("main")[-1]
        note(section, "exec_resume", {
            "exit": done.returncode,  # type: ignore[union-attr]
            "user_texts_of_last_request": [t[:120] for t in user_texts(last)
                                           if "<environment_context>" not in t],
            "triggers": [t["trigger"] + "/" + str(t["how"]) for t in cx.turns(thread)],
            "rows_after": cx.queue_items()})


# --------------------------------------------------------------------------- no daemon


def no_daemon(codex: str, run_dir: str, runs: int,
              args: tuple[str, ...] = ("--no-daemon",), section: str = "no_daemon") -> None:
    with Codex(codex, run_dir, name=section.replace("_", "-"), probe=True,
               codex_args=list(args)) as cx:
        cx.launch()
        cx.wait_ready(90)
        cx.type("hello")
        cx.wait_idle(30)
        starts = [r for r in cx.probe_log() if r.get("event") == "start"]
        note(section, "mcp_child_parent_cmdline", starts[0]["parent_cmdline"] if starts
             else None)
        note(section, "daemon_running", bool(cx.our_processes()))
        waits = []
        for i in range(runs):
            time.sleep(1.3 * i % 4)  # spread the starts over the poll period
            text = f"QNODAEMON-{i}"
            q = cx.queue(text)
            request = cx.wait_request(text, 40)
            cx.wait_idle(30, turns=len(cx.turns()))
            waits.append(request["t"] - q.started)
            note(section, f"run_{i}", {"exit": q.returncode, "wait": round(waits[-1], 3),
                                       "stdout": q.stdout.strip()})
        note(section, "wait_seconds", stats(waits))


# --------------------------------------------------------------------------- CODEX_HOME


def codex_home(codex: str, run_dir: str) -> None:
    section = "codex_home"
    turns = {"rules": [{"id": "self-queue", "when": {"last_user_contains": "queue yourself"},
                        "reply": [{"type": "function_call", "namespace": "mcp__probe",
                                   "name": "run", "arguments": {"argv": []}}]}],
             "default_reply": "OK"}
    home = os.path.join(run_dir, "codex-home", "elsewhere")
    with Codex(codex, run_dir, name="codex-home", turns=turns, probe=True,
               codex_home=home) as cx:
        cx.launch()
        cx.wait_ready(90)
        cx.type("hello")
        cx.wait_idle(30)
        starts = [r for r in cx.probe_log() if r.get("event") == "start"]
        env = starts[0]["env"] if starts else {}
        note(section, "mcp_child_env", env)
        note(section, "codex_home_reaches_mcp_child", "CODEX_HOME" in env)
        daemon_codex = os.path.join(home, "packages", "app-server-daemon", "current", "bin",
                                    "codex")
        turns["rules"][0]["reply"][0]["arguments"]["argv"] = [
            daemon_codex, "queue", "--thread", cx.thread_id(), "--message", "QSELF"]
        cx.write_turns(turns)
        cx.type("queue yourself")
        cx.wait_idle(30, turns=2)
        runs_logged = [r for r in cx.probe_log() if r.get("event") == "run"]
        note(section, "queue_with_mcp_child_env", runs_logged[-1]["result"][-400:]
             if runs_logged else None)
        q = cx.queue("QWITHHOME")
        request = cx.wait_request("QWITHHOME", 30)
        note(section, "queue_with_codex_home_set", {"exit": q.returncode, "wake_seconds":
                                                    round(request["t"] - q.started, 3)})


def more(codex: str, run_dir: str) -> None:
    """A message queued before the first prompt, one with odd characters, and bursts of
    three (idle, and while a turn runs): one turn each, or one for all?"""
    section = "more"
    turns = {"rules": [{"id": "slow", "when": {"last_user_contains": "slow turn"},
                        "delay": 3, "reply": "slow done"}], "default_reply": "OK"}
    with Codex(codex, run_dir, name="more", turns=turns, probe=True) as cx:
        cx.launch()
        cx.wait_ready(90)
        q = cx.queue("QFIRST before any prompt")
        request = cx.wait_request("QFIRST", 30)
        cx.wait_idle(30, turns=1)
        note(section, "before_first_prompt", {"exit": q.returncode, "wake_seconds": round(
            request["t"] - q.started, 3), "trigger": turn_metadata(request).get(
            "turn_trigger")})

        text = 'line one\nline two "quoted" <tag> & ünïcödé 🚀  trailing  '
        q = cx.queue(text)
        request = cx.wait_request("line one", 30)
        cx.wait_idle(30, turns=2)
        carried = [item_text(i) for i in brought(request)]
        in_rollout = [item_text(r["payload"]) for r in cx.rollout()
                      if r.get("type") == "response_item" and "line one" in item_text(
                          r.get("payload") or {})]
        note(section, "verbatim", {"sent": text, "request_exact": carried == [text],
                                   "request": carried, "rollout_exact": in_rollout == [text]})

        def burst(prefix: str) -> Json:
            before = len(cx.turns())
            seq = cx.last_seq()
            for i in range(3):
                cx.queue(f"{prefix}-{i}")
            for i in range(3):
                cx.wait_request(f"{prefix}-{i}", 30, after_seq=seq)
            time.sleep(0.5)
            cx.wait_idle(30, turns=before + 1)
            carried = [[item_text(i) for i in brought(r) if prefix in item_text(i)]
                       for r in cx.requests("main") if r["seq"] > seq]
            return {"turns": [t["trigger"] for t in cx.turns()[before:]],
                    "requests_bring": [c for c in carried if c]}

        note(section, "burst_idle", burst("QBURST"))
        before = len(cx.turns())
        cx.type("slow turn")
        cx.wait_request("slow turn", 30)
        time.sleep(0.3)
        held = burst("QHELD")
        held["turns"] = [t["trigger"] for t in cx.turns()[before:]]
        note(section, "burst_during_turn", held)


def unload(codex: str, run_dir: str) -> None:
    """After the TUI quits: how long the MCP server lives, how it ends, and what a message
    queued after that does."""
    section = "unload"
    with Codex(codex, run_dir, name="unload", probe=True) as cx:
        cx.launch()
        cx.wait_ready(90)
        cx.type("hello")
        cx.wait_idle(30)
        probe = [r for r in cx.probe_log() if r.get("event") == "start"][0]
        cx.keys("C-c")
        quit_at = time.time()
        while not cx.exited() and time.time() - quit_at < 10:
            time.sleep(0.1)
        while alive(probe["pid"]) and time.time() - quit_at < 300:
            time.sleep(0.2)
        note(section, "mcp_server_lived_after_tui_quit_seconds",
             round(time.time() - quit_at, 1) if not alive(probe["pid"]) else ">300")
        note(section, "mcp_server_end_events", [r["event"] for r in cx.probe_log()
                                                if r.get("event") in ("eof", "signal")])
        note(section, "daemon_alive", bool(cx.our_processes()))
        q = cx.queue("QAFTERUNLOAD")
        try:
            request = cx.wait_request("QAFTERUNLOAD", 30)
            wake: float | None = round(request["t"] - q.started, 3)
        except TimeoutError:
            wake = None
        time.sleep(1)
        note(section, "queue_after_unload", {
            "exit": q.returncode, "stdout": q.stdout.strip(), "wake_seconds": wake,
            "mcp_server_started_again": len([r for r in cx.probe_log()
                                             if r.get("event") == "start"]) > 1,
            "rows": cx.queue_items()})
        q = cx.queue("QRESUMED", resume=True)
        try:
            request = cx.wait_request("QRESUMED", 30)
            wake = round(request["t"] - q.started, 3)
        except TimeoutError:
            wake = None
        time.sleep(1)
        note(section, "queue_resume_after_unload", {
            "exit": q.returncode, "stdout": q.stdout.strip(), "wake_seconds": wake,
            "stderr": q.stderr.strip()[-300:],
            "earlier_message_ran": any("QAFTERUNLOAD" in item_text(i) for r in cx.requests(
                "main") for i in brought(r)),
            "triggers": [t["trigger"] for t in cx.turns()],
            "mcp_server_started_again": len([r for r in cx.probe_log()
                                             if r.get("event") == "start"]) > 1,
            "rows": len(cx.queue_items())})


def idle_long(codex: str, run_dir: str) -> None:
    """A TUI left idle for longer than the daemon keeps a thread without a TUI: still woken?"""
    section = "idle_long"
    with Codex(codex, run_dir, name="idle-long", probe=True) as cx:
        cx.launch()
        cx.wait_ready(90)
        cx.type("hello")
        cx.wait_idle(30)
        time.sleep(90)
        probe = [r for r in cx.probe_log() if r.get("event") == "start"][0]
        note(section, "mcp_server_alive_after_90s_idle", alive(probe["pid"]))
        q = cx.queue("QAFTERIDLE")
        request = cx.wait_request("QAFTERIDLE", 30)
        note(section, "wake_after_90s_idle", {"exit": q.returncode, "wake_seconds": round(
            request["t"] - q.started, 3)})


def no_autostart(codex: str, run_dir: str, runs: int) -> None:
    no_daemon(codex, run_dir, runs, ("--disable", "daemon_auto_start"), "no_autostart")


def env_vars(codex: str, run_dir: str) -> None:
    """Whether an MCP server entry's ``env_vars`` (names to pass through) gets CODEX_HOME
    and another variable to the server."""
    section = "env_vars"
    home = os.path.join(run_dir, "env-vars", "elsewhere")
    with Codex(codex, run_dir, name="env-vars", probe=True, codex_home=home,
               env={"BRIDGE_PROBE_VAR": "1"},
               config={"mcp_servers": {"probe": {
                   "env_vars": ["CODEX_HOME", "BRIDGE_PROBE_VAR"]}}}) as cx:
        cx.launch()
        cx.wait_ready(90)
        cx.type("hello")
        cx.wait_idle(30)
        starts = [r for r in cx.probe_log() if r.get("event") == "start"]
        env = starts[0]["env"] if starts else {}
        note(section, "mcp_child_env_keys", sorted(env))
        note(section, "codex_home_passed", env.get("CODEX_HOME"))


APPROVAL_TEXT = "to run tool"  # "Allow the probe MCP server to run tool "echo"?"
APPROVAL_CASES = [  # (approval_policy, sandbox_mode, the entry's default_tools_approval_mode)
    ("untrusted", "danger-full-access", None),
    *((policy, sandbox, mode) for policy in ("on-request", "on-failure")
      for sandbox in ("danger-full-access", "workspace-write") for mode in (None, "approve")),
    ("on-request", "danger-full-access", "prompt"),
    *(("never", sandbox, mode) for sandbox in ("danger-full-access", "workspace-write")
      for mode in (None, "approve", "prompt")),
]


def approvals(codex: str, run_dir: str) -> None:
    """What approval_policy, sandbox_mode and an MCP server entry's
    default_tools_approval_mode do to a call of the server's tool (the probe's tools carry no
    annotations, as bridge's), in a typed turn and in one woken by codex queue: run at once,
    asked in the TUI (and still not run 10 s later, then run after Enter), or failed."""
    section = "approvals"
    turns = {"default_reply": "done", "rules": [
        {"id": "typed", "when": {"last_user_contains": "TYPED-GO"}, "reply": [
            {"type": "function_call", "namespace": "mcp__probe", "name": "echo",
             "arguments": {"text": "typed"}}]},
        {"id": "woken", "when": {"last_user_contains": "WOKEN-GO"}, "reply": [
            {"type": "function_call", "namespace": "mcp__probe", "name": "send_message",
             "arguments": {"to": "bob", "text": "woken"}}]}]}
    for policy, sandbox, mode in APPROVAL_CASES:
        key = f"{policy}/{sandbox}/{mode or 'unset'}"
        entry = {"default_tools_approval_mode": mode} if mode else {}
        found: Json = {}
        try:
            with Codex(codex, run_dir, name=f"approvals-{key.replace('/', '-')}", turns=turns,
                       probe=True, config={"approval_policy": policy, "sandbox_mode": sandbox,
                                           "mcp_servers": {"probe": entry}}) as cx:
                cx.launch()
                cx.wait_ready(90)
                for step, text in (("typed", "TYPED-GO"), ("woken", "WOKEN-GO")):
                    calls = len(cx.probe_requests("tools/call"))
                    if step == "typed":
                        cx.type(text)
                    else:
                        cx.queue(text)
                    deadline, seen = time.monotonic() + 25, "neither"
                    while time.monotonic() < deadline:
                        if len(cx.probe_requests("tools/call")) > calls:
                            seen = "ran"
                            break
                        if APPROVAL_TEXT in cx.screen():
                            time.sleep(10)
                            ran = len(cx.probe_requests("tools/call")) > calls
                            cx.keys("Enter")  # 1. Allow
                            until = time.monotonic() + 15
                            while time.monotonic() < until and \
                                    len(cx.probe_requests("tools/call")) <= calls:
                                time.sleep(0.2)
                            seen = (f"asked; ran 10 s later: {ran}; after Enter: "
                                    f"{len(cx.probe_requests('tools/call')) > calls}")
                            break
                        time.sleep(0.2)
                    if seen == "neither":  # not run, not asked: what did the model get?
                        outputs = [c["output"] for c in tool_calls(cx.requests("main"))]
                        seen = f"failed: {outputs[-1] if outputs else None}"
                    found[step] = seen
                    cx.wait_idle(30, turns=1 if step == "typed" else 2)
        except RuntimeError as e:  # Codex refused to start
            found["start"] = str(e).split("\n")[1:3]
        note(section, key, found)


def startup_grace(codex: str, run_dir: str) -> None:
    """A first prompt given on the command line, with an MCP server that needs 3 s to start:
    are its tools in the first model request, as an optional server and as required = true?"""
    section = "startup_grace"
    for required in (False, True):
        slow = os.path.join(run_dir, f"slow-{required}.jsonl")
        entry: Json = {"command": "sh", "args": [
            "-c", f"sleep 3; exec {sys.executable} {PROBE_MCP} --log {slow}"]}
        if required:
            entry |= {"required": True, "startup_timeout_sec": 30}
        with Codex(codex, run_dir, name=f"grace-{required}", turns={"default_reply": "done"},
                   mcp_servers={"slow": entry}, codex_args=["FIRST-PROMPT"]) as cx:
            cx.launch()
            request = cx.wait_request("FIRST-PROMPT", 60)
            names = [tool.get("name") for tool in request["body"].get("tools", [])]
            note(section, "required" if required else "optional",
                 {"tools_in_first_request": "mcp__slow" in names})


SECTIONS = {"basics": basics, "exec": exec_mode, "no_daemon": no_daemon,
            "no_autostart": no_autostart, "codex_home": codex_home, "env_vars": env_vars,
            "more": more, "unload": unload, "idle_long": idle_long, "approvals": approvals,
            "startup_grace": startup_grace}
RUNS = {"basics": lambda runs: runs, "no_daemon": lambda runs: max(3, runs // 3),
        "no_autostart": lambda runs: max(3, runs // 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codex", required=True, help="the codex launcher or binary")
    parser.add_argument("--runs", type=int, default=12, help="queued wake-ups to time")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--run-dir", help="where everything is kept (default: a temp dir)")
    parser.add_argument("--out", help="the JSON report (default: RUN_DIR/report.json)")
    args = parser.parse_args()
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="codex_facts_")
    version = os.popen(f"{args.codex} --version 2>/dev/null").read().strip()
    note("run", "codex_version", version)
    note("run", "run_dir", run_dir)
    failed = []
    for name in args.only.split(","):
        try:
            if name in RUNS:
                SECTIONS[name](args.codex, run_dir, RUNS[name](args.runs))  # type: ignore
            else:
                SECTIONS[name](args.codex, run_dir)
        except Exception as e:  # one section failing should not hide the others
            failed.append(name)
            note(name, "FAILED", f"{type(e).__name__}: {e}"[-2000:])
    out = args.out or os.path.join(run_dir, "report.json")
    with open(out, "w") as f:
        json.dump(REPORT, f, indent=1, ensure_ascii=False)
    print(f"\nreport: {out}" + (f"; FAILED sections: {failed}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is needed (apt-get install -y tmux)")
    main()
