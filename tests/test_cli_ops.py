"""The operator CLI (`who`, `tail`, `send --as`, `history`, `doctor`), driven as a subprocess
against a real redis-server with real `bridge serve` agents in the room."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from tests.conftest import free_port

pytestmark = pytest.mark.anyio

BRIDGE = str(Path(sys.executable).with_name("bridge"))
SLOW = {"BRIDGE_SEND_TIMEOUT": "30"}


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BRIDGE_") and k not in ("NO_COLOR", "COLUMNS")}
    env.update(extra)
    return env


async def bridge(*args: str, env: dict[str, str] | None = None,
                 timeout: float = 30) -> subprocess.CompletedProcess[str]:
    with anyio.fail_after(timeout):
        result = await anyio.run_process([BRIDGE, *args], env=env or cli_env(), check=False)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(), result.stderr.decode())


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bridge: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


class Running:
    """A long-running CLI process whose stdout lines are collected as they come."""

    def __init__(self, process: Any, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.lines: list[str] = []
        self._changed = anyio.Event()
        self.closed = False

    async def read_forever(self) -> None:
        reader = BufferedByteReceiveStream(self.process.stdout)
        try:
            while True:
                line = await reader.receive_until(b"\n", 1 << 20)
                self.lines.append(line.decode())
                self._changed.set()
                self._changed = anyio.Event()
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
            self.closed = True
            self._changed.set()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def wait_for(self, predicate: Callable[[list[str]], Any], timeout: float = 20,
                       what: str = "output") -> Any:
        with anyio.fail_after(timeout):
            while not (value := predicate(self.lines)):
                if self.closed:
                    raise AssertionError(f"exited while waiting for {what}: {self.lines} "
                                         f"{self.stderr()[-2000:]}")
                await self._changed.wait()
        return value

    async def wait_stderr(self, needle: str, timeout: float = 20) -> None:
        # stderr goes to a file; polled, with a deadline
        with anyio.fail_after(timeout):
            while needle not in self.stderr():
                assert not self.closed, self.stderr()
                await anyio.sleep(0.02)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    async def interrupt(self, timeout: float = 10) -> int:
        self.process.send_signal(signal.SIGINT)
        with anyio.fail_after(timeout):
            return int(await self.process.wait())


# runs a command with SIGINT set to argv[1] (SIG_DFL or SIG_IGN), as its parent would leave it
WITH_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, getattr(signal, sys.argv[1]));"
               " os.execv(sys.argv[2], sys.argv[2:])")


async def start_cli(tg: Any, tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                    ready: str | None = "tail_started", sigint: str | None = None) -> Running:
    """``sigint``: the SIGINT disposition bridge inherits (SIG_DFL, SIG_IGN); by default,
    pytest's own."""
    stderr_path = tmp_path / f"cli-{os.urandom(3).hex()}.stderr"
    stderr_file = open(stderr_path, "wb")  # noqa: SIM115 - lives as long as the process
    command = [sys.executable, "-c", WITH_SIGINT, sigint, BRIDGE] if sigint else [BRIDGE]
    process = await anyio.open_process(
        [*command, *args], env=env or cli_env(BRIDGE_LOG_LEVEL="INFO"), stdout=subprocess.PIPE,
        stderr=stderr_file, stdin=subprocess.DEVNULL)
    running = Running(process, stderr_path)
    tg.start_soon(running.read_forever)
    if ready:
        await running.wait_stderr(ready)
    return running


@pytest.fixture
async def cli(tmp_path: Path):
    started: list[Running] = []
    async with anyio.create_task_group() as tg:

        async def start(*args: str, **kwargs: Any) -> Running:
            running = await start_cli(tg, tmp_path, *args, **kwargs)
            started.append(running)
            return running

        try:
            yield start
        finally:
            for running in started:
                if running.process.returncode is None:
                    running.process.kill()
                    with anyio.move_on_after(5):
                        await running.process.wait()
            tg.cancel_scope.cancel()


def texts(lines: list[str]) -> list[str]:
    return [r["text"] for r in map(json.loads, lines) if r.get("kind") == "message"]


