"""Reply loops are cut: two agents alone trading acknowledgements are held, and two agents
doing real work at speed are not.

The transcripts in tests/transcripts/ are the test data: a contract negotiation between two
fast developer agents (26 substantive messages each way) and an acknowledgement loop (two
polite agents thanking each other, 22 messages each way). Run with -s to see the figures."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from bridge.mcp.loops import NEW_WORDS, RECENT, LoopGuard, new_words, words
from bridge.room.envelope import Envelope
from tests.test_cli_ops import bridge

pytestmark = pytest.mark.anyio

LOOP = {"BRIDGE_LOOP_LIMIT": "4", "BRIDGE_LOOP_WINDOW": "60"}
TRANSCRIPTS = Path(__file__).parent / "transcripts"


def transcript(name: str) -> list[tuple[str, str]]:
    """(sender, text) of each message; alice and bob take turns, alice first."""
    messages = json.loads((TRANSCRIPTS / f"{name}.json").read_text())["messages"]
    return [(m["from"], m["text"]) for m in messages]


async def hold_a2(alice, bob) -> list[dict]:
    """a0 b0 a1 b1 a2: the fifth message of the pair within the window, nobody else
    involved: bob holds alice's a2 (BRIDGE_LOOP_LIMIT 4). Returns bob's notices."""
    for i in range(2):
        await alice.tool("send_message", to="bob", text=f"a{i}")
        await bob.wait_messages(i + 1)
        await bob.tool("send_message", to="alice", text=f"b{i}")
        await alice.wait_messages(i + 1)
    await alice.tool("send_message", to="bob", text="a2")
    return await bob.wait_for(lambda: bob.channel("notice"), what="the hold's notice")


async def test_a_reply_loop_is_held_and_read_messages_resumes_it(agents, redis_server):
    alice = await agents.start("alice", env=dict(LOOP))
    bob = await agents.start("bob", env=dict(LOOP))
    [notice] = await hold_a2(alice, bob)
    assert "holding alice's messages" in notice["content"]
    assert "read_messages" in notice["content"]
    assert [m["content"] for m in bob.channel()] == ["a0", "a1"]  # a2 was not pushed

    who = json.loads((await bridge("who", "--json", "--redis", redis_server.url)).stdout)
    status = {a["name"]: a["status"] for a in who["agents"]}
    assert status["bob"].startswith("holding alice's messages")  # the operator sees it
    note = await bob.tool("list_participants")
    assert "1 unread message(s) waiting" in note and "held from alice" in note

    held = await bob.tool("read_messages")  # nothing is lost; reading resumes
    assert "a2" in held
    await alice.tool("send_message", to="bob", text="a3")
    await bob.wait_messages(3)
    assert bob.channel()[-1]["content"] == "a3"
    who = json.loads((await bridge("who", "--json", "--redis", redis_server.url)).stdout)
    assert {a["name"]: a["status"] for a in who["agents"]}["bob"] == ""


async def test_a_third_party_means_no_loop(agents):
    alice = await agents.start("alice", env=dict(LOOP))
    bob = await agents.start("bob", env=dict(LOOP))
    carol = await agents.start("carol", env=dict(LOOP))
    await carol.tool("send_message", to="bob", text="c0")
    for i in range(3):
        await alice.tool("send_message", to="bob", text=f"a{i}")
        await bob.tool("send_message", to="alice", text=f"b{i}")
    await bob.wait_messages(4)
    assert bob.channel("notice") == []


async def converse(agents, name: str, env: dict[str, str] | None = None
                   ) -> tuple[dict, int | None, float]:
    """alice and bob (real `bridge serve`s) play transcript ``name`` as fast as they can,
    each message answering the one before (reply_to), each sent once the one before was
    pushed to its sender, as an agent that replies to what it is pushed would. Stops when a
    side is held (that side was not pushed the message: it has nothing to reply to).
    Returns the agents, the 1-based number of the message that started a hold (None: no
    hold) and the seconds the conversation took."""
    side = {name: await agents.start(name, env=dict(env or {})) for name in ("alice", "bob")}
    pushed = {"alice": 0, "bob": 0}
    reply_to = ""
    started = time.monotonic()
    for number, (sender, text) in enumerate(transcript(name), start=1):
        receiver = "bob" if sender == "alice" else "alice"
        sent = await side[sender].tool("send_message", to=receiver, text=text,
                                       reply_to=reply_to)
        reply_to = re.search(r"message_id (\S+?)\.", sent).group(1)
        pushed[receiver] += 1
        agent, count = side[receiver], pushed[receiver]
        await agent.wait_for(lambda a=agent, n=count: len(a.message_times) >= n
                             or a.channel("notice"), what=f"message {number}")
        if agent.channel("notice"):
            return side, number, time.monotonic() - started
        assert agent.channel()[-1]["content"] == text
    return side, None, time.monotonic() - started


async def test_a_fast_contract_negotiation_is_never_held(agents):
    """52 messages in a few seconds, with the default BRIDGE_LOOP_LIMIT 20 in 120 s: the
    pair's message count is far over the limit, but every message brings new content."""
    side, held_at, took = await converse(agents, "negotiation")
    print(f"\nnegotiation over stdio: 52 messages in {took:.1f} s, held at {held_at}",
          file=sys.stderr)
    assert held_at is None
    for agent in side.values():
        assert len(agent.channel()) == 26 and agent.channel("notice") == []
        assert not [e for e in agent.log_events() if e.get("event") == "reply_loop_held"]


