"""Settings: one dataclass, built from environment variables and command-line flags (flags win).

Each setting is declared once, as its field of `Settings`: the default, the environment
variable, the flag (if it has one), the parser, the hint a bad value gets, the flag's help and
the meaning the settings page gives it. `Settings.from_env`, `add_flags` (the argparse flags of
the commands) and `settings_table` (docs/settings.md's table) read those declarations."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bridge.errors import SettingsError
from bridge.room.keys import NAME_PATTERN, ROOM_PATTERN

T = TypeVar("T")

# What --delivery takes: auto picks the session inbox when Claude Code offers one, else the
# channel; push is the old name of auto. A running agent's record shows the path it took.
DELIVERY_MODES = ("auto", "inbox", "channel", "codex", "pull", "push")
# push: written by bridge 0.1's agents
DELIVERY_PATHS = ("inbox", "channel", "codex", "opencode", "pull", "push")
# The longest presence TTL, in seconds. A claim is honoured for its holder's TTL up to this, so a
# presence record written by hand (no expiry, a huge TTL) blocks its name for an hour at most.
MAX_TTL = 3600.0
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")  # a seed list: bridge.redis.cluster
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")  # bridge.redis.sentinel_url
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", *CLUSTER_SCHEMES, *SENTINEL_SCHEMES)
TLS_SCHEMES = ("rediss://", "rediss+cluster://", "rediss+sentinel://")
_SEED = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^\s,/@\[\]:]+):\d{1,5}")


def default_name(host: str | None = None, cwd: str | None = None) -> str:
    """A readable name from the host and the working directory, e.g. ``laptop-webapp``."""
    host = (host or socket.gethostname()).split(".")[0]
    folder = Path(cwd or os.getcwd()).name or "root"
    raw = re.sub(r"[^a-z0-9_.-]+", "-", f"{host}-{folder}".lower()).strip("-._")
    return (raw or "agent")[:32].rstrip("-._") or "agent"


def _pattern(pattern: re.Pattern[str]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value)
        if not pattern.match(text):
            raise ValueError(text)
        return text

    return parse


def _positive(kind: Callable[[Any], T], minimum: float) -> Callable[[Any], T]:
    def parse(value: Any) -> T:
        number = kind(value)
        # NaN compares false with everything, so it would pass `number < minimum`
        if not math.isfinite(number) or number < minimum:  # type: ignore[arg-type, operator]
            raise ValueError(value)
        return number

    return parse


def _float_range(low: float, high: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        number = float(value)
        if not low <= number <= high:  # also refuses nan
            raise ValueError(value)
        return number

    return parse


def _int_range(low: int, high: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number = int(value)
        if not low <= number <= high:
            raise ValueError(value)
        return number

    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).lower()
        if text not in choices:
            raise ValueError(text)
        return text

    return parse


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _role(value: Any) -> str:
    text = str(value)
    if len(text) > 64 or not text.isprintable():
        raise ValueError(text)
    return text


class Reason(ValueError):
    """A bad value whose message says what is wrong with it: the error adds it."""


def _redis_url(value: Any) -> str:
    text = str(value)
    if not text.startswith(REDIS_SCHEMES):
        raise ValueError(text)
    if text.startswith(CLUSTER_SCHEMES):  # HOST:PORT,HOST:PORT… (redis-py parses one node)
        seeds = urlsplit(text).netloc.rpartition("@")[2]
        if not all(_SEED.fullmatch(seed) for seed in seeds.split(",")):
            raise ValueError(text)
        return text
    from bridge.redis import sentinel_url

    if sentinel_url.is_sentinel_url(text):
        try:
            sentinel_url.parse(text)
        except ValueError as e:
            raise Reason(str(e)) from e
        return text
    from redis.asyncio.connection import parse_url

    parse_url(text)  # raises ValueError on a malformed URL
    return text


def _readable_file(value: Any) -> str:
    path = Path(str(value)).expanduser()
    try:
        with path.open("rb"):
            pass
    except OSError as e:  # missing, unreadable, a directory: the caller names flag and value
        raise ValueError(str(value)) from e
    return str(path)


@dataclass(frozen=True)
class Setting:
    """How one field of `Settings` is read: where from, how it is checked, how it is shown."""

    env: str  # the environment variable
    parse: Callable[[Any], Any]  # raises ValueError (or TypeError) on a bad value
    hint: str  # what a good value looks like, after "use"; a bad value's error ends with it
    flag: str = ""  # the command-line flag, e.g. "--ttl"; "": the variable only
    help: str = ""  # the flag's help; "(env VAR; default D)" is added to it
    # its meaning on the settings page (Markdown; links relative to docs/settings.md); "": help
    doc: str = ""
    # what follows "(env VAR" in the help; None: "; default D" from the field's default. One
    # that starts with "default: " is also the page's default column
    shown_default: str | None = None
    metavar: str | None = None
    switch: bool = False  # a flag without a value: given means true
    shared: bool = False  # also a flag of the operator commands (where the room is)
    # filled in by `declarations()` from the field the setting is declared on:
    name: str = ""  # the field of `Settings`
    default: Any = None  # the field's default (None where a factory makes it)

    @property
    def key(self) -> str:
        """The keyword of `Settings.from_env` and the argparse dest: the flag without its
        dashes (``redis``, ``secret_file``), else the field's name (``loop_limit``)."""
        return self.flag[2:].replace("-", "_") if self.flag else self.name

    @property
    def option(self) -> str:
        """How errors name the flag, also for a setting that has none (``--loop-limit``): it
        is still a keyword of `from_env`."""
        return "--" + self.key.replace("_", "-")