# ------------------------------------------------------------------ who
async def test_who_table_and_json(agents, redis_server):
    alice = await agents.start("alice", "--role", "manager")
    await agents.start("bob", "--role", "developer", "--delivery", "pull")
    await alice.tool("set_status", text="reviewing the plan")

    table = await bridge("who", "--redis", redis_server.url)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "ROLE", "HOST", "DELIVERY", "JOINED", "LAST", "SEEN",
                              "STATUS", "CLIENT"]
    assert "\033[" not in table.stdout  # piped: no colour
    assert [row.split()[0] for row in rows] == ["alice", "bob"]
    assert "manager" in rows[0] and "channel" in rows[0] and "reviewing the plan" in rows[0]
    assert "developer" in rows[1] and "pull" in rows[1]
    assert "bridge-tests 0" in rows[0]  # the MCP client, from initialize's clientInfo
    assert re.search(r"\d+s ago", rows[0])

    result = await bridge("who", "--json", "--redis", redis_server.url)
    data = json.loads(result.stdout)
    assert data["room"] == "main" and isinstance(data["now"], int)
    by_name = {a["name"]: a for a in data["agents"]}
    assert set(by_name) == {"alice", "bob"}
    assert by_name["alice"]["role"] == "manager" and by_name["alice"]["status"] == \
        "reviewing the plan"
    assert by_name["bob"]["delivery"] == "pull" and by_name["alice"]["delivery"] == "channel"
    assert by_name["alice"]["client"] == "bridge-tests 0"
    assert by_name["alice"]["joined_at"] <= by_name["alice"]["last_seen"] <= data["now"]


async def test_who_prunes_an_expired_agent(agents, redis_server, r):
    await agents.start("alice")
    carol = await agents.start("carol")
    carol.process.kill()  # no goodbye: her record stays until it expires
    await carol.wait_exit()
    # expire her now, as the TTL would: the hash is gone, the index still lists her
    r.delete("bridge:{main}:agent:carol")
    r.zadd("bridge:{main}:agents", {"carol": 1})

    data = json.loads((await bridge("who", "--json", "--redis", redis_server.url)).stdout)
    assert [a["name"] for a in data["agents"]] == ["alice"]
    assert r.zscore("bridge:{main}:agents", "carol") is None  # pruned, not just hidden
    table = await bridge("who", "--redis", redis_server.url)
    assert "carol" not in table.stdout and "alice" in table.stdout


async def test_who_all_rooms_and_the_empty_room(agents, redis_server):
    alice = await agents.start("alice")
    await agents.start("bob")
    await agents.start("dora", "--room", "dev")
    await alice.tool("send_message", to="bob", text="hi")

    result = await bridge("who", "--all-rooms", "--redis", redis_server.url)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [["ROOM", "AGENTS", "MESSAGES"], ["dev", "1", "0"], ["main", "2", "1"]]
    data = json.loads((await bridge("who", "--all-rooms", "--json", "--redis",
                                    redis_server.url)).stdout)
    assert data["rooms"] == [{"room": "dev", "agents": 1, "messages": 0},
                             {"room": "main", "agents": 2, "messages": 1}]

    empty = await bridge("who", "--room", "nobody", "--redis", redis_server.url)
    assert_one_line_error(empty, "no agents in room 'nobody'", "dev (1)", "main (2)")
    empty_json = await bridge("who", "--room", "nobody", "--json", "--redis", redis_server.url)
    assert empty_json.returncode == 0 and json.loads(empty_json.stdout)["agents"] == []


# ------------------------------------------------------------------ errors
async def test_unreachable_redis_is_one_line_for_every_command():
    url = f"redis://127.0.0.1:{free_port()}/0"
    for args in (["who"], ["history"], ["tail"], ["send", "--as", "boss", "bob", "hi"]):
        result = await bridge(*args, "--redis", url)
        assert_one_line_error(result, "cannot reach Redis", url)


async def test_bad_flags_and_values(redis_server):
    result = await bridge("history", "--limit", "0", "--redis", redis_server.url)
    assert result.returncode == 2 and "--limit" in result.stderr
    result = await bridge("send", "bob", "hi", "--redis", redis_server.url)  # no --as
    assert result.returncode == 2 and "--as" in result.stderr
    result = await bridge("who", "--redis", "http://example.com")
    assert_one_line_error(result, "--redis")
    result = await bridge("history", "--since", "yesterday", "--redis", redis_server.url)
    assert_one_line_error(result, "--since 'yesterday'")
    result = await bridge("send", "--as", "Bad Name", "bob", "hi", "--redis", redis_server.url)
    assert_one_line_error(result, "BRIDGE_NAME")


