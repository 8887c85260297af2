"""`bridge demo`: bridge's main job, played by scripted agents; no model, no API key.

Three real `bridge serve` processes (carol the manager, alice and bob the developers) join a
room of their own (``demo-XXXXXX``) on the configured Redis, the embedded one by default. This
module speaks MCP to each over stdio as a client does (``initialize``, the ``initialized``
notification, ``tools/call``) and lets bridge.ops.demo_story drive them; the agents use pull
delivery, so each reads what arrived with read_messages, and every step waits for the actual
arrival of the message it answers, up to a deadline. Around the story: `bridge web` on a free
loopback port (when the web extra is installed), `bridge who`, and `bridge history` to print
the conversation as `bridge tail` shows it. At the end, or on Ctrl-C or an error, every process
is stopped and the room's keys are removed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from redis.exceptions import RedisError

from bridge import __version__
from bridge.errors import BridgeError
from bridge.ops.demo_story import CAST, Sent, play
from bridge.settings import Settings, redact

BRIDGE = [sys.executable, "-m", "bridge"]
STEP_TIMEOUT = 20.0  # seconds for one message to arrive, or one tool call to be answered
START_TIMEOUT = 20.0  # for a process to start and answer (bridge web: print its address)
STOP_TIMEOUT = 5.0  # for a process to stop by itself before it is killed
MAX_LINE = 16 * 1024 * 1024
MESSAGE = re.compile(r"\[(?P<id>\d+-\d+)\] from (?P<sender>\S+) to [^\n]*:\n(?P<text>.*)", re.S)
REAL_SETUP = ("A real setup is the same with Claude Code or Codex sessions in place of the "
              "script: each runs `bridge serve` as its MCP server (the README's quick start).")


class DemoFailed(BridgeError):
    """A step of the demo did not happen: exit 1, with this as the one line that says why."""


def _last_lines(path: Path, count: int = 3) -> str:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").strip().splitlines()[-count:]
        if lines:
            return "; its last log lines: " + " | ".join(line[:300] for line in lines)
    return ""


async def _stop(process: Process, terminate: bool) -> None:
    """Stop a child: it goes by itself (stdin closed, or SIGTERM), or is killed."""
    with contextlib.suppress(ProcessLookupError):
        if terminate:
            process.terminate()
        elif process.stdin is not None:
            await process.stdin.aclose()
        with anyio.move_on_after(STOP_TIMEOUT):
            await process.wait()
        if process.returncode is None:
            process.kill()
    await process.aclose()  # its pipes; it has exited


@dataclass
class Agent:
    """One scripted agent: a `bridge serve` process and the MCP client that drives it."""
    name: str
    process: Process
    log: Path
    lines: BufferedByteReceiveStream
    last_id: int = 0
    inbox: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (sender, text)

    @classmethod
    async def launch(cls, name: str, role: str, room: str, logs: Path) -> Agent:
        log = logs / f"{name}.log"
        with log.open("wb") as stderr:  # the child has its own copy of the descriptor
            process = await anyio.open_process(
                [*BRIDGE, "serve", "--room", room, "--name", name, "--role", role,
                 "--delivery", "pull"], stderr=stderr)
        assert process.stdout is not None
        return cls(name, process, log, BufferedByteReceiveStream(process.stdout))

    def failed(self, what: str) -> DemoFailed:
        code = self.process.returncode
        gone = "" if code is None else \
            f" (its bridge serve exited with status {code}){_last_lines(self.log)}"
        return DemoFailed(f"{self.name}: {what}{gone}")

    async def _write(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            await self.process.stdin.send(json.dumps(message).encode() + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            raise self.failed(f"its bridge serve stopped reading "
                              f"({message.get('method')})") from None

    async def request(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        self.last_id += 1
        await self._write({"jsonrpc": "2.0", "id": self.last_id, "method": method,
                           "params": params})
        with anyio.move_on_after(timeout):
            while True:  # skip what is not our answer (a notification)
                try:
                    line = await self.lines.receive_until(b"\n", MAX_LINE)
                except (anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound):
                    await self.process.wait()
                    raise self.failed(f"no answer to {method}") from None
                answer = json.loads(line)
                if answer.get("id") != self.last_id:
                    continue
                if "error" in answer:
                    raise self.failed(f"{method} failed: {answer['error'].get('message')}")
                return answer["result"]
        raise self.failed(f"no answer to {method} within {timeout:g} s")

    async def initialize(self) -> None:
        await self.request("initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "bridge-demo", "version": __version__}}, START_TIMEOUT)
        await self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def tool(self, name: str, arguments: dict[str, Any],
                   timeout: float = STEP_TIMEOUT) -> str:
        result = await self.request("tools/call", {"name": name, "arguments": arguments},
                                    timeout)
        text = "".join(part.get("text", "") for part in result.get("content", []))
        if result.get("isError"):
            raise self.failed(f"{name} failed: {text}")
        return text.rpartition("\n\n(")[0] or text  # without the "(no unread messages)" note

    # ---------------------------------------------------------------- what the story calls
    async def set_status(self, text: str) -> None:
        await self.tool("set_status", {"text": text})

    async def send(self, to: str | list[str], text: str, reply_to: Sent | None = None) -> Sent:
        arguments = {"to": to, "text": text, **({"reply_to": reply_to.id} if reply_to else {})}
        answer = await self.tool("send_message", arguments)
        sent = re.search(r"message_id (\d+-\d+)", answer)
        if sent is None:
            raise self.failed(f"send_message answered without a message id: {answer[:200]}")
        return Sent(sent.group(1), self.name, text)

    async def receive(self, message: Sent) -> None:
        """read_messages until ``message`` is among what arrived, or STEP_TIMEOUT."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while message.id not in self.inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.failed(f"{message.sender}'s message {message.id} did not arrive "
                                  f"within {STEP_TIMEOUT:g} s")
            text = await self.tool("read_messages", {"wait_seconds": round(left, 1)},
                                   timeout=left + STEP_TIMEOUT)
            for block in re.split(r"\n\n(?=\[)", text):
                if found := MESSAGE.fullmatch(block):
                    self.inbox[found["id"]] = (found["sender"], found["text"])
        if self.inbox.pop(message.id) != (message.sender, message.text):
            raise self.failed(f"{message.sender}'s message {message.id} arrived altered")