def setting(default: Any = dataclasses.MISSING, *, repr: bool = True,
            default_factory: Callable[[], Any] | None = None, **declaration: Any) -> Any:
    """A field of `Settings` with its `Setting` declaration (see there for the keywords)."""
    metadata = {"setting": Setting(**declaration)}
    if default_factory is not None:
        return field(default_factory=default_factory, repr=repr, metadata=metadata)
    return field(default=default, repr=repr, metadata=metadata)


NAME_HINT = "use 1-32 of a-z 0-9 _ . - starting with a letter or digit"


@dataclass
class Settings:
    redis_url: str | None = setting(  # None: the per-user embedded Redis
        None, env="BRIDGE_REDIS_URL", flag="--redis", shared=True, metavar="URL",
        doc="`redis://host:6379/0`, `rediss://…` (TLS), `unix:///path/redis.sock`, a Redis "
            "Cluster `redis+cluster://host1:7000,host2:7001/`, or a Sentinel-watched primary "
            "`redis+sentinel://[USER:PASSWORD@]S1:26379,S2:26379,S3:26379/SERVICE[/DB]` "
            "(`rediss+…` for TLS; see [Cluster and Sentinel](scaling.md))",
        parse=_redis_url,
        hint="use redis://host:6379/0, rediss://…, unix:///path/redis.sock; for a Redis "
             "Cluster redis+cluster://host1:7000,host2:7001/; for a Sentinel-watched primary "
             "redis+sentinel://HOST:26379[,HOST:26379…]/SERVICE[/DB] (rediss+… for TLS)",
        help="Redis URL", shown_default="default: the embedded Redis")
    room: str = setting(
        "main", env="BRIDGE_ROOM", flag="--room", shared=True,
        doc="an isolated team; several rooms can share a Redis; named like an agent",
        parse=_pattern(ROOM_PATTERN), hint=NAME_HINT, help="room name")
    name: str = setting(
        env="BRIDGE_NAME", flag="--name", default_factory=default_name,
        doc="this agent's name: 1–32 of `a-z 0-9 _ . -`, starting with a letter or digit; the "
            "derived default is logged",
        parse=_pattern(NAME_PATTERN), hint=NAME_HINT,
        help="this agent's name",
        shown_default="default: derived from host and working directory")
    role: str = setting(
        "", env="BRIDGE_ROLE", flag="--role", parse=_role,
        doc="shown to the others, e.g. `manager`, `developer`; up to 64 printable characters",
        hint="use up to 64 printable characters",
        help="role shown to others, e.g. developer")
    ttl: float = setting(
        15.0, env="BRIDGE_TTL", flag="--ttl",
        doc="seconds (1 to 3600) until a crashed agent's presence expires (heartbeat every ttl/3)",
        parse=_float_range(1.0, MAX_TTL),
        hint=f"use a number of seconds from 1 to {MAX_TTL:g}, e.g. 15",
        help="presence TTL in seconds")
    delivery: str = setting(
        "auto", env="BRIDGE_DELIVERY", flag="--delivery",
        doc="`auto` (the session inbox if Claude Code offers it, `codex queue` for a Codex "
            "client, an OpenCode TUI's server when it has a port, the channel for a Claude Code "
            "without its inbox, else `read_messages`), `inbox`, `channel`, `codex` or `pull` "
            "(`read_messages`); `push` is the old name of `auto` (see [Clients, side by "
            "side](clients.md))",
        parse=_choice(DELIVERY_MODES),
        hint="use auto, inbox, channel, codex or pull",
        help="auto (the session inbox Claude Code offers, `codex queue` for a Codex client, "
             "an OpenCode TUI's port, the channel for Claude Code, else pull), inbox, channel, "
             "codex, or pull (read_messages)")
    # the codex binary that queues messages into a Codex session ("": PATH's, else the
    # daemon's copy under CODEX_HOME; bridge.codex)
    codex_bin: str = setting(
        "", env="BRIDGE_CODEX_BIN", parse=str,
        shown_default="default: PATH's `codex`, else the copy Codex's daemon keeps",
        doc="the `codex` binary that queues messages into a Codex session (`codex queue`)",
        hint="use the path of the codex binary, e.g. ~/.codex/packages/app-server-daemon/"
             "current/bin/codex")
    push_events: bool = setting(  # push joined/left/status on their own (else they ride along)
        False, env="BRIDGE_PUSH_EVENTS", flag="--push-events", switch=True,
        doc="`1`: push joined/left/status events on their own; by default they ride along with "
            "the next message",
        parse=_flag,
        hint="use 1 (push joined/left/status events on their own) or 0",
        help="push joined/left/status events on their own; by default they ride along with "
             "the next message")
    board_tools: bool = setting(  # task, tasks, claims: ~361 tokens (bench/tool_tokens.py)
        True, env="BRIDGE_BOARD_TOOLS",
        doc="`0`: leave out the task board's and file claims' tools (`task`, `tasks`, "
            "`claims`), which add about 361 tokens to `tools/list` (docs/tasks.md)",
        parse=_flag, hint="use 1 (offer the task and claims tools) or 0")
    # messages between two agents alone within loop_window, the peer's repeats only: a loop
    # (5 times as many whatever they say); bridge.mcp.loops
    loop_limit: int = setting(
        20, env="BRIDGE_LOOP_LIMIT", parse=_positive(int, 0),
        doc="messages between an agent and one peer alone within `BRIDGE_LOOP_WINDOW`, counting "
            "only the peer's repeats (messages that add fewer than 3 new words), after which the "
            "peer's messages are held as a reply loop; five times as many are held whatever they "
            "say; `0`: never (see [reply loops](agents.md#reply-loops-are-cut))",
        hint="use a whole number of messages, e.g. 20 (0: never hold)")
    loop_window: float = setting(
        120.0, env="BRIDGE_LOOP_WINDOW",
        doc="seconds (at least 1) of that window",
        parse=_positive(float, 1.0),
        hint="use a number of seconds >= 1, e.g. 120")
    announce: bool = True  # publish our joined/left (not for an operator's `send --as`)
    client: str = ""  # the MCP client, "NAME VERSION" from initialize's clientInfo
    max_bytes: int = setting(
        65536, env="BRIDGE_MAX_BYTES", flag="--max-bytes",
        doc="largest message text, in UTF-8 bytes",
        parse=_positive(int, 1),
        hint="use a whole number of bytes, e.g. 65536", help="largest message text in bytes")
    log_maxlen: int = setting(
        10000, env="BRIDGE_LOG_MAXLEN",
        doc="entries kept in the room log (approximate trim; at least 100); more while an agent "
            "that holds the log has not read them, up to `BRIDGE_LOG_HARD_MAXLEN`",
        parse=_positive(int, 100),
        hint="use a whole number of entries >= 100")
    # the log is kept longer for agents that have not read it (bridge.room.retention), up to
    # this many entries; past it the oldest go even if unread (default: 100000, or
    # BRIDGE_LOG_MAXLEN if that is larger; see _check_retention)
    log_hard_maxlen: int = setting(
        100000, env="BRIDGE_LOG_HARD_MAXLEN",
        doc="entries (at least `BRIDGE_LOG_MAXLEN`, which it follows up if larger) the room log "
            "never exceeds: past it the oldest go even if unread, and their reader gets the "
            "\"expired\" notice",
        parse=_positive(int, 100),
        hint="use a whole number of entries >= BRIDGE_LOG_MAXLEN, e.g. 100000")
    # how far behind (messages of the room log) an agent may fall before sends to it are
    # refused, and broadcasts are not queued for it
    backlog_max: int = setting(
        10000, env="BRIDGE_BACKLOG_MAX",
        doc="messages of the room log (at least 1, at most `BRIDGE_LOG_HARD_MAXLEN`, which the "
            "default follows down) an agent that holds the log may be behind: a send to it is "
            "refused past it, and a broadcast says it was not queued for it",
        parse=_positive(int, 1),
        hint="use a whole number of messages >= 1, up to BRIDGE_LOG_HARD_MAXLEN (which a "
             "default follows down), e.g. 10000")
    # seconds after an agent was last present that the log still holds its unread messages
    away_hold: float = setting(
        86400.0, env="BRIDGE_AWAY_HOLD",
        doc="seconds (at least 1) after an agent was last present that the room log still holds "
            "its unread messages",
        parse=_positive(float, 1.0),
        hint="use a number of seconds >= 1, e.g. 86400")
    cursor_ttl: float = setting(
        7 * 24 * 3600.0, env="BRIDGE_CURSOR_TTL",
        doc="seconds (at least 60) an absent agent's cursor (and queued mail) is kept; a present "
            "agent's heartbeat keeps it alive",
        parse=_positive(float, 60.0), hint="use a number of seconds >= 60")
    log_max_age: float = setting(  # seconds; 0 keeps entries until MAXLEN trims them
        0.0, env="BRIDGE_LOG_MAX_AGE",
        doc="seconds; older log entries are trimmed too; `0`: no age limit",
        parse=_positive(float, 0.0),
        hint="use a number of seconds (0: no age limit)")
    send_timeout: float = setting(
        10.0, env="BRIDGE_SEND_TIMEOUT",
        doc="seconds (at least 0.1) `send_message` keeps retrying while Redis is unreachable",
        parse=_positive(float, 0.1), hint="use a number of seconds, e.g. 10")
    # the room secret, never logged or shown: from the file --secret-file / BRIDGE_SECRET_FILE
    # names, or BRIDGE_SECRET itself (`_secret` reads and checks both)
    secret: str = setting(
        "", env="BRIDGE_SECRET_FILE", flag="--secret-file", metavar="PATH",
        doc="file holding the room secret: messages are signed and checked (see "
            "[Security](security.md)); or the secret itself in `BRIDGE_SECRET`, at least 16 "
            "characters (set only one)",
        parse=str, hint="", repr=False,
        help="file holding the room secret; messages are then signed and checked",
        shown_default=", or the secret in BRIDGE_SECRET")
    replay_window: float = setting(  # seconds between a message's signed time and its log entry
        300.0, env="BRIDGE_REPLAY_WINDOW",
        doc="seconds (at least 1) a signed message's time may differ from when Redis logged it",
        parse=_positive(float, 1.0),
        hint="use a number of seconds >= 1, e.g. 300")
    max_recipients: int = setting(
        64, env="BRIDGE_MAX_RECIPIENTS", flag="--max-recipients",
        doc="most names in one message's `to` (1–1000)",
        parse=_int_range(1, 1000),
        hint="use a whole number from 1 to 1000", help="most names in one message's `to`")
    # bytes of messages (about) held in memory ahead of a client that does not keep up; past
    # it bridge stops reading the log until the client catches up: the log is the buffer
    read_ahead_bytes: int = setting(
        4 * 1024 * 1024, env="BRIDGE_READ_AHEAD_BYTES",
        doc="bytes of messages (at least 4096; about: text plus 256 per item) an agent holds in "
            "memory ahead of a client that is not reading; past it, bridge stops reading the log "
            "until the client catches up",
        parse=_positive(int, 4096),
        hint="use a whole number of bytes >= 4096, e.g. 4194304")
    rate: float = setting(  # messages/s per sender name (0: no limit); generous: a runaway guard
        5000.0, env="BRIDGE_RATE", flag="--rate", parse=_positive(float, 0.0),
        doc="messages per second one sender name may send; `0`: no limit",
        hint="use messages per second per sender, e.g. 5000 (0: no limit)",
        help="messages per second this agent may send, 0 for no limit")
    burst: int = setting(
        5000, env="BRIDGE_BURST", flag="--burst", parse=_positive(int, 1),
        doc="messages (at least 1) one sender may send at once before `--rate` applies",
        hint="use a whole number of messages >= 1, e.g. 5000",
        help="messages this agent may send at once before --rate applies")
    # replicas that must have a message before send_message says it is sent (WAIT), so that a
    # failover to a replica cannot lose it; 0: answer as soon as the primary has it
    min_replicas: int = setting(
        0, env="BRIDGE_MIN_REPLICAS", parse=_int_range(0, 100),
        doc="replicas (0–100) that must have a message before `send_message` says it is durable "
            "(`WAIT`); `0`: do not wait (see [Durable "
            "sends](scaling.md#durable-sends-bridge_min_replicas))",
        hint="use a whole number of replicas from 0 to 100, e.g. 1 (0: do not wait)")
    min_replicas_timeout: float = setting(  # the WAIT's bound, per batch of sends
        1.0, env="BRIDGE_MIN_REPLICAS_TIMEOUT", parse=_float_range(0.01, 60.0),
        doc="seconds (0.01–60) a send waits for those replicas; past it, the answer says the "
            "message is not known to be durable",
        hint="use a number of seconds from 0.01 to 60, e.g. 1")
    tls_ca: str = setting(  # PEM: the CA that signed the server's certificate (rediss://)
        "", env="BRIDGE_TLS_CA", flag="--tls-ca", shared=True, metavar="PEM",
        doc="`rediss://`: the CA that signed Redis' certificate (see [TLS](tls.md))",
        parse=_readable_file,
        hint="use the path of a readable PEM file (the CA certificate)",
        help="rediss://: the CA that signed the server's certificate",
        shown_default="default: the system's CAs")
    tls_cert: str = setting(  # PEM: our client certificate, for servers that ask for one (mTLS)
        "", env="BRIDGE_TLS_CERT", flag="--tls-cert", shared=True, metavar="PEM",
        doc="`rediss://`: a client certificate, for a Redis that asks for one",
        parse=_readable_file,
        hint="use the path of a readable PEM file (the client certificate)",
        help="rediss://: client certificate, if the server asks for one")
    tls_key: str = setting(  # PEM: its private key (if not in tls_cert's file)
        "", env="BRIDGE_TLS_KEY", flag="--tls-key", shared=True, metavar="PEM",
        doc="`rediss://`: that certificate's key (if not in the same file)",
        parse=_readable_file,
        hint="use the path of a readable PEM file (the client certificate's key)",
        help="rediss://: the client certificate's key")
    # `bridge web`'s token (sending needs it; reading too off loopback); a new random one per
    # run when unset. No flag: a token on the command line shows in `ps`
    web_token: str = setting(
        "", env="BRIDGE_WEB_TOKEN", parse=_pattern(re.compile(r"^[A-Za-z0-9_~.-]{16,256}\Z")),
        doc="`bridge web`'s token: 16–256 of `A-Z a-z 0-9 _ ~ . -`; sending needs it, and reading"
            " off loopback (see [bridge web](web.md)); no flag, so it does not show in `ps`",
        hint="use 16-256 of A-Z a-z 0-9 _ ~ . - (e.g. the output of `openssl rand -hex 24`)",
        shown_default="default: a new random one each run",
        repr=False)
    name_was_derived: bool = False

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **flags: Any
    ) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``); non-None ``flags`` win. A
        flag's keyword is its name without dashes (``redis``, ``ttl``, ``secret_file``); a
        setting without a flag is passed by its field's name (``loop_limit``)."""
        env = os.environ if env is None else env

        def pick(declared: Setting) -> tuple[Any, str]:
            if flags.get(declared.key) is not None:
                return flags[declared.key], declared.option
            value = env.get(declared.env)
            return (value if value not in (None, "") else None), declared.env

        given: dict[str, Any] = {}
        for declared in declarations():
            if declared.name == "secret":
                continue  # the file is read once the rest is known (below)
            value, source = pick(declared)
            if value is None:
                continue  # the field's default
            try:
                given[declared.name] = declared.parse(value)
            except (TypeError, ValueError) as e:
                label = f"{declared.option} / {declared.env}"
                shown = redact(str(value)) if declared.name == "redis_url" else value
                reason = f": {e}" if isinstance(e, Reason) else ""
                raise SettingsError(
                    f"bad value for {label} (from {source}): {shown!r}{reason}; "
                    f"{declared.hint}") from e
        settings = cls(**given, name_was_derived="name" not in given)
        _check_tls(settings)
        _check_retention(settings, hard_given="log_hard_maxlen" in given,
                         backlog_given="backlog_max" in given)
        [secret] = [declared for declared in declarations() if declared.name == "secret"]
        file_value, file_source = pick(secret)
        settings.secret = _secret(file_value, file_source, env.get("BRIDGE_SECRET") or "")
        return settings