# ------------------------------------------------------------------ history
async def test_history_with_filters(agents, redis_server):
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    await agents.start("carol")
    url = ["--redis", redis_server.url]
    empty = await bridge("history", *url)
    assert_one_line_error(empty, "no messages in the log of room 'main'")

    ids = {}
    for sender, to, text in [(alice, "bob", "a1"), (bob, "alice", "b1"), (alice, "*", "all1"),
                             (None, "bob", "c1"), (alice, ["bob", "carol"], "a2")]:
        if sender is None:  # carol, through the CLI's own send
            result = await bridge("send", "--as", "carol2", "--json", "bob", text, *url)
            ids[text] = json.loads(result.stdout)["sent"]
            continue
        reply = await sender.tool("send_message", to=to, text=text)
        ids[text] = re.search(r"\d+-\d+", reply).group(0)

    async def history(*args: str) -> list[str]:
        result = await bridge("history", "--json", *args, *url)
        assert result.returncode == 0, result.stderr
        return texts(result.stdout.splitlines())

    assert await history() == ["a1", "b1", "all1", "c1", "a2"]
    assert await history("--from", "alice") == ["a1", "all1", "a2"]
    assert await history("--to", "bob") == ["a1", "all1", "c1", "a2"]
    assert await history("--to", "*") == ["all1"]
    assert await history("--limit", "2") == ["c1", "a2"]
    assert await history("--from", "alice", "--limit", "1") == ["a2"]
    assert await history("--since", ids["all1"]) == ["c1", "a2"]
    assert await history("--since", "10m") == ["a1", "b1", "all1", "c1", "a2"]
    assert await history("--from", "nobody") == []

    record = json.loads((await bridge("history", "--json", "--limit", "1", *url)).stdout)
    assert record == {"id": ids["a2"], "from": "alice", "to": ["bob", "carol"], "text": "a2",
                      "reply_to": "", "kind": "message", "ts": record["ts"], "seq": 5}

    plain = await bridge("history", "--from", "alice", *url)
    lines = plain.stdout.splitlines()
    assert re.match(r"^\d\d:\d\d:\d\d  alice → bob  a1$", lines[0]), lines
    assert lines[1].endswith("alice → *  all1") and lines[2].endswith("alice → bob,carol  a2")
    none = await bridge("history", "--from", "nobody", *url)
    assert_one_line_error(none, "match --from nobody")


async def test_history_lines_are_shortened_and_made_safe(agents, redis_server):
    alice = await agents.start("alice")
    await agents.start("bob")
    await alice.tool("send_message", to="bob", text="line one\nline two \x1b[31mred " + "x" * 100)
    env = cli_env(COLUMNS="60")
    [line] = (await bridge("history", "--redis", redis_server.url, env=env)).stdout.splitlines()
    assert len(line) == 60 and line.endswith("…")
    assert "line one ⏎ line two" in line
    [wide] = (await bridge("history", "--redis", redis_server.url)).stdout.splitlines()
    assert wide.endswith("x" * 100)  # piped, without COLUMNS: not cut
    assert "\x1b" not in wide and "line two \ufffd[31mred" in wide  # no escape reaches the tty


