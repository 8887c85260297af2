"""Least-privilege Redis users (`bridge acl`): real agents work under them, and they are
refused everything outside their room; `bridge doctor` tells a broad user from a narrow one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import anyio
import pytest
import redis
from redis.exceptions import NoPermissionError, ResponseError

from bridge import scripts
from bridge.acl import COMMANDS
from bridge.doctor import Doctor
from bridge.keys import Keys
from tests.conftest import RedisServer, free_port
from tests.test_cli_ops import (  # noqa: F401 - cli is a fixture
    BRIDGE,
    assert_one_line_error,
    bridge,
    cli,
    cli_env,
)

pytestmark = pytest.mark.anyio

OTHER = Keys("other")


def create_user(port: int, agent: str, *extra: str, room: str = "main") -> str:
    """`bridge acl ... | redis-cli`, as the README says; returns the agent's URL it prints."""
    made = subprocess.run([BRIDGE, "acl", "--room", room, "--agent", agent, "--redis",
                           f"redis://127.0.0.1:{port}/0", *extra],
                          env=cli_env(), capture_output=True, text=True, timeout=30, check=True)
    loaded = subprocess.run(["redis-cli", "-p", str(port)], input=made.stdout,
                            capture_output=True, text=True, timeout=30, check=True)
    assert loaded.stdout.strip() == "OK", loaded.stdout + loaded.stderr
    [url] = re.findall(r"BRIDGE_REDIS_URL='([^']+)'", made.stderr)
    return url


async def read_until(agent, needle: str, timeout: float = 30) -> str:
    """Pull mode: read_messages until the needle shows (events come through it too)."""
    seen = ""
    with anyio.fail_after(timeout):
        while needle not in seen:
            seen += await agent.tool("read_messages", wait_seconds=10, timeout=20)
    return seen


def denials(r: redis.Redis) -> list[dict[str, object]]:
    # redis-py's CLIENT SETINFO on connect is refused (and ignored) from Redis 7.2 on
    return [entry for entry in r.acl_log() if entry.get("object") != "client|setinfo"]


async def test_agents_under_acl_users_do_everything_bridge_does(agents, redis_server, r,
                                                               cli):  # noqa: F811
    urls = {name: create_user(redis_server.port, name)
            for name in ("alice", "bob", "carol", "boss")}
    assert "bridge-main-alice:" in urls["alice"]
    r.acl_log_reset()

    alice = await agents.start("alice", redis_url=urls["alice"])
    bob = await agents.start("bob", redis_url=urls["bob"])
    carol = await agents.start("carol", "--delivery", "pull", redis_url=urls["carol"])
    listing = await alice.tool("list_participants")
    assert all(name in listing for name in ("alice", "bob", "carol")), listing

    await alice.tool("send_message", to="bob", text="hello bob")
    [push] = await bob.wait_messages(1)
    assert push["content"] == "hello bob" and push["meta"]["from"] == "alice"
    await bob.tool("set_status", text="on the parser")
    await alice.wait_for(lambda: any(n["meta"]["kind"] == "status" for n in alice.channel(None)))
    await alice.tool("send_message", to="*", text="to all")
    await read_until(carol, "to all")

    # leave, a message while away, come back: it is delivered from the cursor
    await bob.close_stdin()
    assert await bob.wait_exit(20) == 0
    await alice.wait_for(lambda: any(n["meta"]["kind"] == "left" for n in alice.channel(None)),
                         timeout=20)
    assert "queued" in (await alice.tool("send_message", to="bob", text="while away")).lower()
    bob = await agents.start("bob", redis_url=urls["bob"])
    [again] = await bob.wait_messages(1, timeout=20)
    assert again["content"] == "while away"

    # the operator commands a room's people use, under a user of their own
    env = cli_env(BRIDGE_REDIS_URL=urls["boss"])
    tail = await cli("tail", "--since", "1h", env=cli_env(BRIDGE_REDIS_URL=urls["boss"],
                                                          BRIDGE_LOG_LEVEL="INFO"))
    await tail.wait_for(lambda lines: any("hello bob" in line for line in lines))
    who = await bridge("who", env=env)
    assert who.returncode == 0 and all(n in who.stdout for n in ("alice", "bob", "carol"))
    history = await bridge("history", "--from", "alice", env=env)
    assert history.returncode == 0 and "hello bob" in history.stdout, history.stderr
    sent = await bridge("send", "--as", "boss", "alice", "from the boss", env=env)
    assert sent.returncode == 0, sent.stderr
    await alice.wait_for(lambda: any(m["content"] == "from the boss" for m in alice.channel()))
    await tail.wait_for(lambda lines: any("from the boss" in line for line in lines))
    assert await tail.interrupt() in (0, 130)

    # nothing any of them did was refused, not even inside the Lua scripts
    assert denials(r) == []
    # and every command the doctor knows bridge runs is allowed on the room's names
    for command in Doctor.commands(Keys("main"), "alice"):
        assert r.execute_command("ACL", "DRYRUN", "bridge-main-alice", *command) == b"OK", command


