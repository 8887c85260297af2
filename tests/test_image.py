"""The agent image, built from deploy/Dockerfile and run for real with podman (issue 17).

No Docker engine and no registry: tests/support/images.py makes the base images from Debian's
packages and npm and imports them under the names the Dockerfile uses; the build reaches PyPI
and npm the way the host does, with the host's extra CA certificates (and one the tests
make) given as BUILD_CA_CERTS. Then, hardened as docker-compose.yml runs it (read-only root,
every capability dropped, no-new-privileges, uid 10001):

- the image: its health check kept, its user, and none of the build's CA certificates;
- `bridge doctor` inside, against a redis-server the test started;
- the compose story through make (docker-compose 1.29 against `podman system service`):
  `make up-redis`, `make up AGENTS="alice:developer bob:developer"`, `make who`, the health
  check run by hand, a message from the host answered by alice's real Claude Code (its model
  is tests/support/fake_api.py in a container beside it) over the session inbox, and `make down`.

Podman here needs a containers.conf of the tests' own (tests/support/images.py says why); the
Dockerfile and the compose file are not changed for it. Skipped, with the reason, only where
podman cannot run (not root, or the packages missing); CI installs them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import RedisServer, free_port
from tests.support import images
from tests.support.claude_code import FAKE_API, FAKE_API_KEY, QUIET_ENV, read_tail, wait_until
from tests.test_deploy import assert_a_developer_heard_boss_through_the_inbox

# the first test pays for the bases and the build: about 3 minutes cold on 2 cores
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parent.parent
IMAGE = images.AGENT_IMAGE
PROJECT = "bridgeimagetest"  # not the default `bridge`: a user's own stack stays untouched
ROOM = "imagetest"
PASSWORD = "imagetest0123456789abcdef"
BUILD_TIMEOUT = 1200
HARDENED = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--user", "10001:10001", "--tmpfs", "/tmp:size=256m,mode=1777"]


def podman(env: dict[str, str], *args: str, timeout: float = 120,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        pytest.fail(f"podman {' '.join(args)}: exit {done.returncode}\n{done.stdout}"
                    f"{done.stderr}")
    return done


@pytest.fixture(scope="module")
def penv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for podman, with the tests' containers.conf; the bases in place."""
    problem = images.podman_missing()
    if problem:
        print(f"\nSKIP (agent image): {problem}", file=sys.stderr)
        pytest.skip(problem)
    conf = images.containers_conf(tmp_path_factory.mktemp("podman") / "containers.conf")
    env = images.podman_env(conf)
    started = time.monotonic()
    try:
        done = images.ensure_bases(env)
    except images.ImageError as e:
        pytest.fail(f"the base images: {e}")
    print(f"\nbase images in {time.monotonic() - started:.0f}s: {'; '.join(done)}",
          file=sys.stderr)
    return env


@pytest.fixture(scope="module")
def build_ca() -> str:
    """BUILD_CA_CERTS: the host's extra CA certificates and a marker CA of the tests' own (so
    the check that the image holds none of them means something on any machine)."""
    try:
        return images.build_ca_certs()
    except images.ImageError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def image(penv: dict[str, str], build_ca: str) -> str:
    """deploy/Dockerfile built as it is (tests/support/images.py: build_agent)."""
    try:
        seconds, cached = images.build_agent(penv, build_ca, IMAGE, BUILD_TIMEOUT)
    except images.ImageError as e:
        pytest.fail(f"podman build: {e}")
    print(f"\nimage built in {seconds:.0f}s ({cached} steps from cache)", file=sys.stderr)
    return IMAGE