def on_terminal(args: list[str], columns: int, **env: str) -> str:
    """Run the CLI with its stdout on a pseudo-terminal of ``columns`` columns; its output."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    process = subprocess.Popen([BRIDGE, *args], stdout=follower, stderr=subprocess.DEVNULL,
                               env=cli_env(**env))
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=30) == 0
    return b"".join(chunks).decode().replace("\r\n", "\n")


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def steady(shown: str) -> list[str]:
    """Output with its times taken out: two runs seconds apart print the same. The columns'
    spacing and where a cut line ends go too: "10s ago" is a character wider than "9s ago"
    (a loaded machine once crossed that between the two runs)."""
    return [" ".join(word for word in re.sub(r"\d+s ago", "_s ago", line).split()
                     if not word.endswith("…")) for line in shown.splitlines()]


async def test_on_a_terminal_output_is_coloured_and_fits_its_width(agents, redis_server):
    alice = await agents.start("alice", "--role", "manager")
    await agents.start("bob")
    hostile = "[bold]not markup[/bold] :smile: " + "x" * 100
    await alice.tool("set_status", text=hostile)
    await alice.tool("send_message", to="bob", text=hostile)
    # as after a heartbeat of alice's: her record now expires after bob's (the roster zset's
    # order), yet who lists by name, so two runs with heartbeats between them print the same
    agents_key = "bridge:{main}:agents"
    r = redis_server.client()
    r.zadd(agents_key, {"alice": int(r.zscore(agents_key, "bob") or 0) + 1})
    url = ["--redis", redis_server.url]
    for args in (["history", *url], ["who", *url]):
        shown = await anyio.to_thread.run_sync(on_terminal, args, 60)
        assert ANSI.search(shown), shown  # a terminal gets colour
        visible = ANSI.sub("", shown).splitlines()
        assert visible and all(len(line.rstrip()) <= 60 for line in visible), visible
        # what a peer wrote is shown as it is: rich markup and emoji codes are not rendered
        assert "[bold]no" in "".join(visible) and "…" in "".join(visible)
        plain = await anyio.to_thread.run_sync(lambda a=args: on_terminal(a, 60, NO_COLOR="1"))
        assert "\x1b" not in plain and steady(ANSI.sub("", shown)) == steady(plain)
    names = [line.split()[0] for line in plain.splitlines()[1:]]
    assert names == ["alice", "bob"], plain
    history = ANSI.sub("", await anyio.to_thread.run_sync(on_terminal, ["history", *url], 200))
    assert ":smile: xxx" in history  # wider terminal, longer line: the cut follows the width


# ------------------------------------------------------------------ tail
async def test_tail_shows_messages_and_events_as_they_flow(agents, redis_server, cli):
    alice = await agents.start("alice", "--role", "manager")
    bob = await agents.start("bob")
    await alice.tool("send_message", to="bob", text="before the tail")  # not replayed

    tail = await cli("tail", "--json", "--redis", redis_server.url)
    await alice.tool("send_message", to="bob", text="one")
    await bob.tool("send_message", to="*", text="two")
    await agents.start("carol", "--role", "tester")
    await alice.tool("set_status", text="busy")
    records = await tail.wait_for(lambda lines: len(lines) >= 4 and lines, what="4 lines")
    records = tail.records()
    messages = [r for r in records if r["kind"] == "message"]
    assert [(m["from"], m["to"], m["text"]) for m in messages] == [
        ("alice", ["bob"], "one"), ("bob", "*", "two")]
    assert {"id", "from", "to", "text", "reply_to", "kind", "ts", "seq"} == set(messages[0])
    events = [r for r in records if r["kind"] != "message"]
    assert {(e["kind"], e["name"]) for e in events} == {("joined", "carol"), ("status", "alice")}
    assert await tail.interrupt() == 0
    assert "Traceback" not in tail.stderr()


@pytest.mark.parametrize("inherited", ["SIG_DFL", "SIG_IGN"])
async def test_tail_interrupted_while_it_starts_exits_0(redis_server, cli, inherited):
    """Ctrl-C on `bridge tail` exits 0 also before it follows anything: here Redis is
    stopped (SIGSTOP: the kernel still accepts the connection, nothing answers), so the
    signal lands while tail waits for Redis' first answer. Also when tail inherits SIGINT
    ignored, as a job started in the background by a non-interactive shell (`make test &`,
    a CI runner) does: asyncio's own Ctrl-C handling is then off, and tail used to sit out
    its 10 s read timeout, which this test's deadline took for a hang."""
    from tests.test_reliability import local_ports

    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)
    try:
        tail = await cli("tail", "--redis", redis_server.url, ready=None, sigint=inherited)
        with anyio.fail_after(20):  # connected: tail waits for Redis' answer
            while not local_ports(tail.process.pid):
                await anyio.sleep(0.02)  # poll interval, bounded by the deadline
        assert await tail.interrupt() == 0, tail.stderr()
        assert "Traceback" not in tail.stderr()
    finally:
        redis_server.process.send_signal(signal.SIGCONT)