async def test_an_acknowledgement_loop_is_held_and_read_messages_resumes_it(agents,
                                                                             redis_server):
    """The polite pair, default settings: alice holds bob's 11th message (the 22nd of the
    exchange): bob's last 10 brought fewer than NEW_WORDS new words each (his first, about
    the merged fix, did), and she sent 11. The notice and the log say so."""
    side, held_at, took = await converse(agents, "ack_loop")
    alice, bob = side["alice"], side["bob"]
    notices = {name: [n["content"] for n in agent.channel("notice")]
               for name, agent in side.items()}
    print(f"\nacknowledgement loop over stdio: held at message {held_at} after {took:.1f} s: "
          f"{notices}", file=sys.stderr)
    assert held_at == 22 and notices["bob"] == []
    [notice] = alice.channel("notice")
    assert notice["content"].startswith("bridge is holding bob's messages: in ")
    assert "s, with nobody else involved, bob sent you 11 messages" in notice["content"]
    assert ("bob sent you 11 messages, 10 of them adding fewer than 3 new words each"
            in notice["content"])
    assert ("and you sent 11: 21 counted, more than BRIDGE_LOOP_LIMIT 20 within 120 s (a "
            "reply loop?). They are not lost: call read_messages") in notice["content"]
    [event] = [e for e in alice.log_events() if e.get("event") == "reply_loop_held"]
    assert event["peer"] == "bob" and "10 of them adding fewer than 3" in event["reason"]
    messages = transcript("ack_loop")
    assert alice.channel()[-1]["content"] == messages[19][1]  # bob's 10th; his 11th was held
    who = json.loads((await bridge("who", "--json", "--redis", redis_server.url)).stdout)
    assert {a["name"]: a["status"] for a in who["agents"]}["alice"].startswith(
        "holding bob's messages")

    held = await alice.tool("read_messages")  # nothing is lost; reading resumes
    assert messages[21][1] in held and "held from bob" not in held
    await bob.tool("send_message", to="alice", text="One more thing: the release is tagged.")
    await alice.wait_messages(11)
    assert alice.channel()[-1]["content"] == "One more thing: the release is tagged."


async def test_a_runaway_exchange_is_held_whatever_it_says(agents):
    """Substantive or not, more than 5 x BRIDGE_LOOP_LIMIT messages in the window, half each
    way, are held: with the limit at 4, bob holds alice's 11th proposal (the 21st message)."""
    side, held_at, _ = await converse(agents, "negotiation", env=dict(LOOP))
    assert held_at == 21
    [notice] = side["bob"].channel("notice")
    assert "you and alice exchanged 21 messages in " in notice["content"]
    assert ("more than 20 (5 x BRIDGE_LOOP_LIMIT) within 60 s, whatever they say (a runaway "
            "exchange?). They are not lost") in notice["content"]


