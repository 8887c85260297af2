"""The script `bridge demo` plays: the story bridge was made for, with scripted agents.

carol, the manager, splits a feature between two developers; alice (the REST API) and bob
(the web client that calls it) settle the API contract between themselves and report to
carol. bob ends his session before carol acknowledges: her message waits for him in the room,
and his next session gets it. Every line is fixed here; what is real is how it travels: each
agent is a `bridge serve` process spoken to over MCP, and each step starts only once the
message it answers has arrived (`Actor.receive`: read_messages until it is there, or a
deadline).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from bridge.errors import BridgeError

# name -> role; the order they join in
CAST = {"carol": "manager", "alice": "developer", "bob": "developer"}
STATUS = {"carol": "planning the todo feature", "alice": "the REST API for /todos",
          "bob": "the web client for /todos"}

SPLIT = ("New feature: a todo list. alice: build the REST API for /todos. bob: build the web "
         "client that calls it. Settle the API contract between you two, then tell me.")
PROPOSAL = ("Contract proposal for /todos: GET /todos -> 200 [{id, title, done}]; "
            "POST /todos {title} -> 201 {id, title, done}. Does that work for the client?")
CHANGE = ("Nearly. Two changes: the list will grow, so page it (GET /todos?limit=50&cursor=C "
          "-> {items, next_cursor}); and I need PATCH /todos/{id} {done} to tick one off.")
FINAL = ("Agreed. Final contract v1: GET /todos?limit=50&cursor=C -> 200 {items: [{id, title, "
         "done}], next_cursor}; POST /todos {title} -> 201 {id, title, done: false}; "
         "PATCH /todos/{id} {title?, done?} -> 200 {id, title, done}.")
CONFIRM = "Confirmed: I build the client against contract v1."
DONE_ALICE = "Done: contract v1 for /todos is settled with bob. Building the API to it now."
DONE_BOB = "Done: contract v1 is settled with alice. Building the client to it now."
ACK = "Thanks, both: contract v1 is the plan. Ship it."


@dataclass(frozen=True)
class Sent:
    """A message as its sender sent it; its receiver checks it got exactly this."""
    id: str
    sender: str
    text: str
    queued: tuple[str, ...] = ()  # recipients who were away: it waits for them in the room


class DemoFailed(BridgeError):
    """A step of the demo did not happen: exit 1, with this as the one line that says why."""


class Actor(Protocol):
    """One scripted agent, as the story needs it (bridge.ops.demo.Agent)."""
    name: str

    async def set_status(self, text: str) -> None: ...

    async def send(self, to: str | list[str], text: str, reply_to: Sent | None = None) -> Sent:
        ...

    async def receive(self, message: Sent) -> None: ...

    async def leave(self) -> None: ...

    async def rejoin(self) -> None: ...


async def play(cast: Mapping[str, Actor], say: Callable[[str], None]) -> None:
    """The story, step by step; ``say`` narrates each step once it has happened."""
    carol, alice, bob = cast["carol"], cast["alice"], cast["bob"]
    for actor in cast.values():
        await actor.set_status(STATUS[actor.name])

    split = await carol.send(["alice", "bob"], SPLIT)
    say("carol (manager) splits the work: alice the REST API, bob the web client")
    await alice.receive(split)
    proposal = await alice.send("bob", PROPOSAL, reply_to=split)
    say("alice got her part; proposes an API contract to bob")
    await bob.receive(split)
    await bob.receive(proposal)
    change = await bob.send("alice", CHANGE, reply_to=proposal)
    say("bob got the proposal; asks for paging and a PATCH")
    await alice.receive(change)
    final = await alice.send("bob", FINAL, reply_to=change)
    say("alice agrees; states the final contract")
    await bob.receive(final)
    confirm = await bob.send("alice", CONFIRM, reply_to=final)
    done_bob = await bob.send("carol", DONE_BOB, reply_to=split)
    await bob.set_status("done: contract v1")
    await bob.leave()
    say("bob confirms the contract, reports done to carol, and ends his session")
    await alice.receive(confirm)
    done_alice = await alice.send("carol", DONE_ALICE, reply_to=split)
    say("alice got the confirmation; reports done to carol")
    await carol.receive(done_alice)
    await carol.receive(done_bob)
    ack = await carol.send(["alice", "bob"], ACK)
    if ack.queued != ("bob",):
        raise DemoFailed(f"bob was away, but bridge queued carol's message for "
                          f"{', '.join(ack.queued) or 'nobody'}")
    say("carol got both reports; acknowledges (bob is away: bridge queues it for him)")
    await alice.receive(ack)
    await bob.rejoin()
    await bob.receive(ack)
    for actor in (carol, alice):
        await actor.set_status("done: contract v1")
    say("bob is back in a new session: carol's acknowledgement was waiting for him")