async def test_tail_plain_lines_and_since(agents, redis_server, cli):
    alice = await agents.start("alice")
    await agents.start("bob")
    await alice.tool("send_message", to="bob", text="earlier")
    tail = await cli("tail", "--since", "10m", "--redis", redis_server.url,
                     env=cli_env(BRIDGE_LOG_LEVEL="INFO", NO_COLOR="1"))
    await tail.wait_for(lambda lines: lines, what="the replayed line")
    await agents.start("carol", "--role", "tester")
    await alice.tool("send_message", to="carol", text="later")
    await tail.wait_for(lambda lines: len(lines) >= 3, what="3 lines")
    assert re.match(r"^\d\d:\d\d:\d\d  alice → bob  earlier$", tail.lines[0])
    assert re.search(r"· carol joined \(tester, .+\)$", tail.lines[1])
    assert tail.lines[2].rstrip("\n").endswith("alice → carol  later")
    assert await tail.interrupt() == 0


async def test_tail_survives_killed_connections_and_a_redis_restart(agents, redis_server, r,
                                                                    cli):
    alice = await agents.start("alice", env=dict(SLOW))
    await agents.start("bob")
    tail = await cli("tail", "--json", "--redis", redis_server.url)

    async def send(first: int, last: int) -> None:
        for i in range(first, last):
            await alice.tool("send_message", to="bob", text=f"m{i}", timeout=60)
        await tail.wait_for(lambda lines: f"m{last - 1}" in texts(lines), timeout=30,
                            what=f"m{last - 1}")

    await send(0, 5)
    r.execute_command("CLIENT", "KILL", "TYPE", "normal")
    r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await send(5, 10)
    redis_server.stop()
    redis_server.start()
    await send(10, 15)
    assert texts(tail.lines) == [f"m{i}" for i in range(15)]  # nothing missed or repeated
    assert "tail_reconnected" in tail.stderr()
    # the events connection came back too
    await agents.start("carol")
    await tail.wait_for(lambda lines: any('"joined"' in line and '"carol"' in line
                                          for line in lines), what="carol's joined event")
    assert await tail.interrupt() == 0


async def test_tail_stops_on_a_lasting_error_reply(redis_server, r, cli):
    # not a connection problem that passes: the log key holds something else (written by
    # hand); retrying cannot fix it, so one line and exit 1 rather than a retry loop
    tail = await cli("tail", "--redis", redis_server.url)
    r.set("bridge:{main}:log", "not a stream")
    with anyio.fail_after(30):
        assert await tail.process.wait() == 1
    last = tail.stderr().strip().splitlines()[-1]
    assert last.startswith("bridge: Redis refused XREAD on room main's log: WRONGTYPE"), last
    assert "retrying cannot fix this" in last and "bridge doctor --room main" in last
    assert "tail_connection_lost" not in tail.stderr()


# ------------------------------------------------------------------ send --as
async def test_send_as_reaches_an_agent_as_a_channel_push(agents, redis_server):
    alice = await agents.start("alice")
    result = await bridge("send", "--as", "boss", "alice", "please report",
                          "--redis", redis_server.url)
    assert result.returncode == 0, result.stderr
    assert re.match(r"^sent \d+-\d+ to alice$", result.stdout.strip())
    [push] = await alice.wait_messages(1)
    assert push["content"] == "please report"
    assert push["meta"]["from"] == "boss" and push["meta"]["to"] == "alice"

    unknown = await bridge("send", "--as", "boss", "nobody", "hi", "--redis", redis_server.url)
    assert_one_line_error(unknown, "unknown recipient(s): nobody")
    taken = await bridge("send", "--as", "alice", "boss", "hi", "--redis", redis_server.url)
    assert_one_line_error(taken, "the name 'alice' is already taken")

    with anyio.fail_after(30):
        piped = await anyio.run_process(
            [BRIDGE, "send", "--as", "boss", "alice", "-", "--redis", redis_server.url],
            input=b"from stdin\nsecond line", env=cli_env(), check=False)
    assert piped.returncode == 0, piped.stderr
    pushes = await alice.wait_messages(2)
    assert pushes[1]["content"] == "from stdin\nsecond line"
    # an operator comes and goes quietly: the room does not churn around each message (events
    # on one subscription arrive in the order they were published: a joined before the first
    # message, a left before the second)
    assert alice.channel("joined") == [] and alice.channel("left") == []


