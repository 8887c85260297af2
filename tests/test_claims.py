"""File claims (bridge.room.claims, its CLAIMS function), `bridge claims` and `bridge guard`,
against a real redis-server: exclusive claims race and exactly one wins, shared ones coexist,
globs overlap by the documented rule, claims expire (a SIGKILLed agent's after their TTL, not
before) and a clean leave releases them, limits refuse with what to do, forgeries block
nobody, rooms stay apart; the CLI, and the git pre-commit guard in a real repository."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from bridge.errors import ClaimConflict, ClaimRefused
from bridge.room.claim_records import MAX_PER_AGENT, covers, overlaps
from bridge.room.claims import ClaimBook, normalise
from bridge.room.keys import Keys
from bridge.room.signing import make_signer
from tests.conftest import RedisServer
from tests.test_cli_ops import assert_one_line_error, bridge, cli_env

pytestmark = pytest.mark.anyio

SECRET = "a-room-secret-of-enough-length"


@asynccontextmanager
async def books(server: RedisServer, count: int, room: str = "main",
                secret: str = "") -> AsyncIterator[list[ClaimBook]]:
    """``count`` claim books of one room, each on a client (and connections) of its own."""
    clients = [Redis.from_url(server.url) for _ in range(count)]
    try:
        yield [ClaimBook(client, Keys(room), make_signer(secret, room, 60))
               for client in clients]
    finally:
        for client in clients:
            await client.aclose()


async def redis_ms(book: ClaimBook) -> int:
    return await book.now_ms()


async def until_redis_time(book: ClaimBook, ms: int, deadline: float = 10) -> None:
    """Wait until Redis' clock has passed ``ms`` (polling it), within ``deadline`` seconds."""
    with anyio.fail_after(deadline):
        while await book.now_ms() <= ms:
            await anyio.sleep(0.02)


async def patterns(book: ClaimBook, agent: str | None = None) -> list[str]:
    _, live = await book.claims()
    return [f"{c.agent} {c.pattern}" for c in live if agent is None or c.agent == agent]


def test_overlap_rule_and_what_a_claim_covers():
    # plain paths: equal, or one under the other
    assert overlaps("src/api", "src/api/models.py") and overlaps("src/a.py", "src/a.py")
    assert not overlaps("src", "src2") and not overlaps("src/a.py", "src/b.py")
    # a glob: the literal parts before the first wildcard, one a prefix of the other
    assert overlaps("src/*.py", "src/a.py") and overlaps("src/*.py", "src/a.md")  # coarse
    assert overlaps("src/**", "src/web/x.js") and overlaps("*.md", "src/deep/file")
    assert overlaps("src/api/*", "src") and overlaps("s?c/x", "src/y")
    assert not overlaps("src/api/**", "src/web/x.js") and not overlaps("docs/*.md", "src/*.md")
    # what the guard checks: exact
    assert covers("src/api", "src/api/x.py") and not covers("src/api", "src/apix.py")
    assert covers("src/*.py", "src/a.py") and not covers("src/*.py", "src/a.md")
    assert covers("src/*", "src/a/b.py") and covers("docs/**", "docs/a/b.md")
    assert normalise("./src//api/") == "src/api"
    for bad, needle in (("/etc/passwd", "absolute"), ("src/../x", "'..'"), ("", "empty"),
                        ("a\\b", "backslash"), ("a\nb", "control"), (".", "root"),
                        ("x" * 513, "at most 512")):
        with pytest.raises(ClaimRefused, match=needle):
            normalise(bad)


async def claim_race(claimers: list[ClaimBook], names: list[str],
                     path: str) -> tuple[list[str], dict[str, str]]:
    """Every book claims the path exclusively at once (each on its own connections): who
    won, and who was told whom."""
    won: list[str] = []
    told: dict[str, str] = {}
    ready = anyio.Event()

    async def claim(book: ClaimBook, name: str) -> None:
        await ready.wait()
        try:
            await book.claim(name, [path], reason="mine")
        except ClaimConflict as e:
            told[name] = e.holder
            assert f"claim of {e.holder}'s" in str(e)
        else:
            won.append(name)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for book, name in zip(claimers, names, strict=True):
                tg.start_soon(claim, book, name)
            ready.set()
    return won, told


async def test_many_exclusive_claimers_of_one_path_exactly_one_wins_100_times(redis_server):
    names = [f"agent{i}" for i in range(10)]
    async with books(redis_server, len(names)) as claimers:
        for round_ in range(100):
            won, told = await claim_race(claimers, names, f"src/file{round_}.py")
            assert len(won) == 1, (won, told)
            assert sorted([*won, *told]) == names and set(told.values()) == set(won)


