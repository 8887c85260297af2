"""End to end against the real Claude Code CLI (npm `@anthropic-ai/claude-code`).

Test A registers `bridge serve` with `claude mcp add` and checks that `claude mcp list` can
connect to it. Test B runs two interactive Claude Codes (alice, bob) with the shared
harness (`../shared/tools/cc_harness/run_channel_check.py`): each one's model is a scripted
fake Messages API on loopback, and their messages must arrive in the other's conversation as
`<channel source="bridge" from="...">` blocks, through one redis-server.

The CLI is installed once into `<repo>/.cache/claude` (about 360 MB). No account and no network
beyond the npm registry are needed.
"""

from __future__ import annotations

import fcntl
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

CLAUDE_CODE_VERSION = "2.1.328"
CLAUDE_CODE_PACKAGE = "@anthropic-ai/claude-code"

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
HARNESS_DIR = SHARED / "tools" / "cc_harness"
HARNESS = HARNESS_DIR / "run_channel_check.py"
TEMPLATE = HARNESS_DIR / "examples" / "bridge_two_agents.template.json"
CACHE = REPO / ".cache" / "claude"
# The venv's own `bridge` script; no resolve(): the venv's bin is the python's sibling.
BRIDGE = Path(sys.executable).with_name("bridge")

# What the harness sets for every Claude Code: no telemetry, no auto-update, no marketplace
# downloads, no error reports, no nonessential traffic (see the harness README).
QUIET_ENV = {
    "DISABLE_TELEMETRY": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_GB_DISK_CACHE_WHEN_TELEMETRY_OFF": "1",
}
FAKE_API_KEY = "sk-ant-api03-fake-harness-key-0000000000"

NPM_INSTALL_TIMEOUT = 600
CLAUDE_CMD_TIMEOUT = 90
SCENARIO_TIMEOUT = 150  # the harness's own deadline for test B


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def read_tail(path: Path, lines: int = 60) -> str:
    try:
        return tail(path.read_text(errors="replace"), lines)
    except OSError as e:
        return f"<cannot read {path}: {e}>"


# --------------------------------------------------------------------------- the CLI


def installed_version(prefix: Path) -> str | None:
    manifest = prefix / "node_modules" / "@anthropic-ai" / "claude-code" / "package.json"
    if not (prefix / "node_modules" / ".bin" / "claude").exists():
        return None
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="session")
def claude_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pinned Claude Code CLI, installed into <repo>/.cache/claude unless already there."""
    npm = shutil.which("npm")
    if npm is None:
        reason = "npm is not installed: cannot install the real Claude Code CLI"
        print(f"\nSKIP test_real_client: {reason}", file=sys.stderr)
        pytest.skip(reason)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".install.lock", "w") as lock:  # other pytest sessions may install too
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = installed_version(CACHE)
        if have != CLAUDE_CODE_VERSION:
            print(f"\ninstalling {CLAUDE_CODE_PACKAGE}@{CLAUDE_CODE_VERSION} into {CACHE} "
                  f"(found {have or 'nothing'}) ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            cmd = [npm, "install", "--prefix", str(CACHE), "--no-audit", "--no-fund",
                   "--save-exact", f"{CLAUDE_CODE_PACKAGE}@{CLAUDE_CODE_VERSION}"]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=NPM_INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired as e:
                pytest.fail(f"`{' '.join(cmd)}` timed out after {NPM_INSTALL_TIMEOUT}s:\n"
                            f"{tail(str(e.stdout or '') + str(e.stderr or ''))}")
            if done.returncode != 0 or installed_version(CACHE) != CLAUDE_CODE_VERSION:
                pytest.fail(f"`{' '.join(cmd)}` failed (exit {done.returncode}; installed "
                            f"version now {installed_version(CACHE)}):\n"
                            f"{tail(done.stdout + done.stderr)}")
            print(f"installed in {time.monotonic() - started:.0f}s", file=sys.stderr)
    claude = CACHE / "node_modules" / ".bin" / "claude"
    version = subprocess.run([str(claude), "--version"], capture_output=True, text=True,
                             timeout=CLAUDE_CMD_TIMEOUT,
                             env=minimal_env(tmp_path_factory.mktemp("claude-home")),
                             stdin=subprocess.DEVNULL)
    assert CLAUDE_CODE_VERSION in version.stdout, (
        f"{claude} --version: exit {version.returncode}\n{version.stdout}{version.stderr}")
    return claude


@pytest.fixture(scope="session")
def tmux() -> str:
    found = shutil.which("tmux")
    if found is None:
        pytest.fail("tmux is not installed; the real Claude Code must run interactively for "
                    "channels, and the harness drives it in tmux (apt-get install -y tmux)")
    return found


@pytest.fixture(scope="session")
def harness() -> Path:
    if not HARNESS.exists() or not TEMPLATE.exists():
        pytest.fail(f"the Claude Code harness is missing: expected {HARNESS} and {TEMPLATE} "
                    f"(shared/ must sit beside the repo)")
    return HARNESS


def minimal_env(home: Path) -> dict[str, str]:
    """What the harness gives Claude Code: a throwaway HOME, PATH, and the quiet switches.

    ANTHROPIC_BASE_URL points at the discard port, so nothing can reach a real API.
    """
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TERM": "dumb",
        "LANG": "C.UTF-8",
        "USER": os.environ.get("USER", "root"),
        "ANTHROPIC_API_KEY": FAKE_API_KEY,
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        **QUIET_ENV,
    }


def seed_home(home: Path, work: Path) -> None:
    """A ~/.claude.json that skips onboarding and trusts the work dir, like the harness's."""
    home.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "hasCompletedOnboarding": True,
        "lastOnboardingVersion": CLAUDE_CODE_VERSION,
        "theme": "dark",
        "numStartups": 1,
        "customApiKeyResponses": {"approved": [FAKE_API_KEY[-20:]], "rejected": []},
        "projects": {str(work): {"hasTrustDialogAccepted": True, "allowedTools": [],
                                 "hasCompletedProjectOnboarding": True}},
    }
    (home / ".claude.json").write_text(json.dumps(config, indent=1))


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


