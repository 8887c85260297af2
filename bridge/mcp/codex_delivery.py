"""Pushing into a Codex session: ``codex queue --thread T --message TEXT`` wakes an idle
interactive Codex in ~0.13 s (a busy one after its turn), with the text as if its user had
typed it (bridge/codex.py has the measured facts).

Until the model's first call of a bridge tool tells us the thread, messages wait, as in pull
mode (read_messages returns them). Where a queued message would not reach a model, nothing is
queued and the agent stays in pull mode, said in the log and in every tool result: under
``codex exec`` (a queued turn is started and aborted), with no ``codex`` binary, or when this
server does not see the session's Codex home (the command would fail).

One post at a time: what arrives while it waits for its turn (a turn running, the model
answering) goes into the next one, so a burst costs few turns. The cursor passes a post's
messages once the thread's session file shows a model reply sampled through it
(bridge.mcp.acks); a failed command gives them back, for read_messages and the next try.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import structlog
from redis.exceptions import RedisError

from bridge import codex
from bridge.mcp.acks import Acknowledgements
from bridge.mcp.posts import Senders, cut, first_post, noted, post_text, whole_ones
from bridge.redis.subscriber import Backoff
from bridge.room.connection import Incoming, Room
from bridge.room.envelope import Envelope, Event, Notice
from bridge.settings import Settings

log = structlog.get_logger("bridge.codex")

# what arrives this soon after the first message joins its post: a burst of 50 sends took
# 0.04-0.07 s (tests/test_codex_push.py); each wake of an idle session waits this long
COALESCE_SECONDS = 0.25
BUSY_LOOK_EVERY = 0.2  # while a turn runs, what arrives waits for it to end, in one post
MAX_BUSY_WAIT = 600.0  # a turn "running" longer (a Codex killed mid-turn): queue anyway
QUEUE_TIMEOUT = 20.0  # the command takes ~0.1 s; its first run may copy itself
# one command-line argument holds at most 131,072 bytes (Linux' MAX_ARG_STRLEN): 30,000
# characters are at most 120,000 bytes of UTF-8, with room for bridge's own lines
MAX_POST_CHARS = 30_000
RETRY_FIRST, RETRY_CAP = 1.0, 30.0


class CodexDelivery:
    def __init__(self, room: Room, settings: Settings, *,
                 screen: Callable[[Room, list[Incoming]], Awaitable[list[Incoming]]],
                 keep: Callable[[Incoming], None], senders: Senders,
                 env: dict[str, str] | None = None) -> None:
        self.room = room
        self.settings = settings
        self.screen = screen
        self.keep = keep  # for read_messages: the whole of a message too long to post
        self.senders = senders
        self.env = dict(os.environ if env is None else env)
        self.changes: list[str] = []
        self.turn: codex.Turn | None = None
        self.pull_reason = ""  # why nothing is pushed (the tools say so); "" while pushing
        self.failing = ""  # why the last `codex queue` failed ("" once one worked)
        self.posted = 0
        self._binary: Path | None = None
        self._rollout: codex.Rollout | None = None
        self._learnt = anyio.Event()
        self._pull_status = ""
        self._answered: set[str] = set()  # message ids a model already answered
        self._queued: dict[str, str] = {}  # message id -> the post still in Codex's queue

    def learn(self, turn: codex.Turn) -> None:
        """The thread this session is (from its first bridge tool call): push into it, or
        say why not."""
        if self.turn is not None:
            return
        self.turn = turn
        self._binary = codex.find_binary(self.env, self.settings.codex_bin)
        if turn.trigger == "exec":
            self._pull("this is `codex exec`, which drops a queued message (it starts its "
                       "turn and aborts it)", "codex exec")
        elif self._binary is None and self.settings.codex_bin:
            self._pull(f"BRIDGE_CODEX_BIN={self.settings.codex_bin} is not an executable "
                       f"file; point it at the codex binary, or unset it to use PATH's",
                       "bad BRIDGE_CODEX_BIN")
        elif self._binary is None:
            self._pull("no codex binary to queue with: none on PATH, no daemon copy under "
                       f"{codex.home(self.env)}; set BRIDGE_CODEX_BIN", "no codex binary")
        elif (problem := codex.rollout_problem(codex.home(self.env), turn.thread)):
            self._pull(f"{problem}; pass it to bridge with env_vars = [\"CODEX_HOME\"] in "
                       f"its [mcp_servers.bridge] entry", "Codex home not seen")
        else:
            log.info("codex_push", thread=turn.thread, codex=str(self._binary))
        self._learnt.set()

    def _read_back(self, thread: str) -> codex.Rollout:
        """The thread's rollout, and what an earlier bridge serve for it left: answered, or
        still queued (file reads: in a worker thread, not in a tool call)."""
        rollout = codex.Rollout(codex.home(self.env), thread)
        self._answered = set(rollout.answered)
        for text in codex.queued_posts(codex.home(self.env), thread):
            for message_id in codex.message_ids(text):
                self._queued[message_id] = text
        return rollout

    def _pull(self, why: str, short: str) -> None:
        self.pull_reason, self._pull_status = why, short
        log.warning("codex_pull", reason=why,
                    hint="messages wait for read_messages; the agent is told so in every "
                         "tool result")

    async def run(self) -> None:
        await self._learnt.wait()
        if self.pull_reason:  # operators see why (who, web, list_participants)
            with contextlib.suppress(RedisError, OSError):
                await self.room.set_status(f"not pushed ({self._pull_status}): reads with "
                                           f"read_messages")
            await anyio.sleep_forever()
        assert self.turn is not None and self._binary is not None
        self._rollout = await anyio.to_thread.run_sync(self._read_back, self.turn.thread)
        acks = Acknowledgements(self.room, self._rollout, path="codex", max_awaiting=1,
                                idle_grace=None, evidence="the thread's session file")
        async with anyio.create_task_group() as tg:
            tg.start_soon(acks.watch_forever)
            await self._post_forever(acks, self._binary, self.turn.thread)

    async def _post_forever(self, acks: Acknowledgements, binary: os.PathLike[str],
                            thread: str) -> None:
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while True:
            await acks.room_for_more()  # one post at a time: the rest joins the next one
            batch = await self.room.next_batch()
            await anyio.sleep(COALESCE_SECONDS)
            if self._rollout is not None and self._rollout.busy():
                # Codex would hold the post until the turn ends: gather what comes meanwhile,
                # and leave it all where the turn's own read_messages can take it
                self.room.give_back(batch)
                await self._turn_ended()
                batch = []
            batch += await self.room.next_batch(0)
            items = await self._known(acks, self._items(await self.screen(self.room, batch)))
            if not items:
                continue
            await self.senders.learn(self.room.participants, items)
            chunk, rest = first_post(items, MAX_POST_CHARS)
            self.room.give_back(rest)
            posted = [cut(item, MAX_POST_CHARS) for item in chunk]
            text = post_text(posted, self.senders.known, self.changes, client="codex")
            problem = await self._queue(binary, thread, text)
            self.failing = problem or ""
            if problem is not None:
                self.room.give_back(chunk)
                log.warning("codex_queue_failed", error=problem, waiting=len(chunk),
                            retry_in=round(backoff.delay, 1),
                            hint="the messages wait for read_messages or the next attempt")
                await backoff.wait()
                continue
            backoff.reset()
            self.posted += 1
            self.changes = []
            await acks.posted(text, whole_ones(chunk, posted, self.keep), queued=True)

    async def _turn_ended(self) -> None:
        """Wait while a turn of the session runs (up to MAX_BUSY_WAIT)."""
        assert self._rollout is not None
        with anyio.move_on_after(MAX_BUSY_WAIT):
            while self._rollout.busy():
                await anyio.sleep(BUSY_LOOK_EVERY)

    async def _known(self, acks: Acknowledgements,
                     items: list[Envelope | Notice]) -> list[Envelope | Notice]:
        """The items to post: not those an earlier bridge serve for this thread posted, which
        a model answered (acknowledged now) or which still wait in Codex's queue (they are
        awaited, not queued twice)."""
        if not (self._answered or self._queued):
            return items
        answered = [i for i in items if isinstance(i, Envelope) and i.id in self._answered]
        if answered:
            log.info("codex_already_answered", messages=len(answered))
            await acks.posted("", answered, queued=True, taken=True)
        waiting: dict[str, list[Incoming]] = {}
        for item in items:
            if isinstance(item, Envelope) and item.id in self._queued:
                waiting.setdefault(self._queued.pop(item.id), []).append(item)
        for text, queued in waiting.items():
            log.info("codex_already_queued", messages=len(queued))
            await acks.posted(text, queued, queued=True)
        skip = {id(i) for i in answered} | {id(i) for q in waiting.values() for i in q}
        return [i for i in items if id(i) not in skip]

    def _items(self, batch: list[Incoming]) -> list[Envelope | Notice]:
        items: list[Envelope | Notice] = []
        for item in batch:
            if isinstance(item, Event):
                noted(self.changes, item)
            else:
                items.append(item)
        return items

    async def _queue(self, binary: os.PathLike[str], thread: str, text: str) -> str | None:
        """Run `codex queue`; None when it says it queued the message, else why not."""
        try:
            with anyio.fail_after(QUEUE_TIMEOUT):
                done = await anyio.run_process(
                    [os.fspath(binary), "queue", "--thread", thread, "--message", text],
                    env=self.env, check=False, stdin=subprocess.DEVNULL)
        except TimeoutError:
            return f"codex queue took over {QUEUE_TIMEOUT:g} s"
        except OSError as e:
            return f"cannot run {os.fspath(binary)}: {e.strerror or e}"
        if done.returncode != 0:
            said = (done.stderr or done.stdout).decode(errors="replace").strip()
            return f"codex queue exited {done.returncode}: {said[-300:]}"
        return None