async def test_shared_claims_coexist_and_exclusive_ones_are_refused(redis_server):
    async with books(redis_server, 1) as [book]:
        assert await book.claim("alice", ["src/api"], exclusive=False, reason="reading") == 1
        assert await book.claim("bob", ["src/api/models.py"], exclusive=False) == 1
        with pytest.raises(ClaimConflict, match="a shared claim of alice's on 'src/api'.*"
                                                "'reading'. Claim it shared") as refused:
            await book.claim("carol", ["src/api/*.py"], reason="rewrite")
        assert refused.value.holder in ("alice", "bob")
        await book.claim("carol", ["src/web/**"], reason="the front end")
        with pytest.raises(ClaimConflict, match="overlaps an exclusive claim of carol's on "
                                                "'src/web/\\*\\*', held since .* 'the front end'"):
            await book.claim("dave", ["src/web/app.js"], exclusive=False)
        with pytest.raises(ClaimConflict, match="carol"):  # a glob overlapping hers
            await book.claim("dave", ["src/*"], exclusive=False)
        assert await book.claim("dave", ["docs/*.md", "src/cli.py"]) == 2  # no overlap
        # all or nothing: one conflicting pattern, none claimed
        with pytest.raises(ClaimConflict):
            await book.claim("erin", ["tests/x.py", "src/cli.py"])
        assert await patterns(book, "erin") == []
        # one's own claims never conflict; claiming again renews and keeps `since`
        [before] = [c for c in (await book.claims())[1] if c.agent == "carol"]
        assert await book.claim("carol", ["src/web/**", "src/web/app.js"]) == 2
        _, live = await book.claims()
        again = next(c for c in live if c.agent == "carol" and c.pattern == "src/web/**")
        assert again.since == before.since and again.expires >= before.expires
        assert await book.release("carol", ["src/web/**", "src/web/app.js"]) == 2
        assert await book.claim("dave", ["src/web/app.js"]) == 1


async def test_a_claim_expires_after_its_ttl_and_not_before(redis_server):
    async with books(redis_server, 1) as [book]:
        start = await redis_ms(book)
        await book.claim("alice", ["src/a.py"], ttl=1)
        _, [claim] = await book.claims()
        assert start + 1000 <= claim.expires <= await redis_ms(book) + 1000
        with pytest.raises(ClaimConflict):  # present before
            await book.claim("bob", ["src/a.py"])
        await until_redis_time(book, claim.expires)
        assert await patterns(book) == []  # ignored by readers once expired
        assert await book.claim("bob", ["src/a.py"]) == 1  # and pruned by the script
        assert await book.redis.hkeys(book.keys.claim_records) == [b"bob src/a.py"]
        assert await book.redis.smembers(book.keys.claims_of("alice")) == set()


async def test_limits_and_bad_values_are_refused_with_what_to_do(redis_server):
    async with books(redis_server, 1) as [book]:
        refusals = {
            "at most 200": book.claim("alice", ["a"], reason="r" * 201),
            "use 1 to 86400 seconds": book.claim("alice", ["a"], ttl=0.5),
            "bad agent name 'Bob!'": book.claim("Bob!", ["a"]),
            "nothing to claim": book.claim("alice", []),
            "absolute": book.claim("alice", ["/abs"]),
            f"at most {MAX_PER_AGENT}; claim directories": book.claim(
                "alice", [f"f{i}" for i in range(MAX_PER_AGENT + 1)]),
        }
        for needle, attempt in refusals.items():
            with pytest.raises(ClaimRefused) as refused:
                await attempt
            assert needle in str(refused.value), (needle, str(refused.value))
        assert await book.claim("alice", [f"f{i}" for i in range(MAX_PER_AGENT)]) == MAX_PER_AGENT
        with pytest.raises(ClaimRefused, match=f"you hold {MAX_PER_AGENT} claims.*release some"):
            await book.claim("alice", ["g"])
        # at the limit, claiming what one holds again renews it: no new claim
        assert await book.claim("alice", ["f1", "f2"]) == 2
        for agent in range(19):  # the room's limit: 2,000
            await book.claim(f"a{agent}", [f"a{agent}/{i}" for i in range(MAX_PER_AGENT)])
        with pytest.raises(ClaimRefused, match="the room holds 2000 claims, the most is 2000"):
            await book.claim("bob", ["b"])
        await book.release("alice", ["f0"])
        assert await book.claim("bob", ["b"]) == 1


