"""`bridge demo` (make demo): the scripted story through real `bridge serve` processes, run as a
newcomer runs it, then checked for what it leaves behind (no process, no key of its room)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridge.ops import demo_story

BRIDGE = str(Path(sys.executable).with_name("bridge"))


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Path]:
    """An embedded Redis of the test's own (its runtime folder): never the user's."""
    runtime = tmp_path / "run"
    try:
        yield runtime
    finally:
        pid_file = runtime / "redis.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def demo_env(runtime: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("BRIDGE_") and key not in ("NO_COLOR", "COLUMNS")}
    env.update(BRIDGE_RUNTIME_DIR=str(runtime), BRIDGE_DATA_DIR=str(runtime.parent / "data"),
               **extra)
    return env


def room_of(output: str) -> str:
    found = re.search(r"^room (demo-[0-9a-f]{6}) on ", output, re.M)
    assert found, output
    return found.group(1)


def processes_naming(room: str) -> list[str]:
    """Command lines of the processes that still name the room (bridge serve, web, ...)."""
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            words = cmdline.read_bytes().split(b"\0")
            if room.encode() in words:
                left.append(b" ".join(words).decode(errors="replace"))
    return left


def assert_story_told(output: str) -> None:
    assert "SCRIPTED (no model, no API key)" in output
    assert "scripted agents (no model, no API key)" in output  # said again at the end
    # the conversation as tail shows it: sender → recipients, then the text, one line each
    assert f"alice → bob  {demo_story.FINAL}" in output  # the contract, settled
    assert f"bob → alice  {demo_story.CONFIRM}" in output
    assert f"carol → alice,bob  {demo_story.ACK}" in output
    # bob was away when carol answered; his next session got it
    assert "acknowledges (bob is away: bridge queues it for him)" in output
    assert "bob is back in a new session: carol's acknowledgement was waiting for him" in output
    assert output.index(demo_story.PROPOSAL) < output.index(demo_story.CHANGE) \
        < output.index(demo_story.FINAL) < output.index(demo_story.CONFIRM)


def test_demo_on_the_embedded_redis_tells_the_story_and_leaves_nothing(embedded: Path) -> None:
    result = subprocess.run([BRIDGE, "demo"], env=demo_env(embedded), capture_output=True,
                            text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    room = room_of(out)
    assert f"room {room} on the embedded Redis" in out
    assert re.search(rf"^watch it live: http://127\.0\.0\.1:\d+/r/{room}#token=\S+", out, re.M)
    assert "alice  developer" in out and "carol  manager" in out  # bridge who, all three in
    assert_story_told(out)
    assert "README" in out  # where a real setup is
    assert re.search(rf"cleaned up: 4 processes stopped; room {room}: its \d+ keys removed", out)
    assert processes_naming(room) == []
    client = redis.Redis(unix_socket_path=str(embedded / "redis.sock"))
    assert client.keys(f"bridge:{{{room}}}:*") == []


def test_demo_on_a_configured_redis_goes_on_without_the_web_extra(redis_server,
                                                                 embedded: Path) -> None:
    url = redis_server.url
    # the web extra missing in the demo's own process (the agents need none of it)
    hide_web = ("import sys; sys.modules['uvicorn'] = None; from bridge.cli import main; "
                "sys.exit(main(['demo']))")
    result = subprocess.run([sys.executable, "-c", hide_web],
                            env=demo_env(embedded, BRIDGE_REDIS_URL=url), capture_output=True,
                            text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    room = room_of(out)
    assert f"room {room} on the Redis at {url} (BRIDGE_REDIS_URL)" in out
    assert "no live page: bridge web needs the web extra" in out
    assert "pip install 'bridge-agents[web]'" in out
    assert "watch it live" not in out
    assert_story_told(out)
    assert re.search(rf"cleaned up: 3 processes stopped; room {room}: its \d+ keys removed", out)
    assert processes_naming(room) == []
    assert redis_server.client().keys("bridge:*") == []
    assert not (embedded / "redis.sock").exists()  # the embedded one was never started


def test_demo_hold_keeps_the_page_up_until_ctrl_c(embedded: Path) -> None:
    demo = subprocess.Popen([BRIDGE, "demo", "--hold", "120"], env=demo_env(embedded),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:  # until the story is told and the demo holds
            seen.append(line)
            if line.startswith("holding for 120 s"):
                break
        out = "".join(seen)
        room = room_of(out)
        address = re.search(r"^watch it live: (http://\S+)#token=", out, re.M)
        assert address, out
        # the page's history, as a browser reads it while the demo holds
        base = address.group(1).rsplit("/r/", 1)[0]
        with urllib.request.urlopen(f"{base}/api/r/{room}/history", timeout=10) as response:
            page = json.dumps(json.load(response), ensure_ascii=False)
        assert demo_story.FINAL in page and demo_story.ACK in page
        demo.send_signal(signal.SIGINT)  # Ctrl-C ends the hold: a normal end
        rest, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, out + rest + err
    assert re.search(rf"cleaned up: 4 processes stopped; room {room}: its \d+ keys removed", rest)
    assert processes_naming(room) == []
    client = redis.Redis(unix_socket_path=str(embedded / "redis.sock"))
    assert client.keys(f"bridge:{{{room}}}:*") == []


def test_demo_says_why_when_redis_is_unreachable(embedded: Path) -> None:
    result = subprocess.run([BRIDGE, "demo"],
                            env=demo_env(embedded, BRIDGE_REDIS_URL="redis://127.0.0.1:1/0"),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("bridge: cannot reach Redis at redis://127.0.0.1:1/0")
    assert processes_naming(room_of(result.stdout)) == []
