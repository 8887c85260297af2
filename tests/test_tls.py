"""TLS: real agents and the operator CLI over rediss:// against a redis-server that takes only
TLS and asks for client certificates (mutual TLS), with certificates made here by openssl."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_SERVER, free_port
from tests.support.mcp_client import serve_until_it_exits
from tests.test_cli_ops import bridge, cli_env

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            f"/CN={name}", "-keyout", key, "-out", cert)
    return cert, key


def make_cert(directory: Path, name: str, ca: tuple[Path, Path], san: str = "") -> None:
    csr = directory / f"{name}.csr"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", directory / f"{name}.key", "-out", csr)
    extra: list[str | Path] = []
    if san:
        (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        extra = ["-extfile", directory / f"{name}.ext"]
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
            "-days", "2", "-out", directory / f"{name}.crt", *extra)


@dataclass
class TlsRedis:
    port: int
    certs: Path

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def file(self, name: str) -> str:
        return str(self.certs / name)

    def env(self, **extra: str) -> dict[str, str]:
        """What an agent needs: the CA, and a client certificate with its key."""
        return {"BRIDGE_REDIS_URL": self.url, "BRIDGE_TLS_CA": self.file("ca.crt"),
                "BRIDGE_TLS_CERT": self.file("client.crt"),
                "BRIDGE_TLS_KEY": self.file("client.key"), **extra}

    def admin(self, check_hostname: bool = True) -> redis.Redis:
        return redis.Redis(port=self.port, ssl=True, ssl_ca_certs=self.file("ca.crt"),
                           ssl_certfile=self.file("client.crt"),
                           ssl_keyfile=self.file("client.key"), socket_timeout=5,
                           ssl_check_hostname=check_hostname)


@contextlib.contextmanager
def tls_redis_server(directory: Path, san: str = "IP:127.0.0.1,DNS:localhost"
                     ) -> Iterator[TlsRedis]:
    certs = directory / "certs"
    certs.mkdir(parents=True)
    ca = make_ca(certs, "ca")
    make_cert(certs, "server", ca, san=san)
    make_cert(certs, "client", ca)
    rogue = make_ca(certs, "rogue-ca")  # a CA the server does not trust
    make_cert(certs, "rogue-client", rogue)
    server = TlsRedis(free_port(), certs)
    # --port 0: no plain port at all, so whatever talks to this server talks TLS
    process = subprocess.Popen(
        [REDIS_SERVER, "--port", "0", "--tls-port", str(server.port), "--bind", "127.0.0.1",
         "--save", "", "--dir", str(directory), "--tls-cert-file", server.file("server.crt"),
         "--tls-key-file", server.file("server.key"), "--tls-ca-cert-file",
         server.file("ca.crt"), "--tls-auth-clients", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with contextlib.closing(server.admin(check_hostname=False)) as admin:
                    if admin.ping():
                        break
            except redis.ConnectionError:
                assert process.poll() is None, "redis-server with TLS did not start"
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield server
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    with tls_redis_server(tmp_path) as server:
        yield server


async def test_agents_talk_over_mutual_tls(agents, tls_redis):
    alice = await agents.start("alice", env=tls_redis.env(), redis_url=None)
    bob = await agents.start("bob", env=tls_redis.env(), redis_url=None)
    assert "bob" in await alice.tool("list_participants")
    await alice.tool("send_message", to="bob", text="over TLS")
    [push] = await bob.wait_messages(1, timeout=20)
    assert push["content"] == "over TLS"
    await bob.tool("send_message", to="alice", text="and back", reply_to=push["meta"]["message_id"])
    [answer] = await alice.wait_messages(1, timeout=20)
    assert answer["content"] == "and back"
    assert tls_redis.admin().xlen("bridge:{main}:log") == 2

    # the operator CLI, with the flags instead of the variables
    flags = ["--redis", tls_redis.url, "--tls-ca", tls_redis.file("ca.crt"),
             "--tls-cert", tls_redis.file("client.crt"), "--tls-key", tls_redis.file("client.key")]
    who = await bridge("who", *flags)
    assert who.returncode == 0 and "alice" in who.stdout and "bob" in who.stdout, who.stderr
    history = await bridge("history", *flags)
    assert "over TLS" in history.stdout and "and back" in history.stdout, history.stderr
    doctor = await bridge("doctor", *flags)
    assert doctor.returncode == 0, doctor.stdout
    assert re.search(r"^ok +TLS: TLSv1\.[23], \S+; server certificate and host name verified "
                     r"against .*ca\.crt; client certificate .*client\.crt", doctor.stdout, re.M)
    # the TLS files are not part of the URL the user sees
    assert "ssl_ca_certs" not in doctor.stdout + who.stderr + history.stderr


@pytest.mark.slow
async def test_tls_mistakes_are_one_clear_line(tls_redis):
    base = tls_redis.env()
    cases = [
        ({"BRIDGE_TLS_CERT": "", "BRIDGE_TLS_KEY": ""},
         "the server asks for a client certificate and we sent none; set --tls-cert"),
        ({"BRIDGE_TLS_CA": tls_redis.file("rogue-ca.crt")},
         "certificate verify failed: self-signed certificate in certificate chain; --tls-ca / "
         "BRIDGE_TLS_CA is not the CA that signed the server's certificate"),
        ({"BRIDGE_TLS_CA": ""},  # the system's CAs do not know the test CA
         "certificate verify failed: self-signed certificate in certificate chain; set --tls-ca"),
        ({"BRIDGE_TLS_CERT": tls_redis.file("rogue-client.crt"),
          "BRIDGE_TLS_KEY": tls_redis.file("rogue-client.key")},
         "the server refused our client certificate"),
        ({"BRIDGE_REDIS_URL": f"redis://127.0.0.1:{tls_redis.port}/0", "BRIDGE_TLS_CA": "",
          "BRIDGE_TLS_CERT": "", "BRIDGE_TLS_KEY": ""},
         f"If that port takes only TLS, use rediss://127.0.0.1:{tls_redis.port}"),
        ({"BRIDGE_TLS_CA": "/nonexistent/ca.pem"},
         "bad value for --tls-ca / BRIDGE_TLS_CA (from BRIDGE_TLS_CA): '/nonexistent/ca.pem'; "
         "use the path of a readable PEM file"),
        ({"BRIDGE_REDIS_URL": f"redis://127.0.0.1:{tls_redis.port}/0"},
         "set, but the Redis URL is not rediss://"),
        ({"BRIDGE_TLS_CERT": ""}, "--tls-key / BRIDGE_TLS_KEY is set without --tls-cert"),
    ]
    for change, needle in cases:
        result = await bridge("who", env=cli_env(**(base | change)))
        assert result.returncode == 1, (change, result)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("bridge: ") and needle in line, (change, line)

    # bridge serve stops with the same line, not a traceback
    served = await serve_until_it_exits(
        "--name", "alice",
        env=cli_env(**(base | {"BRIDGE_TLS_CA": tls_redis.file("rogue-ca.crt")})))
    assert served.returncode == 1 and "Traceback" not in served.stderr
    assert "TLS handshake with 127.0.0.1" in served.stderr and "certificate verify failed" \
        in served.stderr, served.stderr

    # doctor: a FAIL line, and the fix under it
    doctor = await bridge("doctor", env=cli_env(**(base | {"BRIDGE_TLS_CERT": "",
                                                           "BRIDGE_TLS_KEY": ""})))
    assert doctor.returncode == 1
    assert re.search(r"^FAIL +TLS handshake with 127\.0\.0\.1:\d+ failed: the server asks for a "
                     r"client certificate and we sent none\n +fix: set --tls-cert", doctor.stdout,
                     re.M), doctor.stdout


async def test_host_name_is_verified(tls_redis, tmp_path):
    # the certificate names 127.0.0.1 and localhost: both work
    env = tls_redis.env(BRIDGE_REDIS_URL=f"rediss://localhost:{tls_redis.port}/0")
    assert (await bridge("who", "--json", env=cli_env(**env))).returncode == 0
    # a certificate for another host, from the CA we trust, is refused all the same
    with tls_redis_server(tmp_path / "elsewhere", san="DNS:elsewhere.example") as other:
        result = await bridge("who", env=cli_env(**other.env()))
    assert result.returncode == 1
    assert "certificate verify failed: IP address mismatch" in result.stderr, result.stderr
    assert "connect to a host name or address that the server's certificate names" \
        in result.stderr


def test_a_dropped_plain_connection_is_worth_waiting_for() -> None:
    """A Redis port whose container is not up yet drops connections: bridge serve waits for
    it (only a TLS URL's drop can mean a refused certificate)."""
    from redis.exceptions import AuthenticationError
    from redis.exceptions import ConnectionError as RedisConnectionError

    from bridge.redis.clients import refused

    dropped = RedisConnectionError("Connection closed by server.")
    assert not refused(dropped, "redis://10.0.0.1:6379/0")
    assert refused(AuthenticationError("invalid password"), "redis://10.0.0.1:6379/0")