def declarations() -> list[Setting]:
    """Every declared setting, in the order of the fields of `Settings`."""
    return [dataclasses.replace(f.metadata["setting"], name=f.name,
                                default=None if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(Settings) if "setting" in f.metadata]


def add_flags(parser: argparse.ArgumentParser, *names: str,
              help: Mapping[str, str] | None = None) -> None:
    """Add the flags of the named settings (fields of `Settings`) to ``parser``, in that order;
    without names, every setting that has a flag, the shared ones (where the room is) first.
    ``help`` replaces a flag's help where a command uses the setting differently."""
    flagged = [declared for declared in declarations() if declared.flag]
    if not names:
        names = tuple(d.name for d in sorted(flagged, key=lambda d: not d.shared))
    by_name = {declared.name: declared for declared in flagged}
    for name in names:
        declared = by_name[name]
        text = (help or {}).get(name) or _help(declared)
        if declared.switch:
            parser.add_argument(declared.flag, dest=declared.key, action="store_true",
                                default=None, help=text)
        else:
            parser.add_argument(declared.flag, dest=declared.key, metavar=declared.metavar,
                                help=text)


# the settings that say where the room is: flags of every command that opens it
SHARED = tuple(declared.name for declared in declarations() if declared.shared)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings among a command's parsed ``args`` (by dest), as keywords of `from_env`."""
    return {d.key: getattr(args, d.key) for d in declarations() if hasattr(args, d.key)}


def _help(declared: Setting) -> str:
    shown = declared.shown_default
    if shown is None:
        value = declared.default
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 15, not 15.0
        shown = f"default {value}" if value else ""
    separator = "" if not shown or shown.startswith(",") else "; "
    return f"{declared.help} (env {declared.env}{separator}{shown})"


def settings_table() -> str:
    """The table of docs/settings.md (its MkDocs hook puts it there at build time): one row
    per declared setting, in the order of the fields: flag, variable, default, meaning."""
    rows = ["| flag | variable | default | meaning |", "|---|---|---|---|"]
    for declared in declarations():
        flag = " ".join(part for part in (declared.flag, declared.metavar) if part)
        meaning = declared.doc or declared.help
        rows.append(f"| {f'`{flag}`' if flag else ''} | `{declared.env}` | "
                    f"{shown_default(declared)} | {meaning} |")
    return "\n".join(rows) + "\n"


def shown_default(declared: Setting) -> str:
    """A setting's default as the settings page shows it: `15`, `auto`, or words."""
    shown = declared.shown_default or ""
    if shown.startswith("default: "):
        return shown.removeprefix("default: ")
    value = declared.default
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 15, not 15.0
    return "none" if value in ("", None) else f"`{value}`"


MIN_SECRET = 16


def _secret(path: Any, source: str, inline: str) -> str:
    """The room secret from --secret-file / BRIDGE_SECRET_FILE or BRIDGE_SECRET. Errors never
    repeat the secret itself."""
    label = "--secret-file / BRIDGE_SECRET_FILE"
    if path is not None and inline and source == "BRIDGE_SECRET_FILE":
        raise SettingsError("both BRIDGE_SECRET and BRIDGE_SECRET_FILE are set; set only one")
    secret = inline
    if path is not None:
        try:
            secret = Path(str(path)).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise SettingsError(
                f"cannot read the secret file {path} ({label}, from {source}): {reason}; "
                f"create it with e.g. `openssl rand -hex 32 > {path}`, readable by this user"
            ) from e
        if not secret:
            raise SettingsError(f"the secret file {path} ({label}, from {source}) is empty; "
                                f"put the room secret in it, e.g. `openssl rand -hex 32`")
    if secret and len(secret) < MIN_SECRET:
        raise SettingsError(
            f"the room secret (BRIDGE_SECRET / BRIDGE_SECRET_FILE) is {len(secret)} "
            f"characters; use at least {MIN_SECRET}, e.g. the output of `openssl rand -hex 32`"
        )
    return secret


def redact(url: str) -> str:
    """The URL with its password replaced, for logs and error messages: the one before the
    ``@`` and a ``password=`` query parameter (redis-py takes both)."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ':'}***@{host}"


_QUERY_PASSWORD = re.compile(r"([?&](?:sentinel_)?password=)[^&#]*", re.IGNORECASE)


def _check_retention(settings: Settings, *, hard_given: bool, backlog_given: bool) -> None:
    """The hard cap is at least BRIDGE_LOG_MAXLEN (a default one follows it up), and no agent
    is let fall further behind than the hard cap keeps (a default bound follows it down)."""
    if settings.log_hard_maxlen < settings.log_maxlen:
        if hard_given:
            raise SettingsError(
                f"BRIDGE_LOG_HARD_MAXLEN ({settings.log_hard_maxlen}) is below "
                f"BRIDGE_LOG_MAXLEN ({settings.log_maxlen}): the hard cap on the room log "
                f"must be at least its usual length; raise BRIDGE_LOG_HARD_MAXLEN or lower "
                f"BRIDGE_LOG_MAXLEN")
        settings.log_hard_maxlen = settings.log_maxlen
    if settings.backlog_max > settings.log_hard_maxlen:
        if not backlog_given:
            settings.backlog_max = settings.log_hard_maxlen
            return
        raise SettingsError(
            f"BRIDGE_BACKLOG_MAX ({settings.backlog_max}) is above BRIDGE_LOG_HARD_MAXLEN "
            f"({settings.log_hard_maxlen}): an agent that far behind would lose messages to "
            f"the hard cap that senders were told were queued; lower BRIDGE_BACKLOG_MAX or "
            f"raise BRIDGE_LOG_HARD_MAXLEN")


def _check_tls(settings: Settings) -> None:
    """TLS files only make sense with a rediss:// URL, and a key only with its certificate."""
    given = [flag for flag, value in (("--tls-ca / BRIDGE_TLS_CA", settings.tls_ca),
                                      ("--tls-cert / BRIDGE_TLS_CERT", settings.tls_cert),
                                      ("--tls-key / BRIDGE_TLS_KEY", settings.tls_key)) if value]
    if given and not (settings.redis_url or "").startswith(TLS_SCHEMES):
        raise SettingsError(
            f"{', '.join(given)} set, but the Redis URL is not rediss://; use "
            f"--redis / BRIDGE_REDIS_URL rediss://HOST:PORT/0 (TLS), or unset them")
    if settings.tls_key and not settings.tls_cert:
        raise SettingsError("--tls-key / BRIDGE_TLS_KEY is set without --tls-cert / "
                            "BRIDGE_TLS_CERT; set both (the client certificate and its key)")
