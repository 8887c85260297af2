"""The `bridge web` application: the pages (static files, no build step), the JSON API, the
event stream of a room, and sending as an operator.

Routes: ``/`` the rooms, ``/r/ROOM`` a room's page, ``/api/rooms``, ``/api/r/ROOM/history``,
``/thread/ID``, ``/team``, ``/board`` (tasks and claims), ``/task/ID``, ``/stream``
(server-sent events), ``/send`` and ``/tasks`` (POST, token: send, change the board as the
operator), and ``/api/login`` (POST, token: the cookie for reading on a non-loopback bind).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bridge.ops.web import board as board_view
from bridge.ops.web import feed
from bridge.ops.web.hub import Hub, frame
from bridge.ops.web.security import COOKIE, Guard, Guarded, Refused
from bridge.ops.web.steer import is_id, send_as
from bridge.redis.clients import make_client
from bridge.redis.paging import PAGE
from bridge.room.keys import NAME_PATTERN, PREFIX, ROOM_PATTERN, Keys
from bridge.room.roster import read_roster
from bridge.room.signing import make_signer
from bridge.settings import Settings

STATIC = Path(__file__).parent / "static"
MAX_ROOMS = 64  # rooms watched at once (a hub each)
KEEPALIVE = 15.0  # seconds; also how soon a closed page's stream is noticed
MAX_BODY = 256 * 1024


@dataclass
class Web:
    settings: Settings
    url: str
    guard: Guard
    redis: Redis | None = None
    blocker: Redis | None = None
    subscriber: Redis | None = None
    tasks: TaskGroup | None = None
    hubs: dict[str, Hub] = field(default_factory=dict)

    def signer(self, room: str) -> Any:
        return make_signer(self.settings.secret, room, self.settings.replay_window)

    def client(self) -> Redis:
        assert self.redis is not None
        return self.redis

    def hub(self, room: str) -> Hub:
        if room not in self.hubs:
            if len(self.hubs) >= MAX_ROOMS:
                raise Refused(503, f"bridge web watches {MAX_ROOMS} rooms at most; restart it")
            assert self.tasks is not None and self.blocker and self.subscriber
            hub = Hub(room, self.client(), self.blocker, self.subscriber, self.signer(room),
                      self.url)
            self.hubs[room] = hub
            self.tasks.start_soon(hub.run)
        return self.hubs[room]

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.redis = make_client(self.url)
        # no retries inside these: their loops reconnect, and report it on the page
        self.blocker, self.subscriber = make_client(self.url, retries=0), \
            make_client(self.url, retries=0)
        try:
            async with anyio.create_task_group() as tg:
                self.tasks = tg
                yield
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for client in (self.redis, self.blocker, self.subscriber):
                    await client.aclose()

    # ------------------------------------------------------------ requests
    def room(self, request: Request) -> str:
        if not self.guard.may_read(dict(request.headers)):
            raise Refused(401, "this bridge web needs its token: open the address it printed "
                               "(it ends in #token=…)")
        room = request.path_params.get("room", self.settings.room)
        if not ROOM_PATTERN.match(room):
            raise Refused(404, f"no such room: {room[:40]!r}")
        return str(room)

    async def rooms(self, request: Request) -> Response:
        self.room(request)
        redis = self.client()
        found: set[str] = {self.settings.room}
        try:
            for pattern in (Keys("*").agents, Keys("*").log):
                async for key in redis.scan_iter(match=pattern, count=1000):
                    text = key.decode(errors="replace")
                    name = text[len(PREFIX) + 2:].split("}", 1)[0]
                    if ROOM_PATTERN.match(name):
                        found.add(name)
        except NoPermissionError:
            pass  # a user of one room may not SCAN: that room is the list
        listed = []
        for name in sorted(found)[:MAX_ROOMS]:
            _, people = await read_roster(redis, name, None)
            listed.append({"room": name, "agents": len(people),
                           "messages": int(await redis.xlen(Keys(name).log))})
        return JSONResponse({"rooms": listed, "default": self.settings.room})

    async def history(self, request: Request) -> Response:
        room, query = self.room(request), request.query_params
        before = query.get("before", "")
        agent = query.get("agent", "")
        if (before and not is_id(before)) or (agent and not NAME_PATTERN.match(agent)):
            raise Refused(400, "before must be a log id and agent a name")
        limit_text = query.get("limit", "100")
        if not (limit_text.isascii() and limit_text.isdigit() and len(limit_text) < 6):
            raise Refused(400, "limit must be a whole number")
        limit = min(max(int(limit_text), 1), PAGE)
        # the log's end first, and the page up to it: the page's stream resumes from there,
        # so an entry added meanwhile comes by the stream, not lost between the two
        newest: Any = await self.client().xrevrange(Keys(room).log, "+", "-", count=1)
        end = newest[0][0].decode() if newest else "0-0"
        page = await feed.history(self.client(), room, self.signer(room), before=before,
                                  limit=limit, match=feed.Filter(agent, query.get("q", "")[:200]),
                                  upto=end)
        page["end"] = end
        return JSONResponse(page)

    async def thread(self, request: Request) -> Response:
        room, entry_id = self.room(request), request.path_params["entry"]
        if not is_id(entry_id):
            raise Refused(400, "not a log id")
        return JSONResponse(await feed.thread(self.client(), room, self.signer(room), entry_id))

    async def team(self, request: Request) -> Response:
        room = self.room(request)
        seconds, micros = await self.client().time()
        return JSONResponse(await feed.team(self.client(), room,
                                            int(seconds) * 1000 + int(micros) // 1000))

    async def stream(self, request: Request) -> Response:
        room = self.room(request)
        after = request.headers.get("last-event-id") or request.query_params.get("after", "")
        if after and not is_id(after):
            raise Refused(400, "Last-Event-ID must be a log id")
        hub = self.hub(room)
        if not after:
            newest: Any = await self.client().xrevrange(Keys(room).log, "+", "-", count=1)
            after = newest[0][0].decode() if newest else "0-0"
        return StreamingResponse(self._events(hub, after), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})

    async def _events(self, hub: Hub, last: str) -> AsyncIterator[bytes]:
        """The log after ``last``, then as it grows; with the hub's events between."""
        signer, taken, log_key = self.signer(hub.room), hub.count, hub.keys.log
        yield b"retry: 1000\n\n" + hub.roster + hub.redis_state
        while True:
            signal = hub.changed  # taken before reading: a wake-up meanwhile is not lost
            try:
                page: Any = await self.client().xrange(log_key, f"({last}", "+", count=PAGE)
            except (RedisError, OSError):
                page = None  # the hub says so on the page, and wakes us when Redis is back
            for entry_id, fields in page or []:
                last = entry_id.decode()
                messages = feed.decoded([(entry_id, fields)])
                yield (frame("message", feed.message_record(messages[0], signer), last)
                       if messages else frame("skip", {}, last))
            if page is not None and len(page) == PAGE:
                continue
            for data in hub.since(taken):
                yield data
            taken = hub.count
            with anyio.move_on_after(KEEPALIVE if page is not None else 1.0) as quiet:
                await signal.wait()
            if quiet.cancelled_caught:
                yield b": keepalive\n\n"

    async def login(self, request: Request) -> Response:
        if not self.guard.bearer(dict(request.headers)):
            raise Refused(401, "wrong or missing token")
        response = Response(status_code=204)
        response.set_cookie(COOKIE, self.guard.token, httponly=True, samesite="strict",
                            path="/")
        return response

    async def posted(self, request: Request, what: str) -> Any:
        """The JSON body of a POST that changes the room: it needs the token (a header, never
        the cookie); None when the body is not JSON."""
        if not self.guard.bearer(dict(request.headers)):
            raise Refused(401, f"{what} needs the token: open the address bridge web printed "
                               f"(it ends in #token=…), or set BRIDGE_WEB_TOKEN")
        body = await request.body()
        if len(body) > MAX_BODY:
            raise Refused(413, "the message is too large")
        try:
            return json.loads(body)
        except ValueError:
            return None

    async def send(self, request: Request) -> Response:
        room = self.room(request)
        data = await self.posted(request, "sending")
        return JSONResponse(await send_as(self.settings, room, data))

    async def board(self, request: Request) -> Response:
        room = self.room(request)
        return JSONResponse(await board_view.board(self.client(), self.settings, room))

    async def task(self, request: Request) -> Response:
        room = self.room(request)
        return JSONResponse(await board_view.task(self.client(), self.settings, room,
                                             request.path_params["task"]))

    async def change_task(self, request: Request) -> Response:
        room = self.room(request)
        data = await self.posted(request, "changing the board")
        return JSONResponse(await board_view.change(self.client(), self.settings, room, data))


