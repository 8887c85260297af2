"""Delivering from the wake-up (bridge/room/wakeup.py): with a room secret a message that proves
to be next is pushed from its pub/sub payload, without reading the log; anything that is not
provably next (forged, replayed, after a gap) goes through the log as before."""

from __future__ import annotations

import json
import time

import anyio
import pytest
import redis

from bridge.room.envelope import Envelope, decode_entry
from bridge.room.signing import Signer

pytestmark = pytest.mark.anyio

SECRET = "correct-horse-battery-staple-42"
SIGNED = {"BRIDGE_SECRET": SECRET}
LOG, SEQ = "bridge:{main}:log", "bridge:{main}:seq"
TO_BOB = "bridge:{main}:to:bob"


def log_reads(r: redis.Redis) -> int:
    """XRANGE calls Redis has run so far (the receivers' reads of the log)."""
    return int(r.info("commandstats").get("cmdstat_xrange", {}).get("calls", 0))


def whole_payload(envelope: Envelope, entry_id: str, seq: int, prev: str) -> bytes:
    """A wake-up as the send script publishes it: the whole entry, with seq and prev."""
    return (f'{{"id":"{entry_id}","seq":"{seq}","prev":"{prev}",'
            f'{envelope.payload_tail()}').encode()


def signed_payload(entry_id: str, seq: int, prev: str, text: str, secret: str = SECRET,
                   sender: str = "alice") -> bytes:
    envelope = Envelope(id="", sender=sender, to=("bob",), text=text,
                        ts=int(time.time() * 1000))
    envelope = Signer(secret.encode(), "main", 300_000).sign(envelope)
    return whole_payload(envelope, entry_id, seq, prev)


async def wait_for_log(agent, event: str, timeout: float = 20) -> list[dict]:
    with anyio.fail_after(timeout):
        while not (found := [e for e in agent.log_events() if e["event"] == event]):
            await anyio.sleep(0.02)
    return found


@pytest.mark.parametrize("secret", [True, False], ids=["secret", "no-secret"])
async def test_with_a_secret_messages_come_from_the_wake_up_without_a_log_read(
        agents, r, secret):
    env = dict(SIGNED) if secret else {}
    alice = await agents.start("alice", env=dict(env))
    bob = await agents.start("bob", env=dict(env))
    await alice.tool("send_message", to="bob", text="first")
    await bob.wait_messages(1)
    before = log_reads(r)
    for i in range(5):  # one at a time: each is the next entry of the log
        await alice.tool("send_message", to="bob", text=f"m{i}")
        await bob.wait_messages(i + 2)
    reads = log_reads(r) - before
    assert [m["content"] for m in bob.channel()] == ["first", *(f"m{i}" for i in range(5))]
    ids = [entry_id.decode() for entry_id, _ in r.xrange(LOG)]
    assert [m["meta"]["message_id"] for m in bob.channel()] == ids
    # without a secret anyone who may PUBLISH could write any payload: read back, each time
    assert reads == (0 if secret else 5)


def genuine_payload(capture, text: str) -> dict:
    """The payload the send script published for ``text``, as an attacker subscribed to bob's
    channel (without the secret) caught it."""
    with anyio.fail_after(10):
        while True:
            message = capture.get_message(timeout=0.1)
            if message and message["type"] == "message":
                payload = json.loads(message["data"])
                if payload["text"] == text:
                    return payload


FORGERIES = ["duplicate", "unsigned", "altered", "other-secret", "for-carol"]


