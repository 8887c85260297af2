"""Issue 6 (security): signed envelopes, limits, and passwords kept out of every output.

Every attack here is made the way an attacker would: with redis-py writing straight into the
room's Redis keys, or with the real `bridge` command, against real `bridge serve` processes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from bridge.errors import SettingsError
from bridge.room.envelope import Envelope
from bridge.room.signing import DROP_LOG_MAX, Signer
from bridge.settings import Settings
from tests.conftest import REDIS_SERVER, free_port
from tests.support.mcp_client import ToolError, serve_until_it_exits
from tests.test_cli_ops import cli  # noqa: F401 - a fixture

pytestmark = pytest.mark.anyio

SECRET = "correct-horse-battery-staple-42"
SIGNED = {"BRIDGE_SECRET": SECRET}
LOG = "bridge:{main}:log"
BRIDGE = str(Path(sys.executable).with_name("bridge"))


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BRIDGE_") and k not in ("NO_COLOR", "COLUMNS")}
    env.update(extra)
    return env


async def bridge(*args: str, env: dict[str, str],
                 timeout: float = 30) -> subprocess.CompletedProcess[str]:
    with anyio.fail_after(timeout):
        result = await anyio.run_process([BRIDGE, *args], env=env, check=False)
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(), result.stderr.decode())


def drops(agent: Any, reason: str | None = None) -> list[dict[str, Any]]:
    return [e for e in agent.log_events() if e["event"] == "envelope_dropped"
            and (reason is None or e["reason"] == reason)]


async def wait_drops(agent: Any, count: int, timeout: float = 20) -> None:
    """stderr is a file: poll it, with a deadline."""
    with anyio.fail_after(timeout):
        while len(drops(agent)) < count:
            await anyio.sleep(0.02)


def fields_of(envelope: Envelope, seq: int = 999) -> dict[str, str]:
    fields = envelope.log_fields()
    fields["seq"] = str(seq)
    if not fields["sig"]:
        del fields["sig"]
    return fields


def signed(sender: str, to: str, text: str, ts: int, room: str = "main",
           secret: str = SECRET) -> dict[str, str]:
    """Stream fields of a message signed with ``secret`` (a test that knows the secret stands
    in for a real sender whose message an attacker captured)."""
    signer = Signer(secret.encode(), room, 300_000)
    envelope = signer.sign(Envelope(id="", sender=sender, to=(to,), text=text, ts=ts))
    return fields_of(envelope)


def inject(r: redis.Redis, fields: Any, *recipients: str) -> str:
    """XADD an entry straight into the log and wake its recipients, as an attacker with
    access to Redis can."""
    entry_id = r.xadd(LOG, fields).decode()  # type: ignore[union-attr]
    for name in recipients:
        r.publish(f"bridge:{{main}}:to:{name}", json.dumps({"id": entry_id}))
    return entry_id


def now_ms() -> int:
    return int(time.time() * 1000)


def redis_ms(r: redis.Redis) -> int:
    seconds, micros = r.time()
    return int(seconds) * 1000 + int(micros) // 1000


# ---------------------------------------------------------------------------- signing
async def test_signed_room_delivers_and_logs_a_signature(agents, r):
    alice = await agents.start("alice", env=dict(SIGNED))
    bob = await agents.start("bob", env=dict(SIGNED))
    await alice.tool("send_message", to="bob", text="signed hello")
    [push] = await bob.wait_messages(1)
    assert push["content"] == "signed hello"
    [(_, fields)] = r.xrange(LOG)
    assert re.fullmatch(rb"v1:[0-9a-f]{16}:[0-9a-f]{64}", fields[b"sig"])
    joined = [e for e in bob.log_events() if e["event"] == "joined"]
    assert joined and joined[0]["signed"] is True
    assert not [e for e in bob.log_events() if e["event"] == "sender_names_unverified"]
    assert SECRET not in alice.stderr() + bob.stderr()  # DEBUG logs, and not once


async def test_without_a_secret_start_up_warns_that_names_are_unverified(agents):
    alice = await agents.start("alice")
    await alice.tool("list_participants")
    warnings = [e for e in alice.log_events() if e["event"] == "sender_names_unverified"]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert "BRIDGE_SECRET" in warnings[0]["hint"]


async def test_unsigned_forged_altered_redirected_and_replayed_entries_are_dropped(agents, r):
    alice = await agents.start("alice", env=dict(SIGNED))
    bob = await agents.start("bob", env=dict(SIGNED))  # push
    carol = await agents.start("carol", "--delivery", "pull", env=dict(SIGNED))
    await alice.tool("send_message", to="carol", text="for carol only")
    await alice.tool("send_message", to="bob", text="real one")
    [real] = await bob.wait_messages(1)
    entries = r.xrange(LOG)
    for_carol, for_bob = entries[0][1], entries[1][1]

    attacks = {
        "unsigned": {b"from": b"alice", b"to": b"bob,carol", b"text": b"unsigned order",
                     b"reply_to": b"", b"kind": b"message", b"ts": str(now_ms()).encode()},
        "other secret": signed("alice", "bob", "wrong key", now_ms(),
                               secret="not-the-room-secret-000"),
        "altered text": {**for_bob, b"text": b"delete the repo"},
        "redirected": {**for_carol, b"to": b"bob"},
        "garbage sig": {**for_bob, b"sig": b"v1:" + b"0" * 16 + b":" + b"f" * 64},
        "exact copy": for_bob,
        "old copy": signed("alice", "bob", "captured 10 minutes ago", now_ms() - 600_000),
        "future": signed("alice", "bob", "dated an hour ahead", now_ms() + 3_600_000),
        "other room": signed("alice", "bob", "from room red", now_ms(), room="red"),
    }
    inject(r, attacks.pop("unsigned"), "bob", "carol")
    for fields in attacks.values():
        inject(r, fields, "bob")
    await wait_drops(bob, len(attacks) + 1)
    reasons = sorted(e["reason"] for e in drops(bob))
    assert reasons == sorted(["unsigned", "bad_signature", "bad_signature", "bad_signature",
                              "bad_signature", "duplicate", "replay", "replay",
                              "bad_signature"])
    assert all(e["hint"] for e in drops(bob))

    await alice.tool("send_message", to="bob", text="after the attacks")
    await bob.wait_messages(2)
    assert [m["content"] for m in bob.channel()] == ["real one", "after the attacks"]
    assert bob.channel()[0]["meta"]["message_id"] == real["meta"]["message_id"]
    # pull mode: read_messages returns only the real message (the unsigned one named carol)
    await wait_drops(carol, 1)
    assert [e["reason"] for e in drops(carol)] == ["unsigned"]
    text = await carol.tool("read_messages", wait_seconds=5)
    assert "for carol only" in text and "unsigned order" not in text
    assert "No messages waiting" in await carol.tool("read_messages")


# What a signed entry says, and one change to one field of it at a time. `kind` is only ever
# "message" in the log, so its change is the other way round: signed as another kind, logged
# as a message (what a signature without the kind would let through if kinds are added).
SIGNED_FIELDS = {"sender": "alice", "to": ("bob", "carol"), "text": "merge the branch",
                 "reply_to": "1700000000000-7", "kind": "message"}
TAMPERED = {  # field -> (what is signed, what the log then says)
    "from": ({}, {"from": "carol"}),
    "to": ({}, {"to": "bob"}),  # signed for bob and carol, logged for bob alone
    "text": ({}, {"text": "delete the branch"}),
    "reply_to": ({}, {"reply_to": "1700000000000-8"}),
    "kind": ({"kind": "notice"}, {"kind": "message"}),
    "ts": ({}, {"ts": "+1"}),  # one millisecond later: well inside the replay window
}


def tampered_pair(field: str, ts: int) -> tuple[dict[str, str], dict[str, str]]:
    """The stream fields of a message signed with the room secret, and the same entry with
    one field changed after signing."""
    signed_as, logged_as = TAMPERED[field]
    values = {**SIGNED_FIELDS, "text": f"{field}: merge the branch", **signed_as}
    signer = Signer(SECRET.encode(), "main", 300_000)
    envelope = signer.sign(Envelope(id="", ts=ts, **values))  # type: ignore[arg-type]
    good = fields_of(replace(envelope, kind="message"))
    bad = dict(good)
    for key, value in logged_as.items():
        bad[key] = str(ts + 1) if value == "+1" else value
    if field == "kind":
        good = {}  # no good copy: a real entry is never signed as another kind
    return good, bad


async def test_every_signed_field_is_covered_by_the_signature(agents, r):
    """Issue 11 item 17: a signed entry with any one of from, to, text, reply_to, kind or ts
    changed after signing is dropped as bad_signature, while the same entry unchanged is
    delivered. Leave one field out of signing.canonical() and its case fails here."""
    bob = await agents.start("bob", env=dict(SIGNED))
    ts = now_ms()
    tampered_ids: dict[str, str] = {}
    for field in TAMPERED:
        good, bad = tampered_pair(field, ts)
        tampered_ids[inject(r, bad, "bob")] = field  # the tampered one first: it must not
        if good:                                     # be remembered as seen
            inject(r, good, "bob")
    originals = [f"{field}: merge the branch" for field in TAMPERED if field != "kind"]
    await bob.wait_messages(len(originals))
    await wait_drops(bob, len(TAMPERED))
    reasons = {tampered_ids.get(e["id"], e["id"]): e["reason"] for e in drops(bob)}
    assert reasons == dict.fromkeys(TAMPERED, "bad_signature")
    assert [m["content"] for m in bob.channel()] == originals
    assert all(m["meta"]["from"] == "alice" for m in bob.channel())


def test_the_signer_checks_every_field_it_covers():
    """The same coverage at the Signer: each field of an envelope, changed after signing,
    fails the check (the log id and seq are Redis' and are not signed)."""
    signer = Signer(SECRET.encode(), "main", 300_000)
    envelope = signer.sign(Envelope(id="1700000000000-0", ts=1_700_000_000_000,
                                    **SIGNED_FIELDS))  # type: ignore[arg-type]
    assert signer.authentic(envelope) is None
    changes = {"sender": "carol", "to": ("bob",), "text": "delete the branch",
               "reply_to": "1700000000000-8", "kind": "notice", "ts": 1_700_000_000_001}
    for key, value in changes.items():
        assert signer.authentic(replace(envelope, **{key: value})) == "bad_signature", key
    assert signer.authentic(replace(envelope, to=("carol", "bob"))) is None  # order-free
    assert Signer(SECRET.encode(), "red", 300_000).authentic(envelope) == "bad_signature"
    assert signer.authentic(replace(envelope, id="1700000000001-3", seq=99)) is None


async def test_old_entries_caught_up_from_the_log_pass_the_replay_check(agents, r):
    """The window compares the signed time with the entry's own log id, so an entry written
    long ago is still good at catch-up, while the same bytes added again now are not."""
    old_ms = 1_000_000_000_000  # 2001
    fields = signed("alice", "bob", "written in 2001", old_ms)
    bob = await agents.start("bob", env=dict(SIGNED))  # bob was here before it
    await bob.close_stdin()
    assert await bob.wait_exit() == 0
    r.xadd(LOG, fields, id=f"{old_ms}-0")  # type: ignore[arg-type]
    r.xadd(LOG, fields)  # type: ignore[arg-type]  # the replayed copy
    bob = await agents.start("bob", env=dict(SIGNED))
    [push] = await bob.wait_messages(1)
    assert push["content"] == "written in 2001"
    assert push["meta"]["message_id"] == f"{old_ms}-0"
    await wait_drops(bob, 1)
    assert [e["reason"] for e in drops(bob)] == ["replay"]


async def test_a_copy_added_while_the_receiver_was_away_is_a_duplicate(agents, r):
    alice = await agents.start("alice", env=dict(SIGNED))
    bob = await agents.start("bob", env=dict(SIGNED))
    await alice.tool("send_message", to="bob", text="pay 10 euros")
    await bob.wait_messages(1)
    await bob.close_stdin()
    assert await bob.wait_exit() == 0
    [(_, fields)] = r.xrange(LOG)
    r.xadd(LOG, fields)  # type: ignore[arg-type]  # within the window: only the copy check
    bob_again = await agents.start("bob", env=dict(SIGNED))
    await wait_drops(bob_again, 1)
    assert [e["reason"] for e in drops(bob_again)] == ["duplicate"]
    await alice.tool("send_message", to="bob", text="marker")
    await bob_again.wait_messages(1)
    assert [m["content"] for m in bob_again.channel()] == ["marker"]


async def test_agents_with_different_secrets_do_not_accept_each_other(agents):
    alice = await agents.start("alice", env={"BRIDGE_SECRET": "another-secret-entirely"})
    bob = await agents.start("bob", env=dict(SIGNED))
    await alice.tool("send_message", to="bob", text="wrong room key")
    await wait_drops(bob, 1)
    assert drops(bob)[0]["reason"] == "bad_signature" and drops(bob)[0]["sender"] == "alice"
    assert bob.channel() == []


async def test_operator_send_signs_and_history_marks_forgeries(agents, redis_server, r,
                                                               tmp_path):
    secret_file = tmp_path / "room.secret"
    secret_file.write_text(SECRET + "\n")  # a trailing newline, as `echo` or an editor leaves
    bob = await agents.start("bob", "--secret-file", str(secret_file))
    env = cli_env(BRIDGE_REDIS_URL=redis_server.url, BRIDGE_SECRET=SECRET)
    sent = await bridge("send", "--as", "boss", "bob", "signed by the operator", env=env)
    assert sent.returncode == 0, sent.stderr
    [push] = await bob.wait_messages(1)
    assert push["content"] == "signed by the operator" and push["meta"]["from"] == "boss"

    r.xadd(LOG, {"from": "boss", "to": "bob", "text": "forged order", "reply_to": "",
                 "kind": "message", "ts": str(now_ms())})
    plain = await bridge("history", env=env)
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert len(lines) == 2 and "[" not in lines[0] and "signed by the operator" in lines[0]
    assert lines[1].startswith("[unsigned] ") and "forged order" in lines[1]
    as_json = await bridge("history", "--json", env=env)
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(x["verified"], x.get("problem")) for x in records] == [(True, None),
                                                                    (False, "unsigned")]
    # with another secret, the operator's message is refused by bob
    wrong = cli_env(BRIDGE_REDIS_URL=redis_server.url, BRIDGE_SECRET="x" * 20)
    assert (await bridge("send", "--as", "boss", "bob", "wrong key", env=wrong)).returncode == 0
    await wait_drops(bob, 2)
    assert sorted(e["reason"] for e in drops(bob)) == ["bad_signature", "unsigned"]
    assert SECRET not in bob.stderr()


