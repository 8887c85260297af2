"""bridge's Lua scripts as a Redis Functions library, and how bridge calls them.

Why functions: with Redis >= 7.0 an agent's ACL user may call bridge's functions (FCALL, one
first-argument rule per function) and nothing else; with EVAL, EVALSHA or SCRIPT LOAD a room
member could run a script of its own that loops and stops every room on the Redis.

The library is built here, at import, from the scripts declared beside the Python that calls
them (``bridge.room.presence_records``, ``bridge.room.sending``,
``bridge.room.task_records``, ``bridge.room.claim_records``; how one is declared and called
is ``bridge.redis.lua``): each
becomes ``function(KEYS, ARGV) <source> end``. Its version is a hash of those sources, and
the version is part of the library's and each function's name
(``bridge_<version>_send``). So two bridge versions in one room (a rolling upgrade) each call
their own functions, side by side: nobody replaces anybody's library, and no bridge ever runs
another version's code.

Which path, per Redis client:
- Redis >= 7.0: FCALL. The library missing (a new Redis, another bridge version) is loaded with
  FUNCTION LOAD when this user may (the embedded Redis, the default user, an admin); a user
  that may not (an ACL user) gets one line saying an administrator must run
  ``bridge functions load``.
- Redis 6.2 (no FCALL): the same bodies by EVALSHA, loaded with SCRIPT LOAD when missing. Such
  a user must be allowed EVALSHA, so there agents are not kept from running their own Lua:
  the `bridge acl` rules are for Redis 7 and newer.
- Redis Cluster: redis-py routes FCALL (and EVALSHA) by its keys, so a room's call runs on the
  primary of the room's slot. A library is per node: it is loaded on every primary, and a
  replica has it by replication (a promoted replica keeps it). A node added later, or given
  slots by a resharding, has none: the first call there answers "Function not found", and
  is run again once the library is loaded on every primary (Library.load).

Why in bridge.room, not bridge.redis: the library is the room's. It is built from the room's
scripts (presence_records, sending), its version is a hash of them, and its messages send an
administrator to `bridge acl --room`. What it stands on is the Redis side's: how a script is
declared and its call laid out (bridge.redis.lua), the clients and the cluster's primaries
(bridge.redis.clients, bridge.redis.cluster). A generic loader apart from the one library it
loads would only hand that library's name and code around.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from bridge import __version__
from bridge.errors import BridgeError, RedisRefused, RedisUnavailable
from bridge.redis.cluster import is_cluster, on_every_primary, username
from bridge.redis.lua import Call, Script
from bridge.room import claim_records, presence_records, sending, task_records
from bridge.settings import Settings

log = structlog.get_logger("bridge.functions")

# every script of bridge, in one place
SCRIPTS = (*presence_records.SCRIPTS, *sending.SCRIPTS, *task_records.SCRIPTS,
           *claim_records.SCRIPTS)
# script name -> source: each becomes the function bridge_<VERSION>_<name>
SOURCES: dict[str, str] = {script.name: script.source for script in SCRIPTS}

LOAD_COMMAND = "bridge functions load --redis ADMIN_URL"


def _version() -> str:
    digest = hashlib.sha256(b"bridge functions 1")  # bump if the wrapping below changes
    for name, body in SOURCES.items():
        digest.update(b"\0" + name.encode() + b"\0" + body.encode())
    return digest.hexdigest()[:12]


VERSION = _version()
LIBRARY = f"bridge_{VERSION}"


def function_name(script: str) -> str:
    return f"{LIBRARY}_{script}"


VERSION_FUNCTION = function_name("version")
NAMES = [*(function_name(script) for script in SOURCES), VERSION_FUNCTION]


def _library_code() -> str:
    parts = [f"#!lua name={LIBRARY}\n"]
    for script, body in SOURCES.items():
        parts.append(f"redis.register_function('{function_name(script)}', "
                     f"function(KEYS, ARGV)\n{body}\nend)\n")
    # no-writes: a user who may call it learns the version even on a read-only replica
    parts.append(f"redis.register_function{{function_name='{VERSION_FUNCTION}', "
                 f"callback=function() return '{VERSION}' end, flags={{'no-writes'}}}}\n")
    return "".join(parts)


CODE = _library_code()


def missing_message(user: str) -> str:
    return (f"Redis lacks bridge's functions (library {LIBRARY}, this bridge's version) and "
            f"Redis user {user!r} may not load them: an administrator must run "
            f"`{LOAD_COMMAND}` once for this bridge version")


def not_allowed_message(user: str) -> str:
    return (f"Redis user {user!r} may not call bridge's functions of this bridge version "
            f"(library {LIBRARY}): its ACL rule was made by another bridge version, or by "
            f"hand. Make a new rule with this version's `bridge acl --room ROOM --agent NAME` "
            f"and load it as a Redis admin")


def is_missing(error: BaseException) -> bool:
    return isinstance(error, ResponseError) and "function not found" in str(error).lower()


def is_unknown_command(error: BaseException, command: str) -> bool:
    text = str(error).lower()
    return (isinstance(error, ResponseError) and "unknown command" in text
            and command.lower() in text)


async def loaded_libraries(client: Redis) -> list[str] | None:
    """The names of the bridge libraries on this Redis (every version's), or None if this
    user may not list them."""
    command = ("FUNCTION", "LIST", "LIBRARYNAME", "bridge_*")
    if is_cluster(client):  # what any primary has (a library is per node)
        replies = list((await on_every_primary(client, *command)).values())
        if any(isinstance(reply, ResponseError) for reply in replies):
            return None
        listed = [entry for reply in replies for entry in reply]
    else:
        try:
            listed = await client.execute_command(*command)  # type: ignore[no-untyped-call]
        except ResponseError:
            return None
    names = []
    for entry in listed:  # {b"library_name": …} (redis-py's parsing), or the reply's pairs
        fields = entry if isinstance(entry, dict) else dict(
            zip(entry[::2], entry[1::2], strict=False))
        name = fields.get(b"library_name", fields.get("library_name", b""))
        names.append(name.decode() if isinstance(name, bytes) else str(name))
    return sorted(set(names))


class Library:
    """bridge's library on one Redis client: whether FCALL works there, and loading it."""

    _of: weakref.WeakKeyDictionary[Redis, Library] = weakref.WeakKeyDictionary()

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.by_evalsha = False  # learnt: the server has no FCALL (Redis before 7.0)

    @classmethod
    def of(cls, redis: Redis) -> Library:
        """One per client, so that what one script learns (no FCALL) holds for all."""
        library = cls._of.get(redis)
        if library is None:
            library = cls._of[redis] = cls(redis)
        return library

    @property
    def user(self) -> str:
        return username(self.redis)

    async def load(self) -> None:
        """FUNCTION LOAD (on a cluster, on every primary), for a user that may; RedisRefused
        naming the admin command for one that may not. Another bridge having loaded it
        meanwhile is as good."""
        if is_cluster(self.redis):
            replies = await on_every_primary(self.redis, "FUNCTION", "LOAD", CODE)
        else:
            try:
                replies = {"": await self.redis.execute_command(  # type: ignore[no-untyped-call]
                    "FUNCTION", "LOAD", CODE)}
            except ResponseError as e:
                replies = {"": e}
        for reply in replies.values():
            if not isinstance(reply, ResponseError) or "already exists" in str(reply):
                continue
            if isinstance(reply, NoPermissionError) or is_unknown_command(reply, "function"):
                raise RedisRefused(missing_message(self.user)) from reply
            raise reply
        log.info("functions_loaded", library=LIBRARY, nodes=len(replies))

    async def recover(self, error: ResponseError, source: str) -> None:
        """After ``error`` from a call that did not run: make the next call work (load the
        library, switch to EVALSHA, load the script), or raise what to do."""
        if is_unknown_command(error, "fcall"):
            if not self.by_evalsha:
                self.by_evalsha = True
                log.info("functions_unsupported", how="EVALSHA",
                         hint="Redis before 7.0 has no functions; bridge runs its scripts "
                              "by hash")
            return
        if isinstance(error, NoScriptError):  # Redis restarted: its script cache is empty
            await self.redis.script_load(source)
            return
        if is_missing(error):
            await self.load()
            return
        if isinstance(error, NoPermissionError) and "fcall" in str(error).lower():
            raise RedisRefused(not_allowed_message(self.user)) from error
        raise error


def recoverable(reply: Any) -> bool:
    """Whether a reply is an error that says the call did not run for want of the library
    or script (Library.recover handles it), rather than the call's own error."""
    return isinstance(reply, ResponseError) and (
        isinstance(reply, NoScriptError) or is_missing(reply)
        or is_unknown_command(reply, "fcall")
        or (isinstance(reply, NoPermissionError) and "fcall" in str(reply).lower()))


class Function:
    """One of bridge's scripts on one Redis client, called the same way on every Redis
    (FCALL, or EVALSHA before Redis 7.0): ``await function(call)``."""

    ATTEMPTS = 3  # load the library (or find no FCALL), load the script, then give up

    def __init__(self, redis: Redis, script: Script) -> None:
        self.redis = redis
        self.library = Library.of(redis)
        self.script = script
        self.name = function_name(script.name)
        self.source = script.source
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def command(self, call: Call) -> tuple[Any, ...]:
        keys, args = call.keys(), call.args()
        how = ("EVALSHA", self.sha) if self.library.by_evalsha else ("FCALL", self.name)
        return (*how, len(keys), *keys, *args)

    def queue(self, pipe: Pipeline, call: Call) -> None:
        """Add the call to a pipeline; check its reply with ``recoverable``."""
        pipe.execute_command(*self.command(call))

    async def recover(self, error: ResponseError) -> None:
        await self.library.recover(error, self.source)

    async def __call__(self, call: Call) -> Any:
        """The reply to ``call``."""
        for _ in range(self.ATTEMPTS):  # (the command anew: recover may switch to EVALSHA)
            command = self.command(call)
            try:
                return await self.redis.execute_command(  # type: ignore[no-untyped-call]
                    *command)
            except ResponseError as e:
                if not recoverable(e):
                    raise
                await self.recover(e)
        raise RedisUnavailable(f"bridge's {self.script.name} script could not be loaded into "
                               f"Redis (it vanished again after each load); try again")


# ---------------------------------------------------------------- `bridge functions`
async def load_library(settings: Settings) -> int:
    """`bridge functions load`: FUNCTION LOAD REPLACE of this version's library (replacing
    only a library of the very same name, so other versions' agents keep theirs)."""
    from bridge.redis.clients import check_reachable, make_client, resolve_url, shown

    url = await resolve_url(settings)
    client = make_client(url, retries=0)
    try:
        await check_reachable(client, url)
        try:
            if is_cluster(client):  # every primary; a replica copies its primary's
                for reply in (await on_every_primary(client, "FUNCTION", "LOAD", "REPLACE",
                                                     CODE)).values():
                    if isinstance(reply, ResponseError):
                        raise reply
            else:
                await client.execute_command(  # type: ignore[no-untyped-call]
                    "FUNCTION", "LOAD", "REPLACE", CODE)
        except ResponseError as e:
            if is_unknown_command(e, "function"):
                raise BridgeError(
                    f"Redis at {shown(url)} has no functions (Redis before 7.0): nothing to "
                    f"load; there bridge runs its scripts by EVALSHA") from e
            if isinstance(e, NoPermissionError):
                user = Library.of(client).user
                raise RedisRefused(
                    f"Redis user {user!r} may not load functions ({e}); run this with an "
                    f"admin's URL: --redis redis://ADMIN:PASSWORD@HOST:6379/0") from e
            raise
        print(f"loaded bridge's functions into Redis at {shown(url)}: library {LIBRARY} "
              f"({len(NAMES)} functions), for bridge {__version__} and every bridge with the "
              f"same scripts")
        others = [name for name in await loaded_libraries(client) or [] if name != LIBRARY]
        if others:
            print(f"other bridge versions' libraries stay loaded for agents that still run "
                  f"them: {', '.join(others)} (FUNCTION DELETE NAME removes one once none do)")
    finally:
        await client.aclose()
    return 0