@pytest.mark.parametrize("kind", FORGERIES)
async def test_a_forged_payload_that_claims_to_be_next_is_never_delivered(agents, r, kind):
    """Each forgery on its own, published while bob is synced (his last message came from its
    wake-up), so that it reaches the wake-up path's checks: after one doubt bob reads the log
    for every wake-up until a read has covered it, whatever the wake-up path would have let
    through."""
    alice = await agents.start("alice", env=dict(SIGNED))
    bob = await agents.start("bob", env=dict(SIGNED))
    capture = r.pubsub()  # the attacker, without the secret
    capture.subscribe(TO_BOB)
    await alice.tool("send_message", to="bob", text="first")
    await bob.wait_messages(1)
    before = log_reads(r)
    await alice.tool("send_message", to="bob", text="one")
    await bob.wait_messages(2)
    assert log_reads(r) == before  # from the wake-up: bob is synced
    genuine = genuine_payload(capture, "one")
    [(last_id, fields)] = r.xrange(LOG, "-", "+")[-1:]
    last_id, seq = last_id.decode(), int(fields[b"seq"])
    assert "sig" in genuine and genuine["id"] == last_id and genuine["prev"] != "0-0"
    # it claims the next id and seq, right after bob's last entry; it is not in the log
    ms, counter = last_id.split("-")
    next_id = f"{ms}-{int(counter) + 1}"
    replayed = {**genuine, "id": next_id, "seq": str(seq + 1), "prev": last_id}
    forgery = {
        "duplicate": json.dumps(replayed).encode(),  # the real message again
        "unsigned": json.dumps({k: v for k, v in replayed.items() if k != "sig"}
                               | {"text": "unsigned"}).encode(),
        "altered": json.dumps({**replayed, "text": "altered"}).encode(),
        "other-secret": signed_payload(next_id, seq + 1, last_id, "other secret",
                                       secret="not-the-room-secret-000"),
        "for-carol": json.dumps({**replayed, "to": ["carol"], "text": "for carol"}).encode(),
    }[kind]
    r.publish(TO_BOB, forgery)
    # the doubt is read from the log, which has no such entry: logged, not delivered
    with anyio.fail_after(20):
        while not (dropped := [e for e in bob.log_events() if e["event"] == "payload_dropped"
                               and e.get("id") == next_id]) and len(bob.channel()) == 2:
            await anyio.sleep(0.02)
    assert [m["content"] for m in bob.channel()] == ["first", "one"]
    assert dropped[0]["reason"] == "forged id: no such message in the log"
    await alice.tool("send_message", to="bob", text="two")
    await bob.wait_messages(3)
    assert [m["content"] for m in bob.channel()] == ["first", "one", "two"]
    assert [m["meta"]["message_id"] for m in bob.channel()] == [
        entry_id.decode() for entry_id, _ in r.xrange(LOG)]
    # and the next one, once the log read has covered the forgery, is the real next again
    before = log_reads(r)
    await alice.tool("send_message", to="bob", text="three")
    await bob.wait_messages(4)
    assert [m["content"] for m in bob.channel()] == ["first", "one", "two", "three"]
    assert log_reads(r) == before


@pytest.mark.parametrize("counted", [True, False], ids=["seq-counted", "seq-not-counted"])
async def test_a_gap_before_a_wake_up_makes_the_receiver_read_the_log(agents, r, counted):
    """An entry for bob that was logged without a wake-up (added by someone who holds the
    secret, by hand): the next wake-up's prev is not bob's last entry, so bob reads the log and
    gets both, in order. Delivering that wake-up as next would have skipped it for good.
    Added with INCR of the seq counter, the next wake-up's seq shows the gap too; added without
    (seq-not-counted), its seq is bob's last one's plus one, and only its prev shows the gap."""
    alice = await agents.start("alice", env=dict(SIGNED))
    bob = await agents.start("bob", env=dict(SIGNED))
    await alice.tool("send_message", to="bob", text="one")
    await bob.wait_messages(1)
    before = log_reads(r)
    await alice.tool("send_message", to="bob", text="synced")
    await bob.wait_messages(2)
    assert log_reads(r) == before  # from the wake-up: bob is synced, so prev and seq decide
    signer = Signer(SECRET.encode(), "main", 300_000)
    hidden = signer.sign(Envelope(id="", sender="alice", to=("bob",), text="hidden",
                                  ts=int(time.time() * 1000)))
    seq = r.incr(SEQ) if counted else int(r.get(SEQ)) + 1
    r.xadd(LOG, {**hidden.log_fields(), "seq": str(seq)})  # no PUBLISH
    await alice.tool("send_message", to="bob", text="two")
    [(_, two)] = r.xrange(LOG, "-", "+")[-1:]
    assert int(two[b"seq"]) == (seq + 1 if counted else seq)
    # "hidden" is read in the same log read as "two", before it: once "two" is here, so is it
    await bob.wait_for(lambda: any(m["content"] == "two" for m in bob.channel()),
                       what='"two"')
    assert [m["content"] for m in bob.channel()] == ["one", "synced", "hidden", "two"]
    assert log_reads(r) > before