def _monitor(c: redis.Redis) -> None:
    with c.monitor():
        pass


def _subscribe(c: redis.Redis, *channels: str, pattern: bool = False) -> None:
    pubsub = c.pubsub()
    try:
        (pubsub.psubscribe if pattern else pubsub.subscribe)(*channels)
        pubsub.get_message(timeout=5)  # the refusal is the reply to (P)SUBSCRIBE
    finally:
        pubsub.close()


async def test_acl_user_is_refused_outside_its_room(redis_server, r):
    url = create_user(redis_server.port, "alice")
    r.xadd(OTHER.log, {"from": "bob", "text": "secret of room other"})
    r.set("outside", "x")
    r.acl_log_reset()
    c = redis.Redis.from_url(url, socket_timeout=10)
    sha = c.script_load("return redis.call('GET', ARGV[1])")  # any Lua runs with her rights
    attacks = {
        "read another room's log": lambda: c.xrange(OTHER.log),
        "write another room's cursor": lambda: c.set(OTHER.cursor("bob"), "0-0 0"),
        "delete another room's log": lambda: c.delete(OTHER.log),
        "a key outside bridge": lambda: c.get("outside"),
        "FLUSHALL": c.flushall, "FLUSHDB": c.flushdb,
        "CONFIG GET": lambda: c.config_get("*"),
        "CONFIG SET": lambda: c.config_set("appendonly", "no"),
        "KEYS": lambda: c.keys("*"), "SCAN": lambda: c.scan(0), "INFO": c.info,
        "MONITOR": lambda: _monitor(c),
        "PUBLISH to another room": lambda: c.publish(OTHER.events, "{}"),
        "SUBSCRIBE to another room": lambda: _subscribe(c, OTHER.inbox("bob"), OTHER.broadcast),
        "PSUBSCRIBE bridge:*": lambda: _subscribe(c, "bridge:*", pattern=True),
        "EVAL": lambda: c.eval("return 1", 0),
        "a script declaring another room's key": lambda: c.evalsha(sha, 1, OTHER.seq),
        "ACL SETUSER (escalate herself)": lambda: c.acl_setuser("bridge-main-alice",
                                                                commands=["+@all"]),
        "CLIENT LIST": c.client_list,
        "CLIENT KILL": lambda: c.client_kill_filter(_type="normal"),
    }
    for what, attack in attacks.items():
        with pytest.raises(NoPermissionError):
            attack()
            pytest.fail(f"{what} was allowed")
    # a script reaching for a key it did not declare is checked all the same
    with pytest.raises(ResponseError, match="can't access"):
        c.evalsha(sha, 0, "outside")
    assert len(r.acl_log(count=100)) >= len(attacks)  # refused by the ACL, not by chance

    assert r.xlen(OTHER.log) == 1 and r.get("outside") == b"x"
    assert r.config_get("appendonly") == {"appendonly": "yes"}
    # inside her room she may write any key: the rule is per room (signing covers forgery)
    assert c.xadd(Keys("main").log, {"from": "bob", "text": "forged"})