def bridge_server(name: str, redis_url: str) -> dict[str, Any]:
    return {"command": str(BRIDGE), "args": ["serve", "--name", name],
            "env": {"BRIDGE_REDIS_URL": redis_url, "BRIDGE_LOG_LEVEL": "DEBUG"}}


def two_agents_scenario(redis_port: int) -> dict[str, Any]:
    """The harness's bridge template, pointed at our bridge and a redis on `redis_port`."""
    scenario: dict[str, Any] = json.loads(TEMPLATE.read_text())
    scenario.pop("_comment", None)
    scenario["timeout"] = SCENARIO_TIMEOUT
    redis_server = shutil.which("redis-server") or "redis-server"
    scenario["services"] = [{
        "name": "redis",
        "command": [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no"],
        "ready_tcp": redis_port,
    }]
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    instances = {spec["name"]: spec for spec in scenario["instances"]}
    assert set(instances) == {"alice", "bob"}, f"unexpected template: {list(instances)}"
    for name, spec in instances.items():
        spec["mcp_servers"] = {"bridge": bridge_server(name, redis_url)}
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


def run_harness(harness: Path, claude: Path, scenario: Path, run_dir: Path) -> int:
    """Run the driver; on our own timeout, SIGINT it so its cleanup still runs."""
    out_path = run_dir / "harness.out"
    cmd = [sys.executable, str(harness), "--scenario", str(scenario), "--run-dir", str(run_dir),
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
            pytest.fail(f"the harness did not finish in {SCENARIO_TIMEOUT + 90}s; run dir "
                        f"{run_dir}\n{read_tail(out_path)}")


def channels(summary: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return list(summary.get(name, {}).get("summary", {}).get("channels", []))


@pytest.mark.timeout(NPM_INSTALL_TIMEOUT + 600)
def test_two_claude_codes_talk_through_bridge_channels(
    claude_bin: Path, tmux: str, harness: Path, tmp_path: Path
) -> None:
    harness_run = tmp_path / "run"
    harness_run.mkdir()
    scenario_path = harness_run / "scenario.json"
    scenario_path.write_text(json.dumps(two_agents_scenario(free_port()), indent=1))

    started = time.monotonic()
    rc = run_harness(harness, claude_bin, scenario_path, harness_run)
    elapsed = time.monotonic() - started
    print(f"\nharness: exit {rc} in {elapsed:.0f}s; run dir {harness_run}", file=sys.stderr)

    where = (f"run dir {harness_run}\n--- harness output (tail) ---\n"
             f"{read_tail(harness_run / 'harness.out', 80)}")
    assert rc == 0, f"harness exit {rc} (0 PASS, 1 FAIL, 2 harness error); {where}"
    summary_path = harness_run / "summary.json"
    assert summary_path.exists(), f"no summary.json; {where}"
    summary = json.loads(summary_path.read_text())
    assert set(summary) == {"alice", "bob"}, f"summary has {list(summary)}; {where}"
    for name in ("alice", "bob"):
        assert summary[name]["ok"], f"{name}: {summary[name]['checks']}; {where}"

    # Checked here too, not only by the harness: who said what, as the model saw it.
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