async def test_a_forged_claim_does_not_block_and_is_shown_as_not_genuine(redis_server):
    keys = Keys("main")
    cli = ["redis-cli", "-p", str(redis_server.port)]
    subprocess.run([*cli, "ZADD", keys.claims, "9999999999999", "mallory src"], check=True,
                   capture_output=True)
    subprocess.run([*cli, "HSET", keys.claim_records, "mallory src",
                    '{"mode":"exclusive","reason":"mine \\u001b[31m","since":1}'], check=True,
                   capture_output=True)
    async with books(redis_server, 1, secret=SECRET) as [book]:
        assert await book.claim("bob", ["src/a.py"], reason="fix") == 1  # not blocked
        assert await book.blocking(["src/a.py"], "alice") == [
            ("src/a.py", next(c for c in (await book.claims())[1] if c.agent == "bob"))]
        _, live = await book.claims()
        assert {c.agent: c.problem for c in live} == {"mallory": "unsigned", "bob": ""}
        # a genuine claim altered by hand is not genuine either
        raw = json.loads(await book.redis.hget(keys.claim_records, "bob src/a.py"))
        raw["reason"] = "altered"
        await book.redis.hset(keys.claim_records, "bob src/a.py", json.dumps(raw))
        assert await book.claim("carol", ["src"]) == 1
    async with books(redis_server, 1) as [unsigned]:  # no secret: nothing to tell apart
        assert await unsigned.release("carol", ["src"]) == 1
        with pytest.raises(ClaimConflict, match="mallory"):
            await unsigned.claim("dave", ["src/x"])
    env = cli_env(BRIDGE_REDIS_URL=redis_server.url, BRIDGE_SECRET=SECRET)
    shown = await bridge("claims", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "[unsigned] mallory" in shown.stdout and "[forged] bob" in shown.stdout
    assert "\x1b" not in shown.stdout
    listed = json.loads((await bridge("claims", "--json", env=env)).stdout)
    assert {(c["agent"], c["verified"]) for c in listed["claims"]} == {
        ("mallory", False), ("bob", False)}


async def test_nothing_leaks_into_another_room(redis_server, r):
    async with books(redis_server, 1, room="alpha") as [alpha], \
            books(redis_server, 1, room="beta") as [beta]:
        await alpha.claim("alice", ["src"])
        assert await patterns(beta) == []
        assert await beta.claim("bob", ["src"]) == 1
        assert await beta.blocking(["src/a.py"], "carol") != []
        assert await patterns(alpha) == ["alice src"]
    for key in r.keys("*"):
        assert key.startswith((b"bridge:{alpha}:", b"bridge:{beta}:")), key


@pytest.mark.slow
async def test_an_agents_claims_are_renewed_while_present_and_end_with_it(redis_server, agents,
                                                                          r):
    # claims made through the room API in the agents' names before they join (as claims an
    # agent held before a restart): their `bridge serve` finds them at its first heartbeat
    # and renews them with each (test_board_tools makes them with the agents' own tool)
    async with books(redis_server, 1) as [book]:
        await book.claim("alice", ["src/a"], ttl=8, reason="alice's")
        await book.claim("bob", ["src/b"], ttl=8, reason="bob's")
        alice = await agents.start("alice", "--ttl", "1")
        bob = await agents.start("bob", "--ttl", "1")
        _, first = await book.claims()
        await until_redis_time(book, max(c.expires for c in first) + 500)
        assert await patterns(book) == ["alice src/a", "bob src/b"]  # renewed past the TTL
        # SIGKILL: bob's claim lives until its expiry, and not longer
        bob.process.kill()
        await bob.wait_exit()
        killed = await redis_ms(book)
        _, live = await book.claims()
        expires = next(c.expires for c in live if c.agent == "bob")
        assert expires - killed > 8000 - 1000  # renewed within the last heartbeat or so
        while await redis_ms(book) < expires - 100:
            assert "bob src/b" in await patterns(book)  # not before
            await anyio.sleep(0.05)
        await until_redis_time(book, expires)
        assert await patterns(book) == ["alice src/a"]
        # a clean leave releases at once
        await alice.close_stdin()
        assert await alice.wait_exit() == 0
        assert await patterns(book) == []
        assert not r.exists(Keys("main").claims_of("alice"))


def git(repo: Path, *args: str, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          env=env, check=check, timeout=60)


async def test_bridge_claims_end_to_end(redis_server):
    env = cli_env(BRIDGE_REDIS_URL=redis_server.url, BRIDGE_ROOM="main")
    empty = await bridge("claims", env=env)
    assert empty.returncode == 0 and "no file claims in room 'main'" in empty.stdout
    async with books(redis_server, 1) as [book]:
        await book.claim("alice", ["src/api", "docs/*.md"], reason="the API\nrewrite")
        await book.claim("bob", ["tests"], exclusive=False)
    shown = await bridge("claims", env=env)
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["AGENT", "PATH", "MODE", "SINCE", "EXPIRES", "REASON"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["alice", "docs/*.md", "exclusive"], ["alice", "src/api", "exclusive"],
        ["bob", "tests", "shared"]]
    assert "the API ⏎ rewrite" in shown.stdout
    bobs = json.loads((await bridge("claims", "--agent", "bob", "--json", env=env)).stdout)
    assert [(c["agent"], c["pattern"], c["mode"]) for c in bobs["claims"]] == [
        ("bob", "tests", "shared")]
    assert "verified" not in bobs["claims"][0]
    assert_one_line_error(await bridge("claims", "--agent", "Bad!", env=env), "bad agent name")


async def test_bridge_guard_in_a_real_git_repository(redis_server, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.name", "Bob")
    git(repo, "config", "user.email", "bob@example.com")
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 0\n")  # somebody else's hook
    foreign = await bridge("guard", "install", "--repo", str(repo))
    assert_one_line_error(foreign, "is not bridge's", "--force")
    assert hook.read_text() == "#!/bin/sh\nexit 0\n"
    installed = await bridge("guard", "install", "--repo", str(repo), "--force")
    assert installed.returncode == 0 and "installed" in installed.stdout, installed.stderr
    text = hook.read_text()
    bridge_path = text.split("| ")[-1].split()[0].strip("'")
    assert os.path.isabs(bridge_path) and os.access(bridge_path, os.X_OK), text
    assert (await bridge("guard", "install", "--repo", str(repo))).returncode == 0  # ours

    # git's environment: no bridge on PATH, the room and Redis from the environment
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BRIDGE_NAME": "bob",
           "BRIDGE_ROOM": "main", "BRIDGE_REDIS_URL": redis_server.url}
    (repo / "src" / "api").mkdir(parents=True)
    (repo / "src" / "api" / "models.py").write_text("x = 1\n")
    (repo / "README").write_text("hi\n")
    git(repo, "add", "README")
    assert git(repo, "commit", "-q", "-m", "readme", env=env, check=False).returncode == 0
    async with books(redis_server, 1) as [book]:
        await book.claim("alice", ["src/api"], reason="rewriting the API")
        await book.claim("carol", ["README"], exclusive=False)  # shared: blocks no commit
        (repo / "README").write_text("hello\n")
        git(repo, "add", "src", "README")
        refused = await anyio.to_thread.run_sync(
            lambda: git(repo, "commit", "-q", "-m", "models", env=env, check=False))
        assert refused.returncode == 1, refused.stderr
        assert ("src/api/models.py is claimed exclusively by alice (src/api) since"
                in refused.stderr)
        assert "'rewriting the API'" in refused.stderr and "Ask alice to release" in \
            refused.stderr and "carol" not in refused.stderr
        # alice herself may commit her own claim's files
        own = await bridge("guard", "check", "--as", "alice", "src/api/models.py",
                           env=cli_env(BRIDGE_REDIS_URL=redis_server.url))
        assert own.returncode == 0 and own.stderr == ""
        await book.release("alice", ["src/api"])
        allowed = await anyio.to_thread.run_sync(
            lambda: git(repo, "commit", "-q", "-m", "models", env=env, check=False))
        assert allowed.returncode == 0, allowed.stderr
        await book.claim("alice", ["src/api"], reason="again")
    redis_server.stop()
    (repo / "src" / "api" / "models.py").write_text("x = 2\n")
    git(repo, "add", "src")
    offline = await anyio.to_thread.run_sync(
        lambda: git(repo, "commit", "-q", "-m", "offline", env=env, check=False))
    assert offline.returncode == 0, offline.stderr
    [line] = [line for line in offline.stderr.splitlines() if line.startswith("bridge")]
    assert line.startswith("bridge guard: cannot reach Redis to check file claims")
    assert line.endswith("the commit goes through unchecked")
