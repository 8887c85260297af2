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
import shutil
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
from bridge.ops.demo_story import CAST, DemoFailed, Sent, play
from bridge.settings import Settings, redact

BRIDGE = [sys.executable, "-m", "bridge"]
STEP_TIMEOUT = 20.0  # seconds for one message to arrive, or one tool call to be answered
START_TIMEOUT = 20.0  # for a process to start and answer (bridge web: print its address)
STOP_TIMEOUT = 5.0  # for a process to stop by itself before it is killed
MAX_LINE = 16 * 1024 * 1024
MESSAGE = re.compile(r"\[(?P<id>\d+-\d+)\] from (?P<sender>\S+) to [^\n]*:\n(?P<text>.*)", re.S)
REAL_SETUP = ("A real setup is the same with Claude Code or Codex sessions in place of the "
              "script: each runs `bridge serve` as its MCP server (the README: \"Two Claude Codes "
              "on one machine\", \"Codex\").")


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
    """One scripted agent: its `bridge serve` process, and the MCP client that drives it."""
    name: str
    role: str
    room: str
    log: Path
    process: Process | None = None
    lines: BufferedByteReceiveStream | None = None
    last_id: int = 0
    inbox: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (sender, text)

    async def launch(self) -> None:
        with self.log.open("ab") as stderr:  # the child has its own copy of the descriptor
            self.process = await anyio.open_process(
                [*BRIDGE, "serve", "--room", self.room, "--name", self.name, "--role",
                 self.role, "--delivery", "pull"], stderr=stderr)
        assert self.process.stdout is not None
        self.lines = BufferedByteReceiveStream(self.process.stdout)

    def failed(self, what: str) -> DemoFailed:
        code = self.process.returncode if self.process else None
        gone = "" if code is None else \
            f" (its bridge serve exited with status {code}){_last_lines(self.log)}"
        return DemoFailed(f"{self.name}: {what}{gone}")

    async def _write(self, message: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        try:
            await self.process.stdin.send(json.dumps(message).encode() + b"\n")
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            raise self.failed(f"its bridge serve stopped reading "
                              f"({message.get('method')})") from None

    async def request(self, method: str, params: dict[str, Any], timeout: float) -> Any:
        self.last_id += 1
        await self._write({"jsonrpc": "2.0", "id": self.last_id, "method": method,
                           "params": params})
        assert self.process is not None and self.lines is not None
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
        away = re.search(r"Away, queued until they return: ([^.]+)\.", answer)
        return Sent(sent.group(1), self.name, text,
                    tuple(away.group(1).split(", ")) if away else ())

    async def receive(self, message: Sent) -> None:
        """read_messages until ``message`` is among what arrived, or STEP_TIMEOUT."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while message.id not in self.inbox:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.failed(f"{message.sender}'s message {message.id} did not arrive "
                                  f"within {STEP_TIMEOUT:g} s")
            await self._read(round(left, 1))
        if self.inbox.pop(message.id) != (message.sender, message.text):
            raise self.failed(f"{message.sender}'s message {message.id} arrived altered")

    async def _read(self, wait: float) -> None:
        text = await self.tool("read_messages", {"wait_seconds": wait},
                               timeout=wait + STEP_TIMEOUT)
        for block in re.split(r"\n\n(?=\[)", text):  # messages, and events that ride along
            if found := MESSAGE.fullmatch(block):
                self.inbox[found["id"]] = (found["sender"], found["text"])

    async def leave(self) -> None:
        """Its session ends: one more read_messages acknowledges what the last one returned
        (pull mode moves the cursor on the next call, as a client's next call would), then
        its bridge serve stops and leaves the room."""
        await self._read(0)
        process, self.process = self.process, None
        assert process is not None
        await _stop(process, False)
        if process.returncode != 0:
            raise self.failed(f"its bridge serve exited with status {process.returncode} "
                              f"on leaving{_last_lines(self.log)}")

    async def rejoin(self) -> None:
        """A new session under the same name: a new bridge serve joins the room."""
        await self.launch()
        await self.initialize()


def _say(text: str = "") -> None:
    print(text, flush=True)


async def _bridge(*args: str, env: dict[str, str] | None = None) -> None:
    """A `bridge` command whose output goes to ours, as a person would have typed it."""
    _say(f"$ bridge {' '.join(args)}")
    done = await anyio.run_process([*BRIDGE, *args], stdout=None, stderr=None, check=False,
                                   env={**os.environ, **(env or {})})
    if done.returncode != 0:  # it said why on stderr
        raise DemoFailed(f"`bridge {' '.join(args)}` failed (exit status {done.returncode})")


async def _web(room: str, logs: Path, processes: list[Process]) -> str:
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
    processes.append(process)
    assert process.stdout is not None
    line = b""
    with anyio.move_on_after(START_TIMEOUT), contextlib.suppress(anyio.EndOfStream,
                                                                 anyio.IncompleteRead):
        line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 65536)
    address = re.search(r"http://\S+", line.decode(errors="replace"))
    if address is None:
        await _stop(process, True)
        processes.remove(process)
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
    logs = Path(tempfile.mkdtemp(prefix="bridge-demo-"))  # the children's stderr
    web: list[Process] = []
    cast = {name: Agent(name, role, room, logs / f"{name}.log") for name, role in CAST.items()}

    async def run() -> None:
        nonlocal told
        from bridge.ops.commands import redis_client

        async with redis_client(settings):  # reachable (the embedded one started) or a clear error
            pass
        try:
            await tell()
            told = True
            if hold > 0:
                _say(f"\nholding for {hold:g} s: the agents stay in the room and the page stays "
                     f"up (Ctrl-C ends it sooner)")
                await anyio.sleep(hold)
        finally:
            with anyio.CancelScope(shield=True):
                await cleanup()

    async def tell() -> None:
        page = await _web(room, logs, web)
        _say(page + (" (--hold 120 keeps it up after the story: make demo ARGS='--hold 120')"
                     if web and not hold else ""))
        for agent in cast.values():  # started together, joined in order
            await agent.launch()
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
        nonlocal kept
        stopping = [(process, True) for process in web] + [
            (agent.process, False) for agent in cast.values() if agent.process is not None]
        async with anyio.create_task_group() as tg:
            for process, terminate in stopping:  # web on SIGTERM, an agent when stdin closes
                tg.start_soon(_stop, process, terminate)
        try:
            removed = f"its {await _wipe(settings)} keys removed"
        except (BridgeError, RedisError, OSError) as e:  # the story's own error comes first
            kept = f"room {room}'s keys could not be removed: {e or type(e).__name__}"
            removed = "its keys NOT removed"
        _say(f"\ncleaned up: {len(stopping)} processes stopped; room {room}: {removed}")

    try:
        interrupted = await until_interrupted(run)
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    if kept:
        raise DemoFailed(kept)
    if interrupted and not told:
        _say("interrupted: the story was not finished")
        return 130
    _say("\nThat was bridge with scripted agents (no model, no API key): real `bridge serve` "
         f"processes on {where}.\n{REAL_SETUP}")
    return 0
