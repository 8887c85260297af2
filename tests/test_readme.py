"""The redis-cli recipes of the docs (docs/design.md, "Inspect a room with redis-cli") run as
written against a live room, so the docs cannot drift from the key layout."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import anyio
import pytest

pytestmark = pytest.mark.anyio

PAGE = Path(__file__).resolve().parents[1] / "docs" / "design.md"


def recipes() -> list[str]:
    text = PAGE.read_text()
    start = text.index("## Inspect a room with redis-cli")
    section = text[start:text.index("\n## ", start + 1)]
    return [line.split("#")[0].strip() for line in section.splitlines()
            if line.startswith("redis-cli ")]


def run(port: int, line: str) -> str:
    args = shlex.split(line)
    result = subprocess.run(["redis-cli", "-p", str(port), *args[1:]], capture_output=True,
                            text=True, timeout=10)
    assert result.returncode == 0, (line, result.stderr)
    return result.stdout


async def test_every_redis_cli_recipe_works(agents, redis_server):
    alice = await agents.start("alice", "--role", "manager")
    bob = await agents.start("bob")
    await alice.tool("send_message", to="bob", text="recipe check")
    await bob.wait_messages(1)
    await bob.close_stdin()  # flushes bob's cursor; alice stays
    await bob.wait_exit()

    lines = recipes()
    assert len(lines) >= 7
    expectations = {
        "ZRANGE": "alice", "HGETALL": "manager", "TTL": re.compile(r"^\d+$"),
        "XRANGE": "recipe check", "XREVRANGE": "recipe check",
        "GET 'bridge:{main}:cursor": re.compile(r"^\d+-\d+ \d+ [0-9a-f]{32}$"),
        "GET 'bridge:{main}:epoch'": re.compile(r"^[0-9a-f]{32}$"),
        "GET 'bridge:{main}:seq'": re.compile(r"^1$"),
    }
    checked = set()
    for line in lines:
        if "PSUBSCRIBE" in line:
            continue  # blocks; checked below
        output = run(redis_server.port, line.replace(":alice'", ":bob'") if "cursor" in line
                     else line)
        for marker, expected in expectations.items():
            if marker in line:
                if isinstance(expected, str):
                    assert expected in output, (line, output)
                else:
                    assert expected.match(output.strip()), (line, output)
                checked.add(marker)
    assert checked == set(expectations)

    [subscribe] = [line for line in lines if "PSUBSCRIBE" in line]
    watcher = subprocess.Popen(["redis-cli", "-p", str(redis_server.port),
                                *shlex.split(subscribe)[1:]], stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().strip() == "psubscribe"  # subscribed
        await alice.tool("set_status", text="seen by psubscribe")
        with anyio.fail_after(10):
            seen = ""
            while "seen by psubscribe" not in seen:
                seen += await anyio.to_thread.run_sync(watcher.stdout.readline)
    finally:
        watcher.kill()
        watcher.wait()