async def test_acl_file_line_loads_into_redis(tmp_path: Path):
    made = subprocess.run([BRIDGE, "acl", "--agent", "alice", "--format", "file",
                           "--password", "Pa55-word_x"], env=cli_env(), capture_output=True,
                          text=True, timeout=30, check=True)
    assert "Pa55-word_x" not in made.stdout  # the file holds the password's hash
    acl = tmp_path / "users.acl"
    acl.write_text("user default on nopass ~* &* +@all\n" + made.stdout)
    server = RedisServer(free_port(), tmp_path)
    server.start("--aclfile", str(acl))
    try:
        c = redis.Redis(port=server.port, username="bridge-main-alice", password="Pa55-word_x")
        assert c.ping() and c.xlen(Keys("main").log) == 0
        with pytest.raises(NoPermissionError):
            c.xlen(OTHER.log)
        # the same rights as the ACL SETUSER form
        create_user(server.port, "bob", "--password", "Pa55-word_y")
        admin = server.client()
        file_user, command_user = (admin.acl_getuser(f"bridge-main-{n}") for n in ("alice", "bob"))
        for field in ("commands", "keys", "channels", "flags"):
            assert file_user[field] == command_user[field], field
    finally:
        server.stop()


def test_the_rule_allows_every_command_the_scripts_call():
    # a command added to a Lua script must be added to the rule, or agents under it break
    source = " ".join(value for value in vars(scripts).values() if isinstance(value, str))
    called = {name.lower() for name in re.findall(r"redis\.call\('([A-Za-z]+)'", source)}
    assert called and called <= set(COMMANDS), called - set(COMMANDS)
    used = {command[0].lower() + ("|load" if command[0] == "SCRIPT" else "")
            for command in Doctor.commands(Keys("main"), "alice")}
    assert used <= set(COMMANDS), used - set(COMMANDS)


async def test_acl_url_carries_the_agents_credentials_only():
    result = await bridge("acl", "--agent", "alice", "--password", "Agent-pw-1",
                          "--redis", "rediss://admin:Admin-pw-9@hostA:6380/2?password=Admin-pw-9")
    assert result.returncode == 0, result.stderr
    [url] = re.findall(r"BRIDGE_REDIS_URL='([^']+)'", result.stderr)
    assert url == "rediss://bridge-main-alice:Agent-pw-1@hostA:6380/2"
    assert "Admin-pw-9" not in result.stdout + result.stderr


async def test_acl_refuses_bad_input_with_one_line():
    for args, needle in [(["--agent", "Alice"], "--agent"),
                         (["--agent", "alice", "--room", "no room"], "--room / BRIDGE_ROOM"),
                         (["--agent", "alice", "--password", "has space"], "--password")]:
        result = await bridge("acl", *args)
        assert result.returncode == 1 and result.stdout == "", result
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("bridge: bad value for") and needle in line, line