async def test_send_wait_prints_the_reply(agents, redis_server, cli):
    alice = await agents.start("alice")
    waiting = await cli("send", "--as", "boss", "--wait", "--json", "alice", "status?",
                        "--redis", redis_server.url, ready=None)
    sent = await waiting.wait_for(lambda lines: lines and json.loads(lines[0]), what="sent")
    assert sent["online"] == ["alice"]
    [question] = await alice.wait_messages(1)
    assert question["meta"]["from"] == "boss"

    who = json.loads((await bridge("who", "--json", "--redis", redis_server.url)).stdout)
    boss = next(a for a in who["agents"] if a["name"] == "boss")
    assert boss["role"] == "human" and boss["delivery"] == "pull"

    await alice.tool("send_message", to="boss", text="all green",
                     reply_to=question["meta"]["message_id"])
    await waiting.wait_for(lambda lines: len(lines) >= 2, what="the reply")
    reply = json.loads(waiting.lines[1])
    assert reply["from"] == "alice" and reply["text"] == "all green"
    assert reply["reply_to"] == sent["sent"]
    assert await waiting.interrupt() == 0
    who = json.loads((await bridge("who", "--json", "--redis", redis_server.url)).stdout)
    assert [a["name"] for a in who["agents"]] == ["alice"]  # boss left


async def test_send_wait_timeout_without_reply(agents, redis_server):
    await agents.start("alice")
    result = await bridge("send", "--as", "boss", "--wait", "--timeout", "0.5", "alice", "hi",
                          "--redis", redis_server.url)
    assert result.returncode == 1
    assert result.stdout.startswith("sent ")
    assert result.stderr.strip() == "bridge: no reply to boss within 0.5 s"


# ------------------------------------------------------------------ doctor
async def test_doctor_on_a_healthy_server(agents, redis_server):
    await agents.start("alice")
    result = await bridge("doctor", "--redis", redis_server.url,
                          env=cli_env(DISABLE_TELEMETRY="1"))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^ok +Redis URL parses", out, re.M)
    assert re.search(r"^ok +Redis reachable: round trip [\d.]+ ms", out, re.M)
    assert re.search(r"^ok +redis \d+\.\d+\.\d+; sharded pub/sub (yes|no)", out, re.M)
    assert re.search(r"^ok +ACL: user default may run every command", out, re.M)
    assert re.search(r"^ok +AOF persistence is on, appendfsync everysec", out, re.M)
    assert re.search(r"^ok +clock skew against Redis TIME: [+-]\d+ ms", out, re.M)
    assert re.search(r"^info +room main: 1 agent\(s\) \(alice \(bridge-tests 0\)\)", out,
                     re.M)
    assert re.search(r"^warn +DISABLE_TELEMETRY is set", out, re.M)
    assert "--delivery pull" in out


async def test_doctor_warns_when_aof_is_off(redis_server, r):
    r.config_set("appendonly", "no")
    result = await bridge("doctor", "--redis", redis_server.url)
    assert result.returncode == 0, result.stdout
    assert re.search(r"^warn +AOF persistence is off", result.stdout, re.M)
    assert "fix: CONFIG SET appendonly yes" in result.stdout


async def test_doctor_fails_on_missing_acl_permissions(redis_server, r):
    r.execute_command("ACL", "SETUSER", "narrow", "on", ">secret", "~bridge:{main}:*",
                      "&bridge:{main}:*", "+@read", "+@write", "+ping", "+info", "+acl")
    url = f"redis://narrow:secret@127.0.0.1:{redis_server.port}/0"
    result = await bridge("doctor", "--redis", url)
    assert result.returncode == 1
    assert "secret" not in result.stdout  # the password is redacted
    [acl] = [line for line in result.stdout.splitlines() if "ACL:" in line]
    assert acl.startswith("FAIL") and "fcall|bridge_" in acl and "publish" in acl
    # each of bridge's functions by name: +fcall alone would allow every function
    [fix] = [line for line in result.stdout.splitlines() if "fix: ACL SETUSER narrow" in line]
    assert " +fcall|bridge_" in fix
    assert "Traceback" not in result.stdout + result.stderr


async def test_doctor_fails_on_unreachable_and_unparsable_urls():
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = await bridge("doctor", "--redis", url)
    assert result.returncode == 1
    assert re.search(r"^FAIL +Redis at .* cannot be reached", result.stdout, re.M)
    assert "fix: start Redis" in result.stdout and "Traceback" not in result.stderr
    result = await bridge("doctor", "--redis", "redis://host:notaport/0")
    assert result.returncode == 1
    assert re.search(r"^FAIL +bad value for --redis", result.stdout, re.M)