def read_tail_text(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def inspect(penv: dict[str, str], name: str) -> dict[str, Any]:
    return dict(json.loads(podman(penv, "image", "inspect", name).stdout)[0])


# --------------------------------------------------------------------------- the image


def test_the_image_keeps_its_health_check_and_no_build_certificate(
        penv: dict[str, str], image: str, build_ca: str) -> None:
    found = inspect(penv, image)
    config = found["Config"]
    assert config["User"] == "10001:10001", config
    health = found.get("Healthcheck") or {}  # podman shows it beside Config, not in it
    assert "bridge doctor" in " ".join(health.get("Test", [])), found
    env = "\n".join(config.get("Env") or [])
    # nothing that points at a bundle the build used, nor the certificates themselves
    for word in ("BUILD_CA", "PIP_CERT", "NODE_EXTRA_CA_CERTS", "SSL_CERT", "REQUESTS_CA",
                 "BEGIN CERTIFICATE"):
        assert word not in env, env
    history = podman(penv, "history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "BEGIN CERTIFICATE" not in history and "BUILD_CA_CERTS" not in history, history
    # no file of the image holds a line of any certificate given to the build
    lines = {line for line in build_ca.splitlines()
             if len(line) == 64 and "-" not in line}  # base64 body lines
    assert lines, build_ca
    mount = podman(penv, "image", "mount", image).stdout.strip()
    try:
        pattern = "\n".join(sorted(lines))
        grep = subprocess.run(["grep", "-rlF", "--binary-files=text", "-e", pattern, mount],
                              capture_output=True, text=True, timeout=300)
        assert grep.returncode == 1, f"a build certificate is in the image: {grep.stdout}" \
                                     f"{grep.stderr}"
    finally:
        podman(penv, "image", "unmount", image, check=False)


def test_bridge_doctor_passes_inside_the_hardened_image(
        penv: dict[str, str], image: str, redis_server: RedisServer) -> None:
    """As compose runs it; the host's network, so the test's redis-server on 127.0.0.1."""
    script = ("id -u; touch /opt/probe 2>/dev/null && echo root-writable; "
              "grep CapEff /proc/self/status; exec bridge doctor --redis \"$1\" --room doctor")
    done = podman(penv, "run", "--rm", *HARDENED, "--network", "host", "--entrypoint", "sh",
                  image, "-c", script, "sh", redis_server.url, check=False, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"bridge doctor in the image: exit {done.returncode}\n{out}"
    assert out.splitlines()[0] == "10001", out
    assert "root-writable" not in out, out
    assert re.search(r"CapEff:\s+0+$", out, re.M), out
    assert "Redis reachable" in out, out
    # and it does check: with Redis gone it fails
    port = free_port()
    down = podman(penv, "run", "--rm", *HARDENED, "--network", "host", "--entrypoint",
                  "bridge", image, "doctor", "--redis", f"redis://127.0.0.1:{port}/0",
                  check=False, timeout=120)
    assert down.returncode == 1, down.stdout + down.stderr


# --------------------------------------------------------------------------- compose + make


class Service:
    """`podman system service` on a private socket: docker-compose's Docker API."""

    def __init__(self, env: dict[str, str], run_dir: Path) -> None:
        self.socket = run_dir / "podman.sock"
        self.log = run_dir / "podman-service.log"
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                ["podman", "system", "service", "--time=0", f"unix://{self.socket}"],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        wait_until("podman system service", self.socket.exists, 30,
                   lambda: read_tail(self.log))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def leftovers(penv: dict[str, str]) -> dict[str, str]:
    """What of the test project podman still has: containers, pods, networks."""
    label = f"label=com.docker.compose.project={PROJECT}"
    found = {
        "containers": podman(penv, "ps", "-a", "--filter", label, "--format",
                             "{{.Names}}").stdout.strip(),
        "pods": podman(penv, "pod", "ps", "--filter", f"name={PROJECT}", "--format",
                       "{{.Name}}").stdout.strip(),
        "networks": "\n".join(n for n in podman(penv, "network", "ls", "--format",
                                                "{{.Name}}").stdout.split()
                              if n.startswith(PROJECT)),
    }
    return {kind: names for kind, names in found.items() if names}


@pytest.fixture
def compose(penv: dict[str, str], image: str, build_ca: str,
            tmp_path: Path) -> Iterator[dict[str, Any]]:
    """make's environment for the compose story; afterwards nothing of it is left."""
    service = Service(penv, tmp_path)
    ca_file = tmp_path / "build-ca.pem"
    ca_file.write_text(build_ca)
    env = {**penv, "DOCKER_HOST": f"unix://{service.socket}"}
    for var in ("REDIS_URL", "ROOM", "AGENTS", "REDIS_PASSWORD", "REDIS_ACL_FILE",
                "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_ARGS", "DRY_RUN"):
        env.pop(var, None)
    variables = {"PROJECT": PROJECT, "ROOM": ROOM, "GENERATED": str(tmp_path / "generated"),
                 "COMPOSE": "docker-compose", "BRIDGE_IMAGE": image,
                 "REDIS_IMAGE": images.REDIS_IMAGE, "BUILD_CA_FILE": str(ca_file),
                 "HOST_NAME": "imagehost"}
    try:
        yield {"env": env, "vars": variables, "dir": tmp_path, "service": service}
    finally:
        podman(penv, "rm", "-f", "-t", "0", f"{PROJECT}-fake-api", check=False)
        subprocess.run(["make", "down", *(f"{k}={v}" for k, v in variables.items())],
                       cwd=ROOT, env=env, capture_output=True, timeout=180)
        for kind, names in leftovers(penv).items():
            for name in names.split():
                podman(penv, kind[:-1] if kind != "pods" else "pod", "rm", "-f", name,
                       check=False)
        volumes = podman(penv, "volume", "ls", "--filter",
                         f"label=com.docker.compose.project={PROJECT}", "--format",
                         "{{.Name}}").stdout.split()
        if volumes:
            podman(penv, "volume", "rm", "-f", *volumes, check=False)
        service.stop()


def make(compose: dict[str, Any], target: str, timeout: float = 300,
         **variables: str) -> subprocess.CompletedProcess[str]:
    args = {**compose["vars"], **variables}
    started = time.monotonic()
    done = subprocess.run(["make", target, *(f"{k}={v}" for k, v in args.items())], cwd=ROOT,
                          env=compose["env"], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    print(f"make {target}: exit {done.returncode} in {time.monotonic() - started:.0f}s",
          file=sys.stderr)
    assert done.returncode == 0, (f"make {target}: exit {done.returncode}\n{done.stdout}"
                                  f"{done.stderr}\npodman service log:\n"
                                  f"{read_tail(compose['service'].log, 30)}")
    return done


def fake_api(penv: dict[str, str], compose: dict[str, Any]) -> Path:
    """tests/support/fake_api.py in a container on the project's network, as `fake-api`; the
    agents' ANTHROPIC_BASE_URL. Returns its request log."""
    api_dir = compose["dir"] / "api"
    api_dir.mkdir()
    (api_dir / "turns.json").write_text(json.dumps({
        "default_reply": "OK", "side_reply": "OK", "rules": [
            {"id": "answer", "when": {"last_user_contains": "HELLO-FROM-BOSS"},
             "reply": [{"type": "tool_use", "name": "mcp__bridge__send_message",
                        "input": {"to": "boss", "text": "PONG-FROM-ALICE"}}]}]}))
    podman(penv, "run", "-d", "--name", f"{PROJECT}-fake-api", "--network",
           f"{PROJECT}_default", "--network-alias", "fake-api",
           "-v", f"{FAKE_API}:/opt/fake_api.py:ro", "-v", f"{api_dir}:/api",
           images.PYTHON_IMAGE, "python3", "/opt/fake_api.py", "--host", "0.0.0.0",
           "--port", "8080", "--port-file", "/api/port", "--log", "/api/requests.jsonl",
           "--script", "/api/turns.json")
    wait_until("the fake API", (api_dir / "port").exists, 30,
               lambda: podman(penv, "logs", f"{PROJECT}-fake-api", check=False).stderr)
    return Path(api_dir / "requests.jsonl")


def test_the_compose_story_through_make(penv: dict[str, str], compose: dict[str, Any]) -> None:
    port = free_port()
    host_url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    make(compose, "up-redis", REDIS_PASSWORD=PASSWORD, REDIS_BIND="127.0.0.1",
         REDIS_PORT=str(port))
    client = redis.Redis.from_url(host_url)
    wait_until("the compose Redis", lambda: ping(client), 60)
    requests = fake_api(penv, compose)

    # the tests' Claude Code reaches nothing but the fake API: telemetry and the rest off,
    # through Claude Code's own settings (CLAUDE_ARGS is split on spaces: none in the JSON)
    settings = json.dumps({"env": QUIET_ENV}, separators=(",", ":"))
    container_url = f"redis://:{PASSWORD}@redis:6379/0"
    up = make(compose, "up", timeout=600, AGENTS="alice:developer bob:developer",
              REDIS_URL=container_url, ANTHROPIC_API_KEY=FAKE_API_KEY,
              ANTHROPIC_BASE_URL="http://fake-api:8080", CLAUDE_ARGS=f"--settings {settings}")
    assert "agent-alice" in up.stdout and "agent-bob" in up.stdout, up.stdout
    agents = {name: f"{PROJECT}_agent-{name}_1" for name in ("alice", "bob")}

    def logs() -> str:
        out = []
        for name, container in agents.items():
            got = podman(penv, "logs", container, check=False)
            out.append(f"--- {name}:\n{read_tail_text(got.stdout + got.stderr, 20)}")
        return "\n".join(out)

    for name, container in agents.items():
        config = podman(penv, "inspect", container, "--format",
                        "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} "
                        "{{.HostConfig.SecurityOpt}} {{.Config.User}}").stdout
        assert config.startswith("true ") and "no-new-privileges" in config, config
        assert config.split()[-1] == "10001:10001", config
        key = f"bridge:{{{ROOM}}}:agent:{name}"
        wait_until(f"{name} in the room", lambda: client.exists(key), 180, logs)  # noqa: B023

        def up_in(c: str = container) -> bool:
            return "Claude Code is up;" in podman(penv, "logs", c, check=False).stdout

        wait_until(f"{name}'s Claude Code up", up_in, 120, logs)

    who = make(compose, "who", timeout=180, REDIS_URL=container_url)
    # (COMPOSE_INTERACTIVE_NO_CLI=1 would lose `run`'s output against podman: not set)
    listed = who.stdout
    assert re.search(r"\balice\b", listed) and re.search(r"\bbob\b", listed), listed
    assert "imagehost-alice" in listed, listed  # the machine each agent runs on

    health = podman(penv, "healthcheck", "run", agents["alice"], check=False, timeout=60)
    status = podman(penv, "inspect", agents["alice"], "--format",
                    "{{.State.Health.Status}}").stdout.strip()
    assert health.returncode == 0 and status == "healthy", \
        f"{health.stdout}{health.stderr} status {status}\n{logs()}"

    # a message from the host reaches alice's Claude Code through its session inbox, and
    # the answer her model gives comes back through the room
    sent = subprocess.run([str(ROOT / ".venv" / "bin" / "bridge"), "send", "--as", "boss",
                           "--redis", host_url, "--room", ROOM, "alice", "HELLO-FROM-BOSS"],
                          capture_output=True, text=True, timeout=60, env=compose["env"])
    assert sent.returncode == 0, sent.stderr

    def answered() -> bool:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(  # type: ignore[assignment]
            f"bridge:{{{ROOM}}}:log")
        return any(f[b"from"] == b"alice" and f[b"to"] == b"boss"
                   and f[b"text"] == b"PONG-FROM-ALICE" for _, f in entries)

    wait_until("alice's answer in the room log", answered, 120,
               lambda: logs() + "\nrequests:\n" + read_tail(requests, 5))
    assert_a_developer_heard_boss_through_the_inbox(requests)

    podman(penv, "rm", "-f", "-t", "0", f"{PROJECT}-fake-api")  # not compose's: gone first
    make(compose, "down", timeout=180)
    assert leftovers(penv) == {}, leftovers(penv)


def ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False