async def test_doctor_warns_about_a_broad_user_and_not_a_narrow_one(redis_server, r):
    # the default user may do anything: a warning (not a failure), with the way out
    broad = await bridge("doctor", "--redis", redis_server.url)
    assert broad.returncode == 0, broad.stdout
    [line] = [x for x in broad.stdout.splitlines() if x.startswith("warn") and "ACL rights" in x]
    for right in ("FLUSHALL", "CONFIG", "KEYS", "MONITOR", "ACL SETUSER", "other rooms' keys",
                  "other rooms' channels"):
        assert right in line, line
    assert "fix: give each agent a least-privilege user: bridge acl --room main" in broad.stdout

    # a `bridge acl` user: may not run ACL DRYRUN, so the harmless probes say it is narrow
    narrow = await bridge("doctor", "--redis", create_user(redis_server.port, "alice"))
    assert narrow.returncode == 0, narrow.stdout
    assert re.search(r"^ok +ACL rights: user bridge-main-alice has none beyond bridge's: "
                     r"refused CONFIG, MONITOR, other rooms' keys .*, other rooms' channels .*; "
                     r"not checked without ACL DRYRUN: FLUSHALL", narrow.stdout, re.M)
    assert not re.search(r"^(warn|FAIL)", narrow.stdout, re.M), narrow.stdout

    # the same rule plus ACL DRYRUN: every check runs, and finds nothing to say
    checked = create_user(redis_server.port, "bob")
    r.execute_command("ACL", "SETUSER", "bridge-main-bob", "+acl|dryrun", "+acl|whoami")
    full = await bridge("doctor", "--redis", checked)
    assert re.search(r"^ok +ACL: user bridge-main-bob may run every command bridge uses",
                     full.stdout, re.M), full.stdout
    assert re.search(r"^ok +ACL rights: user bridge-main-bob has none beyond bridge's: refused "
                     r"FLUSHALL, FLUSHDB, CONFIG, KEYS, MONITOR, ACL SETUSER, other rooms' keys",
                     full.stdout, re.M), full.stdout

    # a user that can reach other rooms, without ACL DRYRUN: the probes find it out
    r.execute_command("ACL", "SETUSER", "app", "on", ">app-pw", "~*", "&*", "+@all",
                      "-@dangerous")
    app = await bridge("doctor", "--redis", f"redis://app:app-pw@127.0.0.1:{redis_server.port}/0")
    assert re.search(r"^warn +ACL rights: user app can do more than bridge needs: other rooms' "
                     r"keys .*, other rooms' channels", app.stdout, re.M), app.stdout
    assert "app-pw" not in app.stdout


async def test_who_under_an_acl_user_empty_room_and_all_rooms(redis_server, r):
    env = cli_env(BRIDGE_REDIS_URL=create_user(redis_server.port, "ops"))
    # the other rooms' hint needs SCAN, which the user may not run: the plain line instead
    empty = await bridge("who", env=env)
    assert_one_line_error(empty, "no agents in room 'main'")
    assert "scan" not in empty.stderr.lower() and "Redis failed" not in empty.stderr
    for args in (["--all-rooms"], ["--all-rooms", "--json"]):
        every = await bridge("who", *args, env=env)
        assert_one_line_error(every, "this Redis user may only see its own room ('main')",
                              "bridge who --room main")
        assert every.stdout == ""
    assert r.acl_log(count=10)  # refused by the ACL indeed


async def test_tail_stops_with_one_line_when_its_user_lacks_a_command(redis_server, r,
                                                                      cli):  # noqa: F811
    url = create_user(redis_server.port, "ops")
    env = cli_env(BRIDGE_REDIS_URL=url)
    fix = "run `bridge acl --room main --agent ops` to get a rule with every command"
    r.execute_command("ACL", "SETUSER", "bridge-main-ops", "-xread")
    refused = await bridge("tail", env=env)  # before: retried XREAD forever (a timeout here)
    assert_one_line_error(refused, "Redis refused XREAD", "'xread'", fix)

    r.execute_command("ACL", "SETUSER", "bridge-main-ops", "+xread", "-subscribe")
    no_events = await bridge("tail", env=env)
    assert_one_line_error(no_events, "Redis refused SUBSCRIBE", "'subscribe'", fix)

    # taken away while tail runs (an admin narrows the rule): it stops, it does not retry
    r.execute_command("ACL", "SETUSER", "bridge-main-ops", "+subscribe")
    tail = await cli("tail", env=cli_env(BRIDGE_REDIS_URL=url, BRIDGE_LOG_LEVEL="INFO"))
    r.execute_command("ACL", "SETUSER", "bridge-main-ops", "-xread")
    with anyio.fail_after(30):
        assert await tail.process.wait() == 1
    last = tail.stderr().strip().splitlines()[-1]
    assert last.startswith("bridge: Redis refused XREAD") and fix in last, tail.stderr()
    assert "tail_connection_lost" not in tail.stderr() and "Traceback" not in tail.stderr()
