"""Delivery by channel: each incoming item pushed into the conversation as a
``notifications/claude/channel`` line on stdout, and the cursor written right after."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from bridge import trace
from bridge.mcp.acks import Acknowledgements
from bridge.mcp.loops import Holds
from bridge.mcp.posts import MAX_CHANGES, Peer, change, label
from bridge.mcp.protocol import encode
from bridge.mcp.stdio import PipeTransport
from bridge.room.connection import Incoming, Room
from bridge.room.envelope import Envelope, Event, Notice

log = structlog.get_logger("bridge.server")  # the name logs have always carried

CHANNEL_METHOD = "notifications/claude/channel"
PUSH_CHUNK_BYTES = 4096  # PIPE_BUF: a pipe write this small lands whole or not at all


def meta_for(item: Incoming, changes: list[str] | None = None,
             senders: Mapping[str, Peer] | None = None) -> dict[str, str]:
    """Channel meta: string values under fixed, safe keys only."""
    if isinstance(item, Envelope):
        meta = {"from": item.sender, "to": item.to_text(), "message_id": item.id,
                "kind": item.kind}
        peer = (senders or {}).get(item.sender)
        if peer and label(peer.role):  # the facts an inbox post gives too
            meta["role"] = label(peer.role)
        if peer and label(peer.host):
            meta["host"] = label(peer.host)
        if item.reply_to:
            meta["reply_to"] = item.reply_to
        if changes:  # what changed in the room since the last push (events ride along)
            meta["room_changes"] = "; ".join(changes)
        return meta
    if isinstance(item, Notice):
        return {"from": "bridge", "kind": item.kind}
    return {"from": item.name, "kind": item.kind}


def describe_event(event: Event) -> str:
    who = event.name + (f" ({event.role})" if event.role else "")
    if event.kind == "joined":
        return f"{who} joined the room" + (f" from host {event.host}" if event.host else "")
    if event.kind == "left":
        return f"{who} left the room" + (" (timed out)" if event.reason == "timeout" else "")
    if event.kind == "board":
        return f"{who} {event.status}"
    return f"{who} set status: {event.status}"


def notification_line(item: Incoming, changes: list[str] | None = None,
                      senders: Mapping[str, Peer] | None = None) -> bytes:
    """The JSON-RPC line of one channel push."""
    content = item.text if isinstance(item, Envelope | Notice) else describe_event(item)
    return encode({"jsonrpc": "2.0", "method": CHANNEL_METHOD,
                   "params": {"content": content,
                              "meta": meta_for(item, changes, senders)}})


async def push_forever(room: Room, transport: PipeTransport, holds: Holds, *,
                       ready: Callable[[], Awaitable[Any]], push_events: bool) -> None:
    """Push every incoming item as a channel notification, once the client is ready.

    A chunk of lines goes into the pipe in one write, and the cursor is written right
    after, before anything else runs. A crash can then repeat a chunk only if it strikes
    in the microseconds between the two writes.
    """
    await ready()
    acks = Acknowledgements(room, None, path="channel")  # Claude Code acknowledges nothing
    changes: list[str] = []
    while True:
        batch = await holds.screened(room, await room.next_batch())
        await holds.senders.learn(room.participants, batch)
        if not push_events:  # events ride along with the next message
            changes += [change(item) for item in batch if isinstance(item, Event)]
            del changes[:-MAX_CHANGES]
            batch = [item for item in batch if not isinstance(item, Event)]
        while batch:
            # chunks of at most PIPE_BUF bytes (unless one line is longer): each lands in
            # the pipe whole or not at all
            chunk: list[bytes] = []
            size = 0
            pushed: list[Incoming] = []
            while batch:
                line = notification_line(batch[0], changes, holds.senders.known)
                if chunk and size + len(line) + 1 > PUSH_CHUNK_BYTES:
                    break
                if isinstance(batch[0], Envelope):
                    changes = []
                pushed.append(batch.pop(0))
                chunk.append(line)
                size += len(line) + 1
            try:
                await transport.write_lines(chunk)
            except (BrokenPipeError, ConnectionResetError):
                log.info("client_gone", hint="stdout is closed; nothing more to push")
                return
            trace.mark("pushed")
            # only now: the cursor must never run ahead of the pipe. With no witness this
            # acknowledges and writes the cursor at once: nothing runs between the two writes
            await acks.posted("", pushed)
