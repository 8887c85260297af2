"""`bridge doctor`'s checks of what its Redis user may do: run every command bridge uses on
the room's keys and channels (ACL DRYRUN), no more than that (a warning), and call bridge's
functions (loaded, of this version)."""

from __future__ import annotations

import re

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError

from bridge.ops.acl import excess_rights, used_commands
from bridge.ops.check import Check, Report
from bridge.room import functions
from bridge.room.keys import PREFIX, Keys
from bridge.settings import Settings


class AccessChecks:
    """The three checks share who the user is and whether it may ask ACL DRYRUN."""

    commands = staticmethod(used_commands)  # what the ACL check asks ACL DRYRUN about

    def __init__(self, settings: Settings, report: Report) -> None:
        self.settings = settings
        self.report = report
        self.user = ""  # the ACL user we are, once known
        self.dryrun = False  # whether it may ask ACL DRYRUN about itself

    async def acl(self, client: Redis, version: tuple[int, ...]) -> None:
        if version and version < (6, 0):
            self.report(Check("skip", "ACL: Redis before 6.0 has no ACLs"))
            return
        try:
            user = (await client.execute_command(  # type: ignore[no-untyped-call]
                "ACL", "WHOAMI")).decode()
        except ResponseError:  # a least-privilege user may not ask: the URL says who it is
            user = client.connection_pool.connection_kwargs.get("username") or "default"
        self.user = user
        if version and version < (7, 0):
            self.report(Check("skip", f"ACL: user {user}; checking its permissions needs "
                                      f"ACL DRYRUN (Redis >= 7.0)"))
            return
        keys = Keys(self.settings.room)
        name = self.settings.name or "agent"
        commands: set[str] = set()
        denied_keys: set[str] = set()
        denied_channels: set[str] = set()
        other: set[str] = set()
        checked = self.commands(keys, name)
        for command in checked:
            try:
                reply = await client.execute_command(  # type: ignore[no-untyped-call]
                    "ACL", "DRYRUN", user, *command)
            except ResponseError as e:
                if "dryrun" in str(e).lower():
                    self.report(Check("skip", f"ACL: user {user} may not run ACL DRYRUN (nor "
                                              f"may those that bridge acl makes), so whether "
                                              f"it may run every command bridge uses cannot "
                                              f"be checked"))
                    return
                reply = str(e)
            self.dryrun = True
            text = reply.decode() if isinstance(reply, bytes) else str(reply)
            if text == "OK":
                continue
            quoted = re.search(r"'([^']*)' (command|key|channel)", text)
            if quoted is None:
                other.add(text)
            elif quoted.group(2) == "command" and command[0] == "FCALL":
                commands.add(f"fcall|{command[1]}")  # +fcall would allow every function
            else:
                {"command": commands, "key": denied_keys,
                 "channel": denied_channels}[quoted.group(2)].add(quoted.group(1))
        if not (commands or denied_keys or denied_channels or other):
            self.report(Check("ok", f"ACL: user {user} may run every command bridge uses "
                                    f"({len(checked)} checked) on the keys and channels of "
                                    f"room {self.settings.room}"))
            return
        problems, fix = [], [f"ACL SETUSER {user}"]
        pattern = f"{PREFIX}:{{{self.settings.room}}}:*"
        if commands:
            problems.append("may not run " + ", ".join(sorted(commands)))
            fix += [f"+{command}" for command in sorted(commands)]
        if denied_keys:
            problems.append("may not access keys " + ", ".join(sorted(denied_keys)))
            fix.append(f"'~{pattern}'")
        if denied_channels:
            problems.append("may not use channels " + ", ".join(sorted(denied_channels)))
            fix.append(f"'&{pattern}'")
        problems += sorted(other)
        self.report(Check("fail", f"ACL: user {user} " + "; ".join(problems),
                          " ".join(fix)))

    async def least_privilege(self, client: Redis) -> None:
        """A warning, not a failure: bridge works, but a leaked URL could do more harm."""
        if not self.user:
            return
        room = self.settings.room
        rights = await excess_rights(client, self.user, room, dryrun=self.dryrun)
        if rights.excess:
            self.report(Check(
                "warn", f"ACL rights: user {self.user} can do more than bridge needs: "
                        + ", ".join(rights.excess),
                f"give each agent a least-privilege user: bridge acl --room {room} --agent "
                f"NAME | redis-cli (as an admin), then the agent's URL it prints"))
            return
        unchecked = (f"; not checked without ACL DRYRUN: {', '.join(rights.unchecked)}"
                     if rights.unchecked else "")
        self.report(Check("ok", f"ACL rights: user {self.user} has none beyond bridge's: "
                                f"refused {', '.join(rights.refused)}{unchecked}"))

    async def bridge_functions(self, client: Redis, version: tuple[int, ...]) -> None:
        """Whether this bridge version's library is loaded: by calling its version function,
        which every user bridge works under may call."""
        user = self.user or functions.Library.of(client).user
        by_evalsha = Check(
            "info", "bridge's functions: Redis before 7.0 has none, so bridge runs its Lua "
                    "scripts by EVALSHA (its user must be allowed EVALSHA and SCRIPT LOAD, "
                    "and so can run Lua of its own; bridge acl's rules need Redis 7.0)")
        if version and version < (7, 0):
            self.report(by_evalsha)
            return
        try:
            reply = await client.execute_command(  # type: ignore[no-untyped-call]
                "FCALL", functions.VERSION_FUNCTION, 0)
        except ResponseError as e:
            if functions.is_unknown_command(e, "fcall"):
                self.report(by_evalsha)
            elif isinstance(e, NoPermissionError):
                self.report(Check(
                    "fail", f"bridge's functions: {functions.not_allowed_message(user)}",
                    f"as a Redis admin: bridge acl --room {self.settings.room} --agent NAME | "
                    f"redis-cli -u ADMIN_URL"))
            elif not functions.is_missing(e):
                raise
            elif await self.may_load_functions(client):
                others = self.other_versions(await functions.loaded_libraries(client))
                self.report(Check(
                    "ok", f"bridge's functions: library {functions.LIBRARY} (this version's) "
                          f"is not loaded yet; bridge loads it when it first needs it, as "
                          f"user {user} may{others}"))
            else:
                self.report(Check(
                    "fail", f"bridge's functions: library {functions.LIBRARY} (this bridge "
                            f"version's) is not loaded, and user {user} may not load it: "
                            f"agents under it cannot start",
                    f"as a Redis admin, once per bridge version: {functions.LOAD_COMMAND}"))
            return
        answered = reply.decode() if isinstance(reply, bytes) else str(reply)
        if answered != functions.VERSION:
            self.report(Check(
                "fail", f"bridge's functions: library {functions.LIBRARY} answers version "
                        f"{answered!r}, not {functions.VERSION}: something else was loaded "
                        f"under bridge's name",
                f"as a Redis admin: {functions.LOAD_COMMAND} (replaces it with bridge's)"))
            return
        others = self.other_versions(await functions.loaded_libraries(client))
        self.report(Check("ok", f"bridge's functions: library {functions.LIBRARY} is loaded "
                                f"(this bridge's version){others}"))

    @staticmethod
    async def may_load_functions(client: Redis) -> bool:
        """FUNCTION LOAD of a library that cannot load: NOPERM, or the loader's complaint."""
        try:
            await client.execute_command("FUNCTION", "LOAD", "x")  # type: ignore[no-untyped-call]
        except NoPermissionError:
            return False
        except ResponseError as e:
            return "unknown command" not in str(e).lower()
        return True

    @staticmethod
    def other_versions(loaded: list[str] | None) -> str:
        others = [name for name in loaded or [] if name != functions.LIBRARY]
        if not others:
            return ""
        return (f"; other bridge versions' libraries loaded too: {', '.join(others)} (an admin "
                f"may FUNCTION DELETE each once no agent runs that version)")