def test_secret_settings_are_checked_and_never_echoed(tmp_path):
    good = tmp_path / "good"
    good.write_text(SECRET + "\r\n")
    assert Settings.from_env({"BRIDGE_SECRET_FILE": str(good)}).secret == SECRET
    assert Settings.from_env({"BRIDGE_SECRET": SECRET}).secret == SECRET
    assert Settings.from_env({"BRIDGE_SECRET": SECRET}, secret_file=str(good)).secret == SECRET
    assert SECRET not in repr(Settings.from_env({"BRIDGE_SECRET": SECRET}))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    cases = [
        ({"BRIDGE_SECRET_FILE": str(empty)}, "is empty"),
        ({"BRIDGE_SECRET_FILE": str(tmp_path / "missing")}, "cannot read the secret file"),
        ({"BRIDGE_SECRET": "short-one"}, "use at least 16"),
        ({"BRIDGE_SECRET": SECRET, "BRIDGE_SECRET_FILE": str(good)}, "set only one"),
        ({"BRIDGE_REPLAY_WINDOW": "0"}, "BRIDGE_REPLAY_WINDOW"),
        ({"BRIDGE_MAX_RECIPIENTS": "5000"}, "--max-recipients / BRIDGE_MAX_RECIPIENTS"),
        ({"BRIDGE_RATE": "-1"}, "--rate / BRIDGE_RATE"),
        ({"BRIDGE_BURST": "0"}, "--burst / BRIDGE_BURST"),
    ]
    for env, needle in cases:
        with pytest.raises(SettingsError, match=re.escape(needle)) as error:
            Settings.from_env(env)
        assert SECRET not in str(error.value) and "short-one" not in str(error.value)


