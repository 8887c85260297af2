"""End to end against the real Claude Code CLI (npm `@anthropic-ai/claude-code`).

Test A registers `bridge serve` with `claude mcp add` and checks that `claude mcp list` can
connect to it. The others run real Claude Code sessions with tests/support/claude_driver.py:
each one's model is a scripted fake Messages API on loopback (tests/support/fake_api.py), and
the messages of its peers must arrive in its conversation (as `<channel source="bridge" from="...">`
blocks, or as session inbox posts), through one redis-server.

The CLI is installed once into `<repo>/.cache/claude` (about 360 MB). No account and no network
beyond the npm registry are needed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisServer, free_port

# The installer and the throwaway-HOME helpers are shared with test_team.py.
from tests.support.claude_code import (
    BRIDGE,
    CLAUDE_CMD_TIMEOUT,
    CLAUDE_DRIVER,
    NPM_INSTALL_TIMEOUT,
    minimal_env,
    read_tail,
    seed_home,
)

pytestmark = pytest.mark.slow  # a real Claude Code in each test

SCENARIO_TIMEOUT = 150  # the driver's own deadline for a scenario


@pytest.fixture(scope="session")
def driver() -> Path:
    """The Claude Code driver (tests/support/claude_driver.py)."""
    return CLAUDE_DRIVER


def run_claude(
    claude: Path, home: Path, work: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([str(claude), *args], cwd=work, env=minimal_env(home),
                              capture_output=True, text=True, timeout=CLAUDE_CMD_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`claude {' '.join(args)}` timed out after {CLAUDE_CMD_TIMEOUT}s:\n"
                    f"{e.stdout!r}\n{e.stderr!r}")


# --------------------------------------------------------------------------- test A


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 300)  # the first test pays for the npm install
def test_claude_mcp_add_and_list_reports_bridge_connected(
    claude_bin: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    seed_home(home, work)
    r = redis_server.client()
    connections_before = int(r.info("stats")["total_connections_received"])

    added = run_claude(claude_bin, home, work, "mcp", "add", "-s", "user", "bridge",
                       "-e", f"BRIDGE_REDIS_URL={redis_server.url}",
                       "--", str(BRIDGE), "serve", "--name", "alice")
    assert added.returncode == 0, f"claude mcp add: exit {added.returncode}\n" \
                                  f"{added.stdout}{added.stderr}"
    config = json.loads((home / ".claude.json").read_text())
    server = config.get("mcpServers", {}).get("bridge")
    assert server is not None, f"no user-scope bridge in ~/.claude.json: {config}"
    assert server["command"] == str(BRIDGE)
    assert server["args"] == ["serve", "--name", "alice"]
    assert server["env"] == {"BRIDGE_REDIS_URL": redis_server.url}

    listed = run_claude(claude_bin, home, work, "mcp", "list")
    output = listed.stdout + listed.stderr
    lines = [line for line in output.splitlines() if line.startswith("bridge:")]
    assert listed.returncode == 0, f"claude mcp list: exit {listed.returncode}\n{output}"
    assert len(lines) == 1, f"claude mcp list does not show bridge once:\n{output}"
    assert any(mark in lines[0] for mark in ("Connected", "✔", "✓")), (
        f"bridge not connected:\n{output}")
    assert "Failed" not in lines[0] and "✗" not in lines[0], output
    print(f"\nclaude mcp list: {lines[0]}", file=sys.stderr)
    # The health check really went through our redis-server, not some other one.
    connections_after = int(r.info("stats")["total_connections_received"])
    assert connections_after > connections_before, (
        f"bridge never connected to the test's redis-server at {redis_server.url}:\n{output}")


# --------------------------------------------------------------------------- test B


def bridge_server(name: str, redis_url: str, delivery: str) -> dict[str, Any]:
    return {"command": str(BRIDGE), "args": ["serve", "--name", name, "--delivery", delivery],
            "env": {"BRIDGE_REDIS_URL": redis_url, "BRIDGE_LOG_LEVEL": "DEBUG"}}


def send(to: str, text: str) -> list[dict[str, Any]]:
    """A model reply that calls bridge's send_message."""
    return [{"type": "tool_use", "name": "mcp__bridge__send_message",
             "input": {"to": to, "text": text}}]


