"""The URL of a Sentinel-watched primary, parsed (see bridge.redis.sentinel for the form).
Apart from the rest of that module so that the settings can check a URL without importing
the Redis clients (which import the settings)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
DEFAULT_PORT = 26379
FORM = "redis+sentinel://[USER:PASSWORD@]HOST:26379[,HOST:26379…]/SERVICE[/DB]"
SENTINEL_OPTIONS = {"sentinel_username": "username", "sentinel_password": "password"}
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")  # (what with_tls adds)
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?$")
_SERVICE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class Target:
    """What a sentinel URL names."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    tls: bool
    username: str | None  # the primary's login
    password: str | None
    sentinel_login: dict[str, str]  # username / password for the sentinels, if any
    tls_files: dict[str, str]


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SCHEMES)


def parse(url: str) -> Target:
    """The URL's parts, or ValueError saying what is wrong with it."""
    scheme, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    if not at:
        hosts = netloc
    username = password = None
    if credentials:
        user, colon, secret = credentials.partition(":")
        username, password = unquote(user) or None, (unquote(secret) if colon else None)
        if not colon:  # redis:// reads a lone word before @ as the password too
            username, password = None, unquote(user)
    sentinels = []
    for host in hosts.split(","):
        match = _HOST.match(host.strip())
        if not match or (match.group(2) and not 0 < int(match.group(2)) < 65536):
            raise ValueError(f"{host.strip() or 'an empty host'!r} is not a sentinel address "
                             f"(HOST or HOST:PORT, comma-separated)")
        sentinels.append((match.group(1).strip("[]"), int(match.group(2) or DEFAULT_PORT)))
    parts = path.rstrip("/").split("/") if path.strip("/") else []
    if not parts or not _SERVICE.match(parts[0]):
        raise ValueError("the primary's service name is missing after the hosts (the name "
                         "the sentinels watch it under, e.g. /mymaster)")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"{'/'.join(parts[1:])!r} is not a database number (/SERVICE/DB, "
                         f"e.g. /mymaster/0)")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(SENTINEL_OPTIONS) - set(TLS_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; a sentinel URL takes "
                         f"{', '.join(SENTINEL_OPTIONS)} (the sentinels' login)")
    return Target(
        sentinels=tuple(sentinels), service=parts[0],
        db=int(parts[1]) if len(parts) == 2 else 0, tls=scheme == "rediss+sentinel",
        username=username, password=password,
        sentinel_login={SENTINEL_OPTIONS[k]: v for k, v in options.items()
                        if k in SENTINEL_OPTIONS and v},
        tls_files={k: v for k, v in options.items() if k in TLS_OPTIONS})