async def test_bad_secret_file_stops_serve_with_one_clear_line(tmp_path):
    missing = tmp_path / "nope.secret"
    result = await bridge("serve", "--name", "alice", "--secret-file", str(missing),
                          env=cli_env(BRIDGE_REDIS_URL="redis://127.0.0.1:1/0"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("bridge: cannot read the secret")
    assert str(missing) in result.stderr and result.stdout == ""


# ---------------------------------------------------------------------------- limits
async def test_too_many_recipients_is_a_tool_error(agents, r):
    alice = await agents.start("alice", "--max-recipients", "2")
    for name in ("bob", "carol", "dave"):
        await agents.start(name)
    with pytest.raises(ToolError, match=r"3 recipients is over the limit of 2 "
                                        r"\(BRIDGE_MAX_RECIPIENTS\)"):
        await alice.tool("send_message", to=["bob", "carol", "dave"], text="hi all")
    assert r.xlen(LOG) == 0
    assert "sent" in await alice.tool("send_message", to=["bob", "carol"], text="hi two")


async def test_rate_limit_refuses_with_when_to_retry(agents, r):
    alice = await agents.start("alice", "--rate", "0.5", "--burst", "3")
    await agents.start("bob")
    t0, accepted, message = r.time(), 0, ""
    while not message:  # the burst, then a refusal (a slow machine earns a token per 2 s)
        try:
            await alice.tool("send_message", to="bob", text=f"burst {accepted}")
            accepted += 1
        except ToolError as error:
            message = str(error)
    t1 = r.time()
    assert 3 <= accepted <= 3 + 0.5 * ((t1[0] - t0[0]) + (t1[1] - t0[1]) / 1e6) + 1
    assert r.xlen(LOG) == accepted
    assert "rate limit: alice may send 0.5 messages per second, in bursts of up to 3" in message
    assert "NOT sent" in message
    retry = float(re.search(r"send it again in ([0-9.]+) s", message).group(1))  # type: ignore[union-attr]
    assert 0 < retry <= 2.0
    # The wait the error asks for, on Redis' clock (which fills the bucket); then send until
    # it goes through: the hint is rounded, and a refused send takes no token and logs nothing.
    ready_ms = t1[0] * 1000 + t1[1] // 1000 + retry * 1000
    with anyio.fail_after(retry + 20):
        while redis_ms(r) < ready_ms:
            await anyio.sleep(0.01)
        while True:
            try:
                assert "sent" in await alice.tool("send_message", to="bob", text="after waiting")
                break
            except ToolError as error:
                assert "rate limit" in str(error)
                await anyio.sleep(0.01)  # poll interval, bounded by the deadline above
    assert r.xlen(LOG) == accepted + 1


async def test_rate_limit_is_kept_in_redis_across_processes(agents, redis_server, r):
    """A loop of `bridge send --as` starts a new process each time: the bucket lives in
    Redis, under the sender's name, so it still holds."""
    await agents.start("bob")
    env = cli_env(BRIDGE_REDIS_URL=redis_server.url, BRIDGE_RATE="0.01", BRIDGE_BURST="2")
    results = [await bridge("send", "--as", "boss", "bob", f"m{i}", env=env) for i in range(3)]
    assert [x.returncode for x in results] == [0, 0, 1]
    assert results[2].stderr.startswith("bridge: rate limit: boss may send 0.01 messages")
    assert r.xlen(LOG) == 2
    assert 0 < r.pttl("bridge:{main}:rate:boss") <= 201_000  # gone once it would be full


async def test_a_flood_from_one_agent_does_not_hold_up_the_others(agents, r):
    mallory = await agents.start("mallory", "--rate", "5", "--burst", "10")
    alice = await agents.start("alice")
    bob = await agents.start("bob")

    async def alice_sends(tag: str, count: int) -> list[float]:
        """alice -> bob one at a time; the latency of each, send to push (ms)."""
        latencies = []
        for i in range(count):
            text, started = f"{tag} {i}", time.perf_counter()
            await alice.tool("send_message", to="bob", text=text)
            await bob.wait_for(lambda text=text: any(m["content"] == text
                                                     for m in bob.channel()[-20:]),
                               timeout=30, what=text)
            latencies.append((time.perf_counter() - started) * 1000)
        return sorted(latencies)

    quiet = await alice_sends("quiet", 50)
    results: list[dict[str, Any]] = []
    done = anyio.Event()

    async def flood() -> None:
        """mallory keeps 32 sends in flight, as fast as its server answers, until alice is done."""
        request_id = 10_000
        while not done.is_set():
            ids = list(range(request_id, request_id + 32))
            request_id += 32
            for i in ids:
                await mallory.send_request(i, "tools/call", {
                    "name": "send_message", "arguments": {"to": "bob", "text": f"flood {i}"}})
            results.extend([await mallory.response(i, timeout=60) for i in ids])

    t0 = r.time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(flood)
        flooded = await alice_sends("alice", 100)
        done.set()
    t1 = r.time()
    accepted = sum(not x.get("isError") for x in results)
    refused = [x for x in results if x.get("isError")]
    assert refused and all("rate limit" in x["content"][0]["text"] for x in refused)
    elapsed = (t1[0] - t0[0]) + (t1[1] - t0[1]) / 1e6  # Redis' clock, which fills the bucket
    assert accepted <= 10 + 5 * elapsed + 1

    await bob.wait_for(lambda: sum(m["meta"]["from"] == "mallory" for m in bob.channel())
                       == accepted, timeout=60, what="every accepted flood message")
    from_alice = [m["content"] for m in bob.channel()
                  if m["meta"]["from"] == "alice" and m["content"].startswith("alice ")]
    assert from_alice == [f"alice {i}" for i in range(100)]
    print(f"\nflood: mallory {accepted} accepted / {len(refused)} refused in {elapsed:.2f} s; "
          f"alice -> bob send-to-push p50 {quiet[25]:.1f} ms quiet, {flooded[50]:.1f} ms "
          f"under the flood (max {quiet[-1]:.1f} / {flooded[-1]:.1f} ms)")


async def test_a_raw_flood_of_forgeries_is_dropped_and_logged_in_bounds(agents, r):
    """A writer with Redis access skips the send script (and its rate limit) and floods the
    log with broadcast forgeries. In a signed room they are dropped, alice's messages to bob
    all arrive in order, and bob's log holds at most DROP_LOG_MAX lines of it."""
    alice = await agents.start("alice", env=dict(SIGNED))
    bob = await agents.start("bob", env=dict(SIGNED))
    flood, ts = 3000, str(now_ms())

    def raw_flood() -> None:
        client = redis.Redis(port=r.connection_pool.connection_kwargs["port"])
        for start in range(0, flood, 100):
            pipe = client.pipeline(transaction=False)
            for i in range(start, start + 100):
                pipe.xadd(LOG, {"from": "alice", "to": "*", "text": f"forged {i}",
                                "reply_to": "", "kind": "message", "ts": ts})
                pipe.publish("bridge:{main}:all", json.dumps({"id": f"{i}-0"}))
            pipe.execute()

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, raw_flood)
        for i in range(50):
            await alice.tool("send_message", to="bob", text=f"alice {i}")
    await alice.tool("send_message", to="bob", text="last")  # after the whole flood
    await bob.wait_for(lambda: bob.channel() and bob.channel()[-1]["content"] == "last",
                       timeout=60, what="alice's last message")
    assert [m["content"] for m in bob.channel()] == [f"alice {i}" for i in range(50)] + ["last"]
    events = bob.log_events()
    assert len([e for e in events if e["event"] == "envelope_dropped"]) == DROP_LOG_MAX
    [throttled] = [e for e in events if e["event"] == "envelope_drops_throttled"]
    assert throttled["reason"] == "unsigned"


async def test_the_drop_log_is_throttled_per_reason(agents, r):
    """Issue 11 item 21: over DROP_LOG_MAX drops of one reason (here bad_signature, entries
    signed with another secret) in a minute become one envelope_drops_throttled line, and a
    flood of one reason does not silence the lines of another (malformed, after it)."""
    alice = await agents.start("alice", env=dict(SIGNED))
    bob = await agents.start("bob", env=dict(SIGNED))
    flood, malformed = DROP_LOG_MAX + 50, 3
    client = redis.Redis(port=r.connection_pool.connection_kwargs["port"])
    pipe = client.pipeline(transaction=False)
    for i in range(flood):
        pipe.xadd(LOG, signed("alice", "bob", f"forged {i}", now_ms(),
                              secret="not-the-room-secret-000"))  # type: ignore[arg-type]
    for i in range(malformed):
        pipe.xadd(LOG, {"from": "Mallory", "to": "bob", "text": f"malformed {i}",
                        "reply_to": "", "kind": "message", "ts": str(now_ms())})
    pipe.execute()
    await alice.tool("send_message", to="bob", text="after the flood")  # wakes bob up
    [push] = await bob.wait_messages(1, timeout=30)
    assert push["content"] == "after the flood"
    await wait_drops(bob, DROP_LOG_MAX + malformed)
    events = bob.log_events()
    assert len(drops(bob, "bad_signature")) == DROP_LOG_MAX
    assert len(drops(bob, "malformed")) == malformed
    throttled = [e for e in events if e["event"] == "envelope_drops_throttled"]
    assert [e["reason"] for e in throttled] == ["bad_signature"]


async def test_a_replay_window_other_than_the_default(agents, r):
    """Issue 11 item 21: with BRIDGE_REPLAY_WINDOW=5, a signed message whose time is 20 s
    from its log time (inside the default 300 s) is dropped as a replay, and one 1 s away
    is delivered."""
    window = {**SIGNED, "BRIDGE_REPLAY_WINDOW": "5"}
    await agents.start("alice", env=dict(window))
    bob = await agents.start("bob", env=dict(window))
    now = now_ms()
    inject(r, signed("alice", "bob", "20 s old", now - 20_000), "bob")
    inject(r, signed("alice", "bob", "20 s ahead", now + 20_000), "bob")
    inject(r, signed("alice", "bob", "1 s old", now - 1_000), "bob")
    [push] = await bob.wait_messages(1)
    assert push["content"] == "1 s old"
    await wait_drops(bob, 2)
    assert [e["reason"] for e in drops(bob)] == ["replay", "replay"]
    assert bob.channel() == [push]


async def test_a_log_dated_in_the_future_is_refused_loudly_and_can_be_reset(agents, r):
    """One entry XADDed by hand with a future id makes Redis give every later entry an id
    from that time on, and receivers would drop each signed message as a replay while the
    sender was told it was delivered. The send script refuses instead, leaving no trace; the
    docs/security.md's reset (XDEL, XSETID, restart) brings the room back."""
    alice = await agents.start("alice", env=dict(SIGNED))
    bob = await agents.start("bob", env=dict(SIGNED))
    future = f"{now_ms() + 10**9}-0"
    r.xadd(LOG, {"junk": "1"}, id=future)
    with pytest.raises(ToolError, match=r"NOT sent: room 'main'.s log would have given it the "
                                        r"id \d+-\d+, dated in the future") as error:
        await alice.tool("send_message", to="bob", text="lost?")
    assert "reset the room's log" in str(error.value)
    assert r.xlen(LOG) == 1 and r.get("bridge:{main}:seq") in (None, b"0")
    # the reset, as in docs/security.md
    r.xdel(LOG, future)
    r.execute_command("XSETID", LOG, f"{r.time()[0]}999-0")
    await bob.close_stdin()
    await bob.wait_exit()
    bob = await agents.start("bob", env=dict(SIGNED))
    await alice.tool("send_message", to="bob", text="after the reset")
    [push] = await bob.wait_messages(1)
    assert push["content"] == "after the reset"


async def test_receiver_drops_text_over_its_own_limit(agents):
    alice = await agents.start("alice", "--max-bytes", "1000")
    bob = await agents.start("bob", "--max-bytes", "100")
    await alice.tool("send_message", to="bob", text="x" * 500)
    await wait_drops(bob, 1)
    assert drops(bob)[0]["reason"] == "too_large"
    await alice.tool("send_message", to="bob", text="small")
    [push] = await bob.wait_messages(1)
    assert push["content"] == "small"


# ---------------------------------------------------------------------------- redaction
PASSWORD = "Pa55-xyzzy-sekrit"


class PasswordRedis:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp), "--requirepass", PASSWORD],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, password=PASSWORD, socket_timeout=5).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def url(self, password: str = PASSWORD) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def password_redis(tmp_path):
    server = PasswordRedis(tmp_path)
    yield server
    server.stop()