def _say(text: str = "") -> None:
    print(text, flush=True)


async def _bridge(*args: str, env: dict[str, str] | None = None) -> None:
    """A `bridge` command whose output goes to ours, as a person would have typed it."""
    _say(f"$ bridge {' '.join(args)}")
    await anyio.run_process([*BRIDGE, *args], stdout=None, stderr=None, check=False,
                            env={**os.environ, **(env or {})})


async def _web(room: str, logs: Path, processes: list[tuple[Process, bool]]) -> str:
    """Start `bridge web` for the room on a free loopback port (into ``processes``); the
    address it printed, or why there is no page."""
    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        return (f"no live page: bridge web needs the web extra ({', '.join(missing)} "
                f"missing): pip install 'bridge-agents[web]' (make install has it)")
    log = logs / "web.log"
    with log.open("wb") as stderr:
        process = await anyio.open_process(
            [*BRIDGE, "web", "--room", room, "--bind", "127.0.0.1:0"], stderr=stderr)
    processes.append((process, True))
    assert process.stdout is not None
    line = b""
    with anyio.move_on_after(START_TIMEOUT), contextlib.suppress(anyio.EndOfStream,
                                                                 anyio.IncompleteRead):
        line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 65536)
    address = re.search(r"http://\S+", line.decode(errors="replace"))
    if address is None:
        await _stop(process, True)
        processes.remove((process, True))
        return f"no live page: bridge web did not start{_last_lines(log)}"
    return f"watch it live: {address.group(0)}"


async def _wipe(settings: Settings) -> int:
    """Remove every key of the demo's room; how many there were."""
    from bridge.ops.commands import redis_client
    from bridge.room.keys import Keys

    async with redis_client(settings) as redis:
        keys = [key async for key in redis.scan_iter(match=Keys(settings.room).pattern,
                                                     count=1000)]
        for start in range(0, len(keys), 500):
            await redis.delete(*keys[start:start + 500])
    return len(keys)


async def demo(*, hold: float) -> int:
    """Play the story; 0 once it has been told and everything is cleaned up."""
    from bridge.ops.human import until_interrupted

    room = f"demo-{secrets.token_hex(3)}"
    settings = Settings.from_env(room=room)
    where = (f"the Redis at {redact(settings.redis_url)} (BRIDGE_REDIS_URL)"
             if settings.redis_url else "the embedded Redis (bridge's own, per user)")
    _say("bridge demo: the three agents here are SCRIPTED (no model, no API key): carol the "
         "manager, alice and bob the developers.\nEach is a real `bridge serve` (MCP over "
         "stdio) driven by a fixed script instead of a model.")
    _say(f"room {room} on {where}; it is removed at the end")
    told, kept = False, ""
    processes: list[tuple[Process, bool]] = []  # and whether it stops on SIGTERM

    async def run() -> None:
        nonlocal told
        from bridge.ops.commands import redis_client

        async with redis_client(settings):  # reachable (the embedded one started) or a clear error
            pass
        with tempfile.TemporaryDirectory(prefix="bridge-demo-") as logs:
            try:
                await tell(Path(logs))
                told = True
                if hold > 0:
                    _say(f"\nholding for {hold:g} s: the agents stay in the room and the page "
                         f"stays up (Ctrl-C ends it sooner)")
                    await anyio.sleep(hold)
            finally:
                with anyio.CancelScope(shield=True):
                    await cleanup()

    async def tell(logs: Path) -> None:
        page = await _web(room, logs, processes)
        _say(page + (" (--hold 120 keeps it up after the story: make demo ARGS='--hold 120')"
                     if processes and not hold else ""))
        cast = {}
        for name, role in CAST.items():  # started together, joined in order
            cast[name] = await Agent.launch(name, role, room, logs)
            processes.append((cast[name].process, False))
        for agent in cast.values():
            await agent.initialize()  # answered once the agent is in the room
        _say()
        await _bridge("who", "--room", room)
        _say("\nthe story (each step starts once the message it answers has arrived):")
        start = time.monotonic()
        await play(cast, lambda step: _say(f"  {(time.monotonic() - start) * 1e3:5.0f} ms  {step}"))
        _say("\nthe conversation, as `bridge tail` shows it:")
        # whole lines even on a terminal: the contract is the point
        await _bridge("history", "--room", room, env={"COLUMNS": "1000"})

    async def cleanup() -> None:
        async with anyio.create_task_group() as tg:
            for process, terminate in processes:
                tg.start_soon(_stop, process, terminate)
        nonlocal kept
        try:
            removed = f"its {await _wipe(settings)} keys removed"
        except (BridgeError, RedisError, OSError) as e:  # the story's own error comes first
            kept = f"room {room}'s keys could not be removed: {e or type(e).__name__}"
            removed = "its keys NOT removed"
        _say(f"\ncleaned up: {len(processes)} processes stopped; room {room}: {removed}")

    interrupted = await until_interrupted(run)
    if kept:
        raise DemoFailed(kept)
    if interrupted and not told:
        _say("interrupted: the story was not finished")
        return 130
    _say("\nThat was bridge with scripted agents (no model, no API key): real `bridge serve` "
         f"processes on {where}.\n{REAL_SETUP}")
    return 0