async def test_a_message_the_log_lost_cannot_be_replayed_onto_the_next_position(agents, r):
    """Found by review. alice's message to bob is trimmed while bob is away (bob is told it
    expired). Someone who may PUBLISH but has no secret captured its genuine payload, and
    publishes it again as if it were the next entry: prev = bob's last entry, seq one more, an
    id just after it (within the clocks' slack of the signed time). bob's process never saw
    it, so it is no duplicate. It must not be delivered, nor move bob past the real next one."""
    alice = await agents.start("alice", env=dict(SIGNED))
    bob = await agents.start("bob", env=dict(SIGNED))
    carol = await agents.start("carol", env=dict(SIGNED))
    await alice.tool("send_message", to="bob", text="hello")
    await bob.wait_messages(1)
    await bob.close_stdin()
    assert await bob.wait_exit() == 0
    capture = r.pubsub()  # the attacker
    capture.subscribe(TO_BOB)
    await alice.tool("send_message", to="bob", text="pay 100 euros")
    await alice.tool("send_message", to="carol", text="filler")
    await carol.wait_messages(1)
    genuine = None
    with anyio.fail_after(10):
        while genuine is None:
            message = capture.get_message(timeout=0.1)
            if message and message["type"] == "message":
                genuine = json.loads(message["data"])
            await anyio.sleep(0)
    assert genuine["text"] == "pay 100 euros"
    [(filler_id, filler)] = r.xrange(LOG, "-", "+")[-1:]
    r.xtrim(LOG, minid=filler_id.decode(), approximate=False)  # what MAXLEN/MAX_AGE does
    bob = await agents.start("bob", env=dict(SIGNED))
    [notice] = await bob.wait_for(lambda: bob.channel("notice"), what="the expiry notice")
    assert "expired" in notice["content"]
    filler_ms = int(filler_id.decode().split("-")[0])
    forged = {**genuine, "id": f"{filler_ms + 1}-0", "seq": str(int(filler[b"seq"]) + 1),
              "prev": filler_id.decode()}
    assert r.publish(TO_BOB, json.dumps(forged)) == 2  # bob, and the capture
    await alice.tool("send_message", to="bob", text="after")  # published after the copy
    await bob.wait_for(lambda: any(m["content"] == "after" for m in bob.channel()),
                       what="the real next message")
    assert [m["content"] for m in bob.channel()] == ["after"]


async def test_a_deleted_message_replayed_with_an_id_ahead_does_not_skip_the_next(agents, r):
    """alice's message to bob is deleted from the log (XDEL: no trim, so no expiry notice and
    no distrust) while bob is away. Someone without the secret read it first, and publishes
    it as bob's next entry (prev and seq right) with an id 250 s ahead: inside the replay
    window, never seen by bob, so no duplicate. Its id is far from its signed time and ahead
    of bob's clock: a doubt, read from the log. Delivered, it would have moved bob 250 s
    ahead, past the real next message."""
    alice = await agents.start("alice", env=dict(SIGNED))
    bob = await agents.start("bob", env=dict(SIGNED))
    await alice.tool("send_message", to="bob", text="hello")
    await bob.wait_messages(1)
    await bob.close_stdin()
    assert await bob.wait_exit() == 0
    await alice.tool("send_message", to="bob", text="pay 100 euros")
    [(paid_id, paid)] = r.xrange(LOG, "-", "+")[-1:]
    assert paid[b"text"] == b"pay 100 euros"
    r.xdel(LOG, paid_id)
    bob = await agents.start("bob", env=dict(SIGNED))
    await alice.tool("send_message", to="bob", text="ready")
    await bob.wait_messages(1)
    before = log_reads(r)
    await alice.tool("send_message", to="bob", text="synced")
    await bob.wait_messages(2)
    assert log_reads(r) == before  # from the wake-up: bob is synced
    [(last_id, last)] = r.xrange(LOG, "-", "+")[-1:]
    ahead_id = f"{int(last_id.decode().split('-')[0]) + 250_000}-0"
    r.publish(TO_BOB, whole_payload(decode_entry(paid_id, paid), ahead_id,
                                    int(last[b"seq"]) + 1, last_id.decode()))
    with anyio.fail_after(20):
        while not any(e["event"] == "payload_dropped" and e.get("id") == ahead_id
                      for e in bob.log_events()) and len(bob.channel()) == 2:
            await anyio.sleep(0.02)
    assert [m["content"] for m in bob.channel()] == ["ready", "synced"]
    await alice.tool("send_message", to="bob", text="after")
    await bob.wait_messages(3)
    assert [m["content"] for m in bob.channel()] == ["ready", "synced", "after"]


async def test_a_trim_while_the_reader_is_behind_is_reported(agents, r):
    """Found by review: bob's read-ahead is full (pull delivery, 4 KiB), the log loses the
    entries he has not read yet; when he reads on, he is told, not silently skipped on."""
    alice = await agents.start("alice")
    bob = await agents.start("bob", "--delivery", "pull",
                             env={"BRIDGE_READ_AHEAD_BYTES": "4096", "BRIDGE_LOG_LEVEL": "INFO"})
    body = "x" * 1500
    for i in range(10):
        await alice.tool("send_message", to="bob", text=f"m{i}:{body}")
    await wait_for_log(bob, "read_ahead_paused")
    ids = [entry_id.decode() for entry_id, _ in r.xrange(LOG)]
    r.xtrim(LOG, minid=ids[8], approximate=False)  # m3..m7 go before bob read them
    text = ""
    with anyio.fail_after(30):
        while "m9:" not in text:
            text += await bob.tool("read_messages", wait_seconds=1)
    assert [n for n in range(10) if f"m{n}:" in text] == [0, 1, 2, 8, 9]
    assert "5 message(s) of room main expired" in text