async def test_serve_never_shows_the_redis_password(agents, password_redis):
    alice = await agents.start("alice", redis_url=password_redis.url())
    bob = await agents.start("bob", redis_url=password_redis.url())
    await alice.tool("send_message", to="bob", text="hi")
    await bob.wait_messages(1)
    await bob.tool("list_participants")
    await bob.close_stdin()
    await bob.wait_exit()
    for agent in (alice, bob):
        assert PASSWORD not in agent.stderr()
        assert not any(PASSWORD.encode() in line for line in agent.raw_stdout)
    joined = [e for e in bob.log_events() if e["event"] == "joined"][0]
    assert joined["redis"] == f"redis://:***@127.0.0.1:{password_redis.port}/0"
    # a wrong password: serve stops with one line, which names the URL without it
    wrong = "Wr0ng-pass-plugh"
    result = await serve_until_it_exits(
        "--name", "carol", env=cli_env(BRIDGE_REDIS_URL=password_redis.url(wrong)))
    assert result.returncode == 1 and "***" in result.stderr
    assert wrong not in result.stderr + result.stdout


async def test_operator_commands_never_show_the_redis_password(agents, password_redis):
    await agents.start("bob", redis_url=password_redis.url())
    wrong = "Wr0ng-pass-plugh"
    port = password_redis.port
    urls = {
        PASSWORD: password_redis.url(),
        wrong: password_redis.url(wrong),
        "qu3ry-pass-word": f"redis://127.0.0.1:{port}/0?password=qu3ry-pass-word",
        "n0t-a-port-pass": "redis://:n0t-a-port-pass@127.0.0.1:notaport/0",
    }
    commands = [["doctor"], ["who"], ["history"], ["send", "--as", "boss", "bob", "hi"],
                ["tail", "--since", "1h"]]
    for password, url in urls.items():
        for command in commands:
            env = cli_env(BRIDGE_REDIS_URL=url, BRIDGE_LOG_LEVEL="DEBUG")
            if command[0] == "tail" and password == PASSWORD:
                continue  # tail follows forever on a good URL; its start-up line is below
            result = await bridge(*command, env=env)
            out = result.stdout + result.stderr
            assert password not in out, (command, out)
            assert "Traceback" not in out, (command, out)
            if command == ["doctor"]:
                assert "***" in out, out
    # tail on the good URL: its start-up log and the line a terminal would show (a deadline
    # for start-up, not a time it must start in)
    seen = b""
    with anyio.fail_after(30):
        process = await anyio.open_process(
            [BRIDGE, "tail"], env=cli_env(BRIDGE_REDIS_URL=password_redis.url(),
                                          BRIDGE_LOG_LEVEL="INFO"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert process.stderr is not None
            while b"tail_started" not in seen:
                try:
                    seen += await process.stderr.receive()
                except anyio.EndOfStream:
                    raise AssertionError(f"tail exited before it started: {seen!r}") from None
        finally:
            process.kill()
            await process.wait()
    assert b"tail_started" in seen and b"***" in seen and PASSWORD.encode() not in seen


async def test_tail_marks_what_fails_the_signature_check(redis_server, r, cli):  # noqa: F811
    env = {"BRIDGE_REDIS_URL": redis_server.url, "BRIDGE_LOG_LEVEL": "INFO", "NO_COLOR": "1"}
    as_json = await cli("tail", "--json", env=cli_env(**env, BRIDGE_SECRET=SECRET))
    plain = await cli("tail", env=cli_env(**env, BRIDGE_SECRET=SECRET))
    unchecked = await cli("tail", "--json", env=cli_env(**env))  # no secret: nothing verified
    good = signed("alice", "bob", "good order", now_ms())
    entries = [good,
               {"from": "alice", "to": "bob", "text": "unsigned order", "reply_to": "",
                "kind": "message", "ts": str(now_ms())},
               signed("alice", "bob", "forged order", now_ms(), secret="not-the-room-secret-00"),
               signed("alice", "bob", "replayed order", now_ms() - 600_000),  # window 300 s
               good]  # an exact copy of the first
    for fields in entries:
        r.xadd(LOG, fields)
    for tail in (as_json, plain, unchecked):
        await tail.wait_for(lambda lines: len(lines) >= 5, what="5 lines")
    assert [(x["text"], x["verified"], x.get("problem")) for x in as_json.records()] == [
        ("good order", True, None), ("unsigned order", False, "unsigned"),
        ("forged order", False, "bad_signature"), ("replayed order", False, "replay"),
        ("good order", False, "duplicate")]
    markers = [line.split(" ", 1)[0] if line.startswith("[") else "" for line in plain.lines]
    assert markers == ["", "[unsigned]", "[forged]", "[replayed]", "[duplicate]"], plain.lines
    assert all(line.rstrip("\n").endswith("order") for line in plain.lines)
    assert all("verified" not in x for x in unchecked.records())
    for tail in (as_json, plain, unchecked):
        assert await tail.interrupt() == 0
