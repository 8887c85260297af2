"""What keeps `bridge web` safe by default: the token, the Host and Origin checks, and the
headers every answer carries (a Content-Security-Policy that allows no inline script).

- Bound to loopback, reading needs no token, but the Host header must name this address
  (another site's page cannot reach it through DNS rebinding). Any other bind needs the
  token for reading too: the page trades it for a cookie (HttpOnly, SameSite=Strict) once,
  since an EventSource cannot send a header.
- A request a browser marks as coming from another site's page (Sec-Fetch-Site) is refused,
  reading included.
- Sending always needs the token in an ``Authorization: Bearer`` header: never a cookie, so
  another site cannot make the browser send for it; and a POST whose Origin is not this
  page's is refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "bridge_web"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"x-frame-options", b"DENY"), (b"cache-control", b"no-store")]


class Refused(Exception):
    """A request turned away: its HTTP status, and an error the page shows."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class Guard:
    token: str
    loopback: bool
    port: int
    hosts: set[str] = field(default_factory=set)  # Host headers accepted on a loopback bind

    def __post_init__(self) -> None:
        if self.loopback:
            self.hosts = {f"{name}:{self.port}" for name in
                          ("127.0.0.1", "localhost", "[::1]")}

    def right(self, given: str) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    def bearer(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.right(given.strip())

    def may_read(self, headers: dict[str, str]) -> bool:
        if self.loopback or self.bearer(headers):
            return True
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no token
            return False
        return COOKIE in cookie and self.right(cookie[COOKIE].value)

    def host_ok(self, headers: dict[str, str]) -> bool:
        return not self.loopback or headers.get("host", "").lower() in self.hosts

    @staticmethod
    def origin_ok(headers: dict[str, str], scheme: str) -> bool:
        """A browser sends Origin with every POST; it must be this page's own."""
        origin = headers.get("origin")
        return origin is None or origin == f"{scheme}://{headers.get('host', '')}"


class Guarded:
    """ASGI middleware: refuses a foreign Host (loopback binds) or Origin (POST), and adds the
    security headers to every answer, streams included."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app, self.guard = app, guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        # another site's page (an <img>, a no-cors fetch) may not make us read or watch a
        # room: each stream holds a Redis connection (found by review: 64 such requests
        # filled the room limit). Browsers say where a request comes from; the page's own,
        # and an address typed in, are same-origin or none.
        if headers.get("sec-fetch-site", "none") not in ("same-origin", "none"):
            await refuse(send, 403, "a request from another site's page is refused")
            return
        if not self.guard.host_ok(headers):
            await refuse(send, 403, "this address is not the one bridge web serves: open it "
                                    "by 127.0.0.1 or localhost and its port")
            return
        if scope["method"] == "POST" and not self.guard.origin_ok(headers, scope["scheme"]):
            await refuse(send, 403, "a request from another site's page is refused")
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def refuse(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *HEADERS]})
    await send({"type": "http.response.body", "body": body})
