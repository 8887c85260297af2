"""`bridge web`: check the Redis, listen, print the address (with the token), serve until
Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from collections.abc import Iterator
from typing import TextIO

import anyio

from bridge.errors import BridgeError, SettingsError
from bridge.ops.web.security import Guard, is_loopback, new_token
from bridge.redis.clients import check_reachable, make_client, resolve_url
from bridge.settings import Settings, redact

DEFAULT_BIND = "127.0.0.1:8765"


def parse_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8765`` for IPv6); port 0 lets the system pick one."""
    host, sep, port = bind.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise SettingsError(f"bad value for --bind: {bind!r}; use HOST:PORT, e.g. "
                            f"{DEFAULT_BIND} (or [::1]:8765)")
    return host, int(port)


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0]
    except OSError as e:
        raise SettingsError(f"bad value for --bind: cannot resolve {host!r} ({e}); use an "
                            f"address of this machine, e.g. {DEFAULT_BIND}") from None
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(sock[4])
    except OSError as e:
        server.close()
        raise SettingsError(f"cannot listen on {host}:{port}: {e.strerror}; stop what uses "
                            f"that port, or choose another with --bind HOST:PORT") from None
    server.listen(128)
    server.setblocking(False)
    return server


async def web(settings: Settings, bind: str, *, out: TextIO = sys.stdout,
              err: TextIO = sys.stderr) -> int:
    try:
        import uvicorn

        from bridge.ops.web.app import build
    except ImportError as e:  # the extra is not installed
        raise BridgeError(f"bridge web needs its extra ({e}): pip install "
                          f"'bridge-agents[web]'") from None

    host, port = parse_bind(bind)
    url = await resolve_url(settings)
    probe = make_client(url)
    try:
        await check_reachable(probe, url)
    finally:
        await probe.aclose()
    sock = listen(host, port)
    port = sock.getsockname()[1]
    loopback = is_loopback(host)
    guard = Guard(settings.web_token or new_token(), loopback, port)
    app, _ = build(settings, url, guard)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # ours, below: uvicorn's would raise the signal again once it has stopped

    server = Server(uvicorn.Config(app, log_config=None, log_level="warning",
                                   access_log=False, server_header=False,
                                   timeout_graceful_shutdown=1, lifespan="on"))
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = socket.gethostname()

    async with anyio.create_task_group() as tg:
        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    server.should_exit = True
                    return

        async def announce() -> None:
            while not server.started:
                await anyio.sleep(0.02)
            reads = "" if loopback else "; reading needs the token too (not a loopback bind)"
            print(f"bridge web: room {settings.room} at http://{shown}:{port}/r/{settings.room}"
                  f"#token={guard.token}", file=out, flush=True)
            print(f"bridge web: Redis {redact(url)}; sending needs the token in that address"
                  f"{reads}; Ctrl-C stops", file=err, flush=True)

        tg.start_soon(stop_on_signal)
        tg.start_soon(announce)
        try:
            await server.serve(sockets=[sock])
        finally:
            tg.cancel_scope.cancel()
            sock.close()
    return 0
