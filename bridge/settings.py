"""Settings: one dataclass, built from environment variables and command-line flags (flags win)."""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bridge.errors import SettingsError
from bridge.room.keys import NAME_PATTERN, ROOM_PATTERN

T = TypeVar("T")

# What --delivery takes: auto picks the session inbox when Claude Code offers one, else the
# channel; push is the old name of auto. A running agent's record shows the path it took.
DELIVERY_MODES = ("auto", "inbox", "channel", "pull", "push")
DELIVERY_PATHS = ("inbox", "channel", "pull", "push")  # push: written by bridge 0.1's agents
# The longest presence TTL, in seconds. A claim is honoured for its holder's TTL up to this, so a
# presence record written by hand (no expiry, a huge TTL) blocks its name for an hour at most.
MAX_TTL = 3600.0
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def default_name(host: str | None = None, cwd: str | None = None) -> str:
    """A readable name from the host and the working directory, e.g. ``laptop-webapp``."""
    host = (host or socket.gethostname()).split(".")[0]
    folder = Path(cwd or os.getcwd()).name or "root"
    raw = re.sub(r"[^a-z0-9_.-]+", "-", f"{host}-{folder}".lower()).strip("-._")
    return (raw or "agent")[:32].rstrip("-._") or "agent"


@dataclass
class Settings:
    redis_url: str | None = None  # None: the per-user embedded Redis
    room: str = "main"
    name: str = field(default_factory=default_name)
    role: str = ""
    ttl: float = 15.0
    delivery: str = "auto"
    push_events: bool = False  # push joined/left/status on their own (else they ride along)
    loop_limit: int = 20  # messages between two agents alone within loop_window: a reply loop
    loop_window: float = 120.0
    announce: bool = True  # publish our joined/left (not for an operator's `send --as`)
    max_bytes: int = 65536
    log_maxlen: int = 10000
    cursor_ttl: float = 7 * 24 * 3600.0
    log_max_age: float = 0.0  # seconds; 0 keeps entries until MAXLEN trims them
    send_timeout: float = 10.0
    secret: str = field(default="", repr=False)  # the room secret: never logged or shown
    replay_window: float = 300.0  # seconds between a message's signed time and its log entry
    max_recipients: int = 64
    # bytes of messages (about) held in memory ahead of a client that does not keep up; past
    # it bridge stops reading the log until the client catches up: the log is the buffer
    read_ahead_bytes: int = 4 * 1024 * 1024
    rate: float = 5000.0  # messages/s per sender name (0: no limit); generous: a runaway guard
    burst: int = 5000
    tls_ca: str = ""  # PEM: the CA that signed the server's certificate (rediss://)
    tls_cert: str = ""  # PEM: our client certificate, for servers that ask for one (mTLS)
    tls_key: str = ""  # PEM: its private key (if not in tls_cert's file)
    name_was_derived: bool = False

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **flags: Any
    ) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``); non-None ``flags`` win."""
        env = os.environ if env is None else env

        def pick(flag: str, var: str) -> tuple[Any, str]:
            if flags.get(flag) is not None:
                return flags[flag], "--" + flag.replace("_", "-")
            value = env.get(var)
            return (value if value not in (None, "") else None), var

        def get(flag: str, var: str, parse: Callable[[Any], T], default: T, hint: str) -> T:
            value, source = pick(flag, var)
            if value is None:
                return default
            try:
                return parse(value)
            except (TypeError, ValueError) as e:
                label = f"--{flag.replace('_', '-')} / {var}"
                shown = redact(str(value)) if var == "BRIDGE_REDIS_URL" else value
                raise SettingsError(
                    f"bad value for {label} (from {source}): {shown!r}; {hint}"
                ) from e

        name_value, _ = pick("name", "BRIDGE_NAME")
        settings = cls(
            redis_url=get("redis", "BRIDGE_REDIS_URL", _redis_url, None,
                          "use redis://host:6379/0, rediss://… or unix:///path/redis.sock"),
            room=get("room", "BRIDGE_ROOM", _pattern(ROOM_PATTERN), "main",
                     "use 1-32 of a-z 0-9 _ . - starting with a letter or digit"),
            name=get("name", "BRIDGE_NAME", _pattern(NAME_PATTERN), "",
                     "use 1-32 of a-z 0-9 _ . - starting with a letter or digit"),
            role=get("role", "BRIDGE_ROLE", _role, "", "use up to 64 printable characters"),
            ttl=get("ttl", "BRIDGE_TTL", _float_range(1.0, MAX_TTL), 15.0,
                    f"use a number of seconds from 1 to {MAX_TTL:g}, e.g. 15"),
            delivery=get("delivery", "BRIDGE_DELIVERY", _choice(DELIVERY_MODES), "auto",
                         "use auto, inbox, channel or pull"),
            loop_limit=get("loop_limit", "BRIDGE_LOOP_LIMIT", _positive(int, 0), 20,
                           "use a whole number of messages, e.g. 20 (0: never hold)"),
            loop_window=get("loop_window", "BRIDGE_LOOP_WINDOW", _positive(float, 1.0), 120.0,
                            "use a number of seconds >= 1, e.g. 120"),
            push_events=get("push_events", "BRIDGE_PUSH_EVENTS", _flag, False,
                            "use 1 (push joined/left/status events on their own) or 0"),
            max_bytes=get("max_bytes", "BRIDGE_MAX_BYTES", _positive(int, 1), 65536,
                          "use a whole number of bytes, e.g. 65536"),
            log_maxlen=get("log_maxlen", "BRIDGE_LOG_MAXLEN", _positive(int, 100), 10000,
                           "use a whole number of entries >= 100"),
            cursor_ttl=get("cursor_ttl", "BRIDGE_CURSOR_TTL", _positive(float, 60.0),
                           7 * 24 * 3600.0, "use a number of seconds >= 60"),
            log_max_age=get("log_max_age", "BRIDGE_LOG_MAX_AGE", _positive(float, 0.0), 0.0,
                            "use a number of seconds (0: no age limit)"),
            send_timeout=get("send_timeout", "BRIDGE_SEND_TIMEOUT", _positive(float, 0.1), 10.0,
                             "use a number of seconds, e.g. 10"),
            replay_window=get("replay_window", "BRIDGE_REPLAY_WINDOW", _positive(float, 1.0),
                              300.0, "use a number of seconds >= 1, e.g. 300"),
            max_recipients=get("max_recipients", "BRIDGE_MAX_RECIPIENTS", _int_range(1, 1000),
                               64, "use a whole number from 1 to 1000"),
            read_ahead_bytes=get("read_ahead_bytes", "BRIDGE_READ_AHEAD_BYTES",
                                 _positive(int, 4096), 4 * 1024 * 1024,
                                 "use a whole number of bytes >= 4096, e.g. 4194304"),
            rate=get("rate", "BRIDGE_RATE", _positive(float, 0.0), 5000.0,
                     "use messages per second per sender, e.g. 5000 (0: no limit)"),
            burst=get("burst", "BRIDGE_BURST", _positive(int, 1), 5000,
                      "use a whole number of messages >= 1, e.g. 5000"),
            tls_ca=get("tls_ca", "BRIDGE_TLS_CA", _readable_file, "",
                       "use the path of a readable PEM file (the CA certificate)"),
            tls_cert=get("tls_cert", "BRIDGE_TLS_CERT", _readable_file, "",
                         "use the path of a readable PEM file (the client certificate)"),
            tls_key=get("tls_key", "BRIDGE_TLS_KEY", _readable_file, "",
                        "use the path of a readable PEM file (the client certificate's key)"),
        )
        _check_tls(settings)
        file_value, file_source = pick("secret_file", "BRIDGE_SECRET_FILE")
        settings.secret = _secret(file_value, file_source, env.get("BRIDGE_SECRET") or "")
        if name_value is None:
            settings.name = default_name()
            settings.name_was_derived = True
        return settings


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


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


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


def _redis_url(value: Any) -> str:
    text = str(value)
    if not text.startswith(REDIS_SCHEMES):
        raise ValueError(text)
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


def _check_tls(settings: Settings) -> None:
    """TLS files only make sense with a rediss:// URL, and a key only with its certificate."""
    given = [flag for flag, value in (("--tls-ca / BRIDGE_TLS_CA", settings.tls_ca),
                                      ("--tls-cert / BRIDGE_TLS_CERT", settings.tls_cert),
                                      ("--tls-key / BRIDGE_TLS_KEY", settings.tls_key)) if value]
    if given and not (settings.redis_url or "").startswith("rediss://"):
        raise SettingsError(
            f"{', '.join(given)} set, but the Redis URL is not rediss://; use "
            f"--redis / BRIDGE_REDIS_URL rediss://HOST:PORT/0 (TLS), or unset them")
    if settings.tls_key and not settings.tls_cert:
        raise SettingsError("--tls-key / BRIDGE_TLS_KEY is set without --tls-cert / "
                            "BRIDGE_TLS_CERT; set both (the client certificate and its key)")