def page(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        return FileResponse(STATIC / name, media_type="text/html")

    return serve


def handled(handler: Callable[[Request], Awaitable[Response]]
            ) -> Callable[[Request], Awaitable[Response]]:
    """Refused and Redis failures as a JSON ``{"error"}`` the page shows."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Refused as e:
            return JSONResponse({"error": e.error}, status_code=e.status)
        except (RedisError, OSError) as e:
            return JSONResponse({"error": f"Redis failed: {e or type(e).__name__}"},
                                status_code=503)

    return run


def build(settings: Settings, url: str, guard: Guard) -> tuple[Guarded, Web]:
    web = Web(settings, url, guard)
    api = "/api/r/{room}"
    routes = [
        Route("/", page("index.html")),
        Route("/r/{room}", page("room.html")),
        Route("/api/rooms", handled(web.rooms)),
        Route(f"{api}/history", handled(web.history)),
        Route(f"{api}/thread/{{entry}}", handled(web.thread)),
        Route(f"{api}/team", handled(web.team)),
        Route(f"{api}/board", handled(web.board)),
        Route(f"{api}/task/{{task}}", handled(web.task)),
        Route(f"{api}/stream", handled(web.stream)),
        Route(f"{api}/send", handled(web.send), methods=["POST"]),
        Route(f"{api}/tasks", handled(web.change_task), methods=["POST"]),
        Route("/api/login", handled(web.login), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=web.lifespan)
    return Guarded(app, guard), web
