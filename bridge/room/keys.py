"""Every Redis key and channel name bridge uses is built here, and nowhere else.

All names of a room carry the hash tag ``{room}`` so that a room lives in one Redis Cluster
slot: multi-key Lua scripts work and sharded pub/sub keeps the room on one shard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "bridge"
# \Z, not $: "$" also matches before a trailing newline, and "bob\n" is not a name
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}\Z")
ROOM_PATTERN = NAME_PATTERN


@dataclass(frozen=True)
class Keys:
    room: str

    @property
    def base(self) -> str:
        return f"{PREFIX}:{{{self.room}}}"

    def agent(self, name: str) -> str:
        """HASH: presence record of one agent; expires unless refreshed."""
        return f"{self.base}:agent:{name}"

    @property
    def agents(self) -> str:
        """ZSET: agent name -> presence expiry (ms since epoch)."""
        return f"{self.base}:agents"

    @property
    def log(self) -> str:
        """STREAM: every message of the room."""
        return f"{self.base}:log"

    def cursor(self, name: str) -> str:
        """STRING: id of the last log entry delivered to that agent."""
        return f"{self.base}:cursor:{name}"

    @property
    def cursor_prefix(self) -> str:
        """Prefix of every cursor key; the send script appends a holder's name."""
        return self.cursor("")

    @property
    def readers(self) -> str:
        """ZSET: agent name -> until when (ms since epoch) the log holds its unread messages:
        while it is present, and BRIDGE_AWAY_HOLD after (bridge.room.retention)."""
        return f"{self.base}:readers"

    @property
    def unread(self) -> str:
        """HASH: holder name -> "FIRST LAST FLOOR": the seqs of the first and the last message
        named to it since it last had nothing unread, and up to where its own broadcasts show
        it had read; field `*`: "NEED SEQ", the most any holder needed at SEQ
        (bridge.room.retention)."""
        return f"{self.base}:unread"

    @property
    def broadcasts(self) -> str:
        """ZSET: "SEQ SENDER" -> SEQ, the broadcasts still in the log (bridge.room.retention)."""
        return f"{self.base}:broadcasts"

    @property
    def epoch(self) -> str:
        """STRING: a random id of this room log's life. A new one means the log was reset
        (a new, empty Redis at the same address; FLUSHALL): receivers then start over."""
        return f"{self.base}:epoch"

    @property
    def seq(self) -> str:
        """STRING: counter of messages ever logged in the room (each entry's `seq` field)."""
        return f"{self.base}:seq"

    def sent(self, name: str, nonce: str) -> str:
        """STRING, short TTL: id of a message already logged under this send attempt."""
        return f"{self.base}:sent:{name}:{nonce}"

    def rate(self, name: str) -> str:
        """HASH, expires when full again: the sender's token bucket (tokens, at ms)."""
        return f"{self.base}:rate:{name}"

    def direct(self, name: str) -> str:
        """Channel: live delivery to one agent."""
        return f"{self.base}:to:{name}"

    @property
    def broadcast(self) -> str:
        """Channel: messages to everyone in the room."""
        return f"{self.base}:all"

    @property
    def events(self) -> str:
        """Channel: joined / left / status events."""
        return f"{self.base}:events"

    @property
    def pattern(self) -> str:
        """PSUBSCRIBE pattern covering all live traffic of the room."""
        return f"{self.base}:*"

    def task(self, task_id: str) -> str:
        """HASH: one task of the board (bridge.room.tasks): id, title, detail, creator,
        assignee, status, waits_for, rev, by, created, updated (ms, Redis' clock), sig."""
        return f"{self.base}:task:{task_id}"

    @property
    def task_prefix(self) -> str:
        """Prefix of every task hash; the task script appends the id."""
        return self.task("")

    def task_history(self, task_id: str) -> str:
        """LIST, capped: "MS ACTOR ACTION…" entries of one task, newest first."""
        return f"{self.base}:task-history:{task_id}"

    @property
    def task_history_prefix(self) -> str:
        """Prefix of every task history; the task script appends the id."""
        return self.task_history("")

    @property
    def tasks(self) -> str:
        """ZSET: task id -> its number (t7 -> 7), every task of the board."""
        return f"{self.base}:tasks"

    @property
    def tasks_open(self) -> str:
        """ZSET: task id -> its number, the tasks not done (the per-room limit counts them)."""
        return f"{self.base}:tasks-open"

    @property
    def task_seq(self) -> str:
        """STRING: counter of tasks ever created in the room (t1, t2, …)."""
        return f"{self.base}:task-seq"

    @property
    def claims(self) -> str:
        """ZSET: file claim "AGENT PATTERN" -> its expiry (ms, Redis' clock)
        (bridge.room.claims)."""
        return f"{self.base}:claims"

    @property
    def claim_records(self) -> str:
        """HASH: file claim "AGENT PATTERN" -> its record, JSON: mode, reason, since (ms),
        ttl (ms), sig."""
        return f"{self.base}:claim-records"

    def claims_of(self, name: str) -> str:
        """SET: the ids ("AGENT PATTERN") of one agent's file claims."""
        return f"{self.base}:claims-of:{name}"

    @property
    def claims_of_prefix(self) -> str:
        """Prefix of every agent's set of claims; the claims script appends the name."""
        return self.claims_of("")

    @property
    def agent_prefix(self) -> str:
        """Prefix of every presence hash; the listing script appends the name."""
        return self.agent("")