def two_agents_scenario(redis_port: int, delivery: str = "channel") -> dict[str, Any]:
    """alice, once bob is up too, is told to say hi to bob: she sends PING-FROM-ALICE, and
    bob's model answers it with PONG-FROM-BOB; one redis-server on `redis_port`."""
    redis_server = shutil.which("redis-server") or "redis-server"
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    bob = {"name": "bob", "turns": {"default_reply": "OK", "rules": [
        {"id": "reply", "when": {"last_user_contains": "PING-FROM-ALICE"},
         "reply": send("alice", "PONG-FROM-BOB")},
        {"id": "done", "when": {"after": "reply", "last_user_not_contains": "PING-FROM-ALICE"},
         "reply": "replied"}]}}
    alice = {"name": "alice", "prompt": "say hi to bob", "prompt_after": ["bob"],
             "turns": {"default_reply": "OK", "rules": [
                 {"id": "send", "when": {"last_user_contains": "say hi to bob"},
                  "reply": send("bob", "PING-FROM-ALICE")},
                 {"id": "got_reply", "when": {"last_user_contains": "PONG-FROM-BOB"},
                  "reply": "bob answered", "times": -1}]}}
    scenario: dict[str, Any] = {
        "timeout": SCENARIO_TIMEOUT, "negotiation": "legacy",
        "services": [{
            "name": "redis",
            "command": [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no"],
            "ready_tcp": redis_port,
        }],
        "instances": [bob, alice]}
    instances = {spec["name"]: spec for spec in scenario["instances"]}
    for name, spec in instances.items():
        spec["mcp_servers"] = {"bridge": bridge_server(name, redis_url, delivery)}
    # Each message must arrive from the right sender, and each send must be acknowledged.
    instances["bob"]["expect"] = {
        "channel": [{"source": "bridge", "contains": "PING-FROM-ALICE",
                     "meta": {"from": "alice"}}],
        "tool_round_trips": [{"name": "mcp__bridge__send_message", "result_contains": "sent"}],
        "tools_listed": ["mcp__bridge__send_message"],
    }
    instances["alice"]["expect"] = {
        "channel": [{"source": "bridge", "contains": "PONG-FROM-BOB", "meta": {"from": "bob"}}],
        "tool_round_trips": [{"name": "mcp__bridge__send_message", "result_contains": "sent"}],
        "tools_listed": ["mcp__bridge__send_message"],
    }
    return scenario


def run_driver(driver: Path, claude: Path, scenario: Path, run_dir: Path) -> int:
    """Run the driver; on our own timeout, SIGINT it so its cleanup still runs."""
    out_path = run_dir / "driver.out"
    cmd = [sys.executable, str(driver), "--scenario", str(scenario), "--run-dir", str(run_dir),
           "--claude", str(claude)]
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return proc.wait(timeout=SCENARIO_TIMEOUT + 90)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # KeyboardInterrupt: its `finally` cleans up
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            pytest.fail(f"the driver did not finish in {SCENARIO_TIMEOUT + 90}s; run dir "
                        f"{run_dir}\n{read_tail(out_path)}")


def channels(summary: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return list(summary.get(name, {}).get("summary", {}).get("channels", []))


def run_scenario(driver: Path, claude: Path, tmp_path: Path, scenario: dict[str, Any],
                 names: set[str]) -> tuple[dict[str, Any], Path, str]:
    """Run one scenario; every instance must PASS. Returns (summary, run dir, where)."""
    driver_run = tmp_path / "run"
    driver_run.mkdir()
    scenario_path = driver_run / "scenario.json"
    scenario_path.write_text(json.dumps(scenario, indent=1))
    started = time.monotonic()
    rc = run_driver(driver, claude, scenario_path, driver_run)
    elapsed = time.monotonic() - started
    print(f"\ndriver: exit {rc} in {elapsed:.0f}s; run dir {driver_run}", file=sys.stderr)
    where = (f"run dir {driver_run}\n--- driver output (tail) ---\n"
             f"{read_tail(driver_run / 'driver.out', 80)}")
    assert rc == 0, f"driver exit {rc} (0 PASS, 1 FAIL, 2 driver error); {where}"
    summary_path = driver_run / "summary.json"
    assert summary_path.exists(), f"no summary.json; {where}"
    summary = json.loads(summary_path.read_text())
    assert set(summary) == names, f"summary has {list(summary)}; {where}"
    for name in names:
        assert summary[name]["ok"], f"{name}: {summary[name]['checks']}; {where}"
    return summary, driver_run, where


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 600)
def test_without_an_inbox_two_claude_codes_talk_through_the_channel(
    claude_bin: Path, tmux: str, driver: Path, tmp_path: Path
) -> None:
    """The fallback: a Claude Code whose session inbox is switched off (its gate seeded off,
    as for versions before 2.1.224): --delivery auto takes the channel."""
    scenario = two_agents_scenario(free_port(), "auto")
    scenario["growthbook"] = {"tengu_harbor_kite": False}
    summary, _, where = run_scenario(driver, claude_bin, tmp_path, scenario, {"alice", "bob"})

    # Checked here too, not only by the driver: who said what, as the model saw it.
    at_bob = [c for c in channels(summary, "bob")
              if c["source"] == "bridge" and "PING-FROM-ALICE" in c["content"]]
    at_alice = [c for c in channels(summary, "alice")
                if c["source"] == "bridge" and "PONG-FROM-BOB" in c["content"]]
    assert at_bob, f"bob never saw alice's message: {channels(summary, 'bob')}; {where}"
    assert at_alice, f"alice never saw bob's reply: {channels(summary, 'alice')}; {where}"
    for seen, sender, recipient in ((at_bob[0], "alice", "bob"), (at_alice[0], "bob", "alice")):
        attrs = seen["attrs"]
        assert attrs.get("from") == sender, f"{recipient} saw {attrs}; {where}"
        assert attrs.get("message_id"), f"{recipient}: no message_id in {attrs}; {where}"


def requests_of(run_dir: Path, name: str) -> list[dict[str, Any]]:
    """The fake Messages API's log of one instance: the main requests (turns), in order."""
    lines = (run_dir / name / "requests.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "main"]


def user_texts(request: dict[str, Any]) -> list[str]:
    """The user turns' texts of one request's conversation."""
    texts = []
    for message in request["body"].get("messages", []):
        if message.get("role") != "user":
            continue
        content = message["content"]
        blocks = [content] if isinstance(content, str) else [
            b.get("text", "") for b in content if isinstance(b, dict)]
        texts += [b for b in blocks if isinstance(b, str)]
    return texts


def sends_in(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The send_message calls the model made in one request's conversation."""
    return [block for message in request["body"].get("messages", [])
            if message.get("role") == "assistant" and isinstance(message["content"], list)
            for block in message["content"]
            if block.get("type") == "tool_use" and block.get("name") == "mcp__bridge__send_message"]


ROOM_DRIVER = Path(__file__).parent / "support" / "room_driver.py"


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 600)
def test_claude_codes_talk_through_the_session_inbox_with_no_flag(
    claude_bin: Path, tmux: str, driver: Path, tmp_path: Path
) -> None:
    """Plain `claude`, no channel flag, no dialog: alice and bob exchange messages through
    their session inboxes; carol, idle, sees five agents join and leave without a single
    turn, is woken by a message that carries those changes, and then gets a burst of 100
    messages complete and in order in a few turns."""
    port = free_port()
    scenario = two_agents_scenario(port, "auto")
    redis_url = f"redis://127.0.0.1:{port}/0"
    report = tmp_path / "driver.json"
    scenario["services"].append({
        "name": "driver",
        "command": [sys.executable, str(ROOM_DRIVER), "--redis", redis_url, "--to", "carol",
                    "--churn", "5", "--settle", "4", "--text", "MARKER-AFTER-CHURN",
                    "--burst", "100", "--report", str(report)]})
    scenario["instances"].append({
        "name": "carol", "turns": {"default_reply": "OK"},
        "mcp_servers": {"bridge": bridge_server("carol", redis_url, "auto")},
        "expect": {"request_contains": ["BURST-099"]}})
    for spec in scenario["instances"]:
        spec["channels"] = []  # no --dangerously-load-development-channels
    for name, other, word in (("bob", "alice", "PING-FROM-ALICE"),
                              ("alice", "bob", "PONG-FROM-BOB")):
        spec = next(s for s in scenario["instances"] if s["name"] == name)
        spec["expect"] = {
            "request_contains": [f"[bridge] message from {other}", word],
            "tool_round_trips": [{"name": "mcp__bridge__send_message",
                                  "result_contains": "sent"}]}
    _, run_dir, where = run_scenario(driver, claude_bin, tmp_path, scenario,
                                     {"alice", "bob", "carol"})

    turns = requests_of(run_dir, "carol")
    assert turns, where
    first = "\n".join(user_texts(turns[0]))
    # no turn before the marker: the churn started none, and rode along with the marker
    assert "MARKER-AFTER-CHURN" in first, f"carol's first turn: {first[:2000]}; {where}"
    assert "churn0 joined" in first and "churn4 left" in first, first[:2000]
    everything = "\n".join(user_texts(turns[-1]))
    positions = [everything.find(f"> BURST-{i:03d}") for i in range(100)]
    assert -1 not in positions and positions == sorted(positions), where
    burst_turns = len(turns) - 1
    print(f"\ncarol: the marker and 100 messages in {len(turns)} turns "
          f"({burst_turns} for the burst)", file=sys.stderr)
    assert burst_turns <= 10, f"{burst_turns} turns for 100 messages; {where}"


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 600)
def test_print_mode_receives_a_message_sent_during_its_run(
    claude_bin: Path, driver: Path, tmp_path: Path
) -> None:
    """`claude -p`: channels never reach print mode, the session inbox does."""
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    base = two_agents_scenario(port, "auto")
    scenario = {
        "timeout": SCENARIO_TIMEOUT, "mode": "print", "services": base["services"],
        "instances": [{
            "name": "dave", "prompt": "wait for the others", "channels": [],
            "mcp_servers": {"bridge": bridge_server("dave", redis_url, "auto")},
            "turns": {"default_reply": "OK", "rules": [
                # the first answer takes a while: the message lands during the run
                {"id": "slow", "when": {"last_user_contains": "wait for the others"},
                 "delay": 8, "reply": "waited"},
                {"id": "got", "when": {"last_user_contains": "PRINT-MODE-PING"},
                 "reply": "GOT-IT"}]},
            "expect": {"request_contains": ["[bridge] message from driver", "PRINT-MODE-PING"]},
        }],
    }
    scenario["services"].append({
        "name": "driver",
        "command": [sys.executable, str(ROOM_DRIVER), "--redis", redis_url, "--to", "dave",
                    "--text", "PRINT-MODE-PING", "--report", str(tmp_path / "driver.json")]})
    run_scenario(driver, claude_bin, tmp_path, scenario, {"dave"})


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 600)
def test_a_reply_loop_between_two_claude_codes_is_cut(
    claude_bin: Path, tmux: str, driver: Path, tmp_path: Path
) -> None:
    """Two models that acknowledge every acknowledgement: bridge holds the loop after
    BRIDGE_LOOP_LIMIT messages, and says so to the agent that holds."""
    scenario = two_agents_scenario(free_port(), "auto")
    acks = {"default_reply": "OK", "rules": [
        {"id": "start", "when": {"last_user_contains": "start the loop"},
         "reply": [{"type": "tool_use", "name": "mcp__bridge__send_message",
                    "input": {"to": "bob", "text": "ping"}}]},
        {"id": "done", "when": {"last_user_contains": "sent, message_id"}, "reply": "done",
         "times": -1},
        {"id": "ack", "when": {"last_user_contains": "[bridge] message from"},
         "reply": [{"type": "tool_use", "name": "mcp__bridge__send_message",
                    "input": {"to": "PEER", "text": "thanks, got it"}}], "times": -1}]}
    for spec in scenario["instances"]:
        peer = "bob" if spec["name"] == "alice" else "alice"
        spec["channels"] = []
        spec["turns"] = json.loads(json.dumps(acks).replace("PEER", peer))
        spec["mcp_servers"]["bridge"]["env"]["BRIDGE_LOOP_LIMIT"] = "6"
        spec["expect"] = {}
    next(s for s in scenario["instances"] if s["name"] == "alice")["prompt"] = "start the loop"
    next(s for s in scenario["instances"] if s["name"] == "bob")["expect"] = {
        "request_contains": ["bridge is holding alice's messages"]}
    _, run_dir, where = run_scenario(driver, claude_bin, tmp_path, scenario, {"alice", "bob"})
    sends = {name: len(sends_in(requests_of(run_dir, name)[-1])) for name in ("alice", "bob")}
    print(f"\nreply loop: alice sent {sends['alice']}, bob {sends['bob']}", file=sys.stderr)
    assert sends["alice"] + sends["bob"] <= 7, f"{sends}; {where}"  # 6 + the one held