def replay(name: str, limit: int = 20, window: float = 120.0, gap: float = 2.0
           ) -> tuple[list[int], int | None, str]:
    """The transcript through each side's LoopGuard, one message every ``gap`` seconds (52
    messages in 104 s: fast agents). Returns each message's score (the words its sender had
    not used in its last RECENT messages), the 1-based number of the message that started a
    hold (None: none) and why."""
    guards = {name: LoopGuard(name, limit, window) for name in ("alice", "bob")}
    said: dict[str, list[frozenset[str]]] = {"alice": [], "bob": []}
    scores: list[int] = []
    for number, (sender, text) in enumerate(transcript(name), start=1):
        receiver = "bob" if sender == "alice" else "alice"
        scores.append(new_words(words(text), said[sender][-RECENT:]))
        said[sender].append(words(text))
        guards[sender].sent([receiver], now=number * gap)
        envelope = Envelope(id=f"{number}-0", sender=sender, to=(receiver,), text=text)
        if guards[receiver].screen(envelope, now=number * gap) == "start":
            return scores, number, guards[receiver].describe(sender)
    return scores, None, ""


def test_the_scores_of_a_negotiation_and_of_an_acknowledgement_loop():
    negotiation, held, _ = replay("negotiation")
    print(f"\nnegotiation: {len(negotiation)} messages, held at {held}, new words "
          f"{negotiation}", file=sys.stderr)
    assert held is None and len(negotiation) == 52
    assert sum(score < NEW_WORDS for score in negotiation) == 3  # its short confirmations
    assert sorted(negotiation)[3] >= 9  # every other message brings 9 new words or more

    acks, held, why = replay("ack_loop")
    print(f"acknowledgement loop: held at message {held} of 44, new words {acks}; {why}",
          file=sys.stderr)
    assert held == 22 and sum(score < NEW_WORDS for score in acks) == 20
    assert sorted(acks)[-2:] == [3, 10]  # only the first (the merged fix) says much
    assert "bob sent you 11 messages, 10 of them adding fewer than 3 new words" in why


def test_what_counts_as_a_new_word():
    assert words("Thanks!! \U0001f44d You're welcome, glad to help :)") == frozenset()
    assert words("Use 409, not 422; rename cart_id to basket_id") == {
        "use", "409", "422", "rename", "cart_id", "basket_id"}
    # a number or id of 7+ characters is one word: acks that quote ids are still repeats
    first = words("ack 1732400000000-0 (uuid 3f2a9c1e-0b7d-4c1a-9e2f-5a6b7c8d9e0f)")
    second = words("ack 1732400000007-0 (uuid 0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f)")
    assert new_words(second, [first]) == 0
    # a long message said again is a repeat however long it is
    proposal = words(transcript("negotiation")[0][1])
    assert len(proposal) > 30 and new_words(proposal, [proposal]) == 0


def test_a_message_is_compared_with_its_senders_last_messages_only():
    """Words used more than RECENT messages ago, or before the window, are new again."""
    guard = LoopGuard("bob", 100, 120.0)
    said = [(0.0, "alpha beta gamma")] + [(float(i), f"w{i}a w{i}b w{i}c")
                                          for i in range(1, RECENT + 1)]
    scores = []
    for number, (now, text) in enumerate(said + [(20.0, "alpha beta gamma"),
                                                  (21.0, "w5a w5b w5c"),
                                                  (200.0, "w16a w16b w16c")]):
        guard.screen(Envelope(id=f"{number}-0", sender="alice", to=("bob",), text=text),
                     now=now)
        scores.append(guard._pairs["alice"].received[-1][1])  # this message's score
    assert scores[:RECENT + 1] == [3] * (RECENT + 1)
    # alpha was 17 messages back, w5 among the last 16; at 200 s the rest had expired
    assert scores[RECENT + 1:] == [3, 0, 3]
    assert len(guard._pairs["alice"].recent) == 1  # memory: the window's, at most RECENT
