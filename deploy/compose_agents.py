#!/usr/bin/env python3
"""Check the deploy settings and write the compose override files that `make up` uses.

Compose has no per-instance environment for `scale`, so each agent named in AGENTS becomes
its own service, `agent-NAME`, that extends the `agent` template of docker-compose.yml with
its name, role, volumes and mounted files. Standard library only: it runs on a host that
has nothing but Python, make and Docker. Settings come from the environment (the Makefile
exports them), so a password never shows on a command line.

    compose_agents.py agents OUT   AGENTS (NAME:ROLE or NAME:ROLE:codex), ROOM, REDIS_URL or
                                   REDIS_URL_<NAME> per agent (+
                                   optional files, CHANNEL_FLAG, BUILD_CA_FILE): writes
                                   OUT, prints the service names
    compose_agents.py room         checks REDIS_URL and ROOM (who, tail)
    compose_agents.py redis OUT    checks REDIS_PASSWORD or REDIS_ACL_FILE (+ REDIS_TLS_*):
                                   writes OUT
    compose_agents.py service NAME FILE  prints agent NAME's service (FILE: from agents)

A bad or missing value exits 2 with one line that says what to do; nothing has started yet.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMPTS = ROOT / "deploy" / "prompts"
# the same rule as bridge/room/keys.py NAME_PATTERN (tests/test_deploy.py checks they agree)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}\Z")
NAME_HINT = "1-32 of a-z 0-9 _ . - starting with a letter or digit"
# safe unquoted in a URL and in redis.conf
PASSWORD_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{16,}\Z")
EXAMPLE_URL = "redis://:PASSWORD@hostA:6379/0"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
# host files the agents may get, read-only: variable -> path inside the container
MOUNTED_FILES = {
    "CLAUDE_CREDENTIALS": "/run/claude/credentials.json",
    "BRIDGE_SECRET_FILE": "/run/bridge/secret",
    "BRIDGE_TLS_CA": "/run/bridge/tls/ca.pem",
    "BRIDGE_TLS_CERT": "/run/bridge/tls/cert.pem",
    "BRIDGE_TLS_KEY": "/run/bridge/tls/key.pem",
}
CUSTOM_PROMPTS = "/opt/bridge/custom-prompts"
UID = 10001  # the agent image's user
# NAME:ROLE[:CLIENT]: the client's template service in docker-compose.yml (codex: the image
# with Codex, the Dockerfile's target agent-codex, built only when such an agent is named)
TEMPLATES = {"claude": "agent", "codex": "agent-codex"}
SPEC_HINT = ("write NAME:ROLE or NAME:ROLE:CLIENT, e.g. alice:developer or "
             "dave:developer:codex")
REDIS_UID = 999  # the redis image's user


class DeployError(Exception):
    pass


@dataclass(frozen=True)
class Agent:
    name: str
    role: str
    client: str = "claude"

    @property
    def service(self) -> str:
        return f"agent-{self.name}"


def check_room(env: Mapping[str, str]) -> str:
    room = env.get("ROOM", "")
    if not room:
        raise DeployError("ROOM is empty: give the room the team shares, e.g. ROOM=main "
                          "(the same on every host)")
    if not NAME_PATTERN.match(room):
        raise DeployError(f"bad ROOM {room!r}: use {NAME_HINT}, e.g. ROOM=main")
    return room


def url_var(agent: Agent) -> str:
    """REDIS_URL_ALICE: one agent's own URL (its own ACL user), instead of REDIS_URL."""
    return "REDIS_URL_" + re.sub(r"[^A-Z0-9]", "_", agent.name.upper())


def check_url(env: Mapping[str, str], var: str = "REDIS_URL") -> str:
    url = env.get(var, "")
    if not url:
        raise DeployError(f"REDIS_URL is not set: give the Redis that every host shares, e.g. "
                          f"REDIS_URL={EXAMPLE_URL} (make up-redis on host A starts one)")
    parts = urlsplit(url)
    if parts.scheme in ("redis+sentinel", "rediss+sentinel"):
        return check_sentinel_url(url, var)
    if parts.scheme not in ("redis", "rediss"):
        raise DeployError(f"bad {var} (scheme {parts.scheme or 'missing'!r}): a container "
                          f"reaches Redis over the network; write {EXAMPLE_URL}, or rediss:// "
                          f"for TLS")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise DeployError(f"bad {var}: the port is not a number ({e}); write "
                          f"{EXAMPLE_URL}") from e
    if not host:
        raise DeployError(f"bad {var}: no host; write {EXAMPLE_URL}")
    if host in LOCAL_HOSTS:
        raise DeployError(f"bad {var}: {host} inside a container is the container itself; "
                          f"use redis (the make up-redis service on this host) or this host's "
                          f"name or address, e.g. redis://:PASSWORD@redis:{port or 6379}/0")
    if parts.path not in ("", "/") and not re.fullmatch(r"/\d+", parts.path):
        raise DeployError(f"bad {var}: the path {parts.path!r} must be a database number, "
                          f"e.g. /0")
    if not parts.password:
        print(f"compose_agents: warning: {var} has no password; anyone who reaches that "
              "Redis can read and send messages (see docs/docker.md: Opening Redis safely)",
              file=sys.stderr)
    return url


def check_sentinel_url(url: str, var: str) -> str:
    """redis+sentinel://[:PASSWORD@]S1:26379,S2:26379/SERVICE[/DB] (docs/scaling.md: Sentinel)."""
    rest = url.partition("://")[2].partition("?")[0]
    netloc, _, path = rest.partition("/")
    credentials, _, hosts = netloc.rpartition("@")
    example = "redis+sentinel://:PASSWORD@sentinel-1:26379,sentinel-2:26379/bridge/0"
    for host in hosts.split(","):
        name = host.rpartition(":")[0] if ":" in host else host
        if not name:
            raise DeployError(f"bad {var}: an empty sentinel address; write {example}")
        if name in LOCAL_HOSTS:
            raise DeployError(f"bad {var}: {name} inside a container is the container itself; "
                              f"use the sentinels' names or addresses, e.g. {example}")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+(/\d+)?/?", path):
        raise DeployError(f"bad {var}: after the sentinels comes the primary's service name "
                          f"(and a database number), e.g. {example}")
    if ":" not in credentials:
        print(f"compose_agents: warning: {var} has no password; anyone who reaches that "
              "Redis can read and send messages (see docs/docker.md: Opening Redis safely)",
              file=sys.stderr)
    return url


def prompt_dirs(env: Mapping[str, str]) -> list[Path]:
    custom = env.get("PROMPT_DIR", "")
    if custom and not Path(custom).is_dir():
        raise DeployError(f"PROMPT_DIR {custom} is not a directory: give the folder that holds "
                          f"ROLE.md files")
    return ([Path(custom).resolve()] if custom else []) + [PROMPTS]


def parse_agents(env: Mapping[str, str]) -> list[Agent]:
    spec = env.get("AGENTS", "")
    words = spec.replace(",", " ").split()
    if not words:
        raise DeployError('AGENTS is empty: name the agents to run on this host as NAME:ROLE '
                          '(or NAME:ROLE:codex), e.g. AGENTS="alice:developer bob:developer"')
    roles = sorted({p.stem for d in prompt_dirs(env) for p in d.glob("*.md")})
    agents: list[Agent] = []
    for word in words:
        parts = word.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise DeployError(f"bad agent {word!r} in AGENTS: {SPEC_HINT}")
        name, role, client = (*parts, "claude") if len(parts) == 2 else parts
        if client not in TEMPLATES:
            raise DeployError(f"bad client {client!r} in {word!r} in AGENTS: use claude (Claude "
                              f"Code, the default) or codex (OpenAI's Codex CLI)")
        if not NAME_PATTERN.match(name):
            raise DeployError(f"bad agent name {name!r} in AGENTS: use {NAME_HINT}")
        if any(agent.name == name for agent in agents):
            raise DeployError(f"agent {name!r} is named twice in AGENTS: every agent needs its "
                              f"own name")
        if role not in roles:
            raise DeployError(f"no prompt for role {role!r} (agent {name}): use one of "
                              f"{', '.join(roles)}, or put {role}.md in a folder given as "
                              f"PROMPT_DIR")
        agents.append(Agent(name, role, client))
    return agents


def mounted_files(env: Mapping[str, str]) -> dict[str, str]:
    """Host path -> container path, for each file variable that is set."""
    mounts = {}
    for var, target in MOUNTED_FILES.items():
        path = env.get(var, "")
        if not path:
            continue
        if not os.path.isfile(path):
            raise DeployError(f"{var}={path} is not a file: give the path of the file on this "
                              f"host, or leave {var} unset")
        warn_unreadable(path, var, UID)
        mounts[str(Path(path).resolve())] = target
    return mounts


def warn_unreadable(path: str, var: str, uid: int) -> None:
    if os.stat(path).st_uid != uid and not os.stat(path).st_mode & 0o004:
        print(f"compose_agents: warning: {path} ({var}) is not readable by the container's "
              f"uid {uid}: chown {uid} it (keep mode 600), or the container cannot read it",
              file=sys.stderr)


def hostname(env: Mapping[str, str], agent: Agent) -> str:
    """`<machine>-<name>`: bridge who shows the machine, and names stay unique on it."""
    machine = re.sub(r"[^a-z0-9-]+", "-", env.get("HOST_NAME", "").lower()).strip("-")
    suffix = re.sub(r"[^a-z0-9-]+", "-", agent.name).strip("-") or "agent"
    if not machine:
        return suffix[:63]
    return f"{machine[:62 - len(suffix)].rstrip('-')}-{suffix}"


def check_channel_flag(env: Mapping[str, str]) -> None:
    flag = env.get("CHANNEL_FLAG", "")
    if flag not in ("", "0", "1"):
        raise DeployError(f"bad CHANNEL_FLAG {flag!r}: use 1 (also load bridge as a development "
                          f"channel, for Claude Code before 2.1.224) or 0 (the default: the "
                          f"session inbox, no flag)")


def check_build_ca(env: Mapping[str, str]) -> None:
    path = env.get("BUILD_CA_FILE", "")
    if not path:
        return
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DeployError(f"BUILD_CA_FILE={path}: cannot read it ({e.strerror}): give the PEM "
                          f"file of the CA certificates your proxy signs with") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise DeployError(f"BUILD_CA_FILE={path} holds no PEM certificate (-----BEGIN "
                          f"CERTIFICATE-----): give the CA certificates your proxy signs with")


def agents_override(env: Mapping[str, str]) -> tuple[dict[str, object], list[Agent]]:
    check_room(env)
    check_channel_flag(env)
    check_build_ca(env)
    agents = parse_agents(env)
    own_url = {agent.name: url_var(agent) for agent in agents if env.get(url_var(agent))}
    for var in own_url.values():
        check_url(env, var)
    if len(own_url) < len(agents):
        check_url(env)
    mounts = mounted_files(env)
    custom = env.get("PROMPT_DIR", "")
    services: dict[str, object] = {}
    volumes: dict[str, object] = {}
    for agent in agents:
        environment = {"BRIDGE_NAME": agent.name, "BRIDGE_ROLE": agent.role}
        if agent.name in own_url:
            # compose fills it in from the environment: no password is written to the file
            environment["BRIDGE_REDIS_URL"] = f"${{{own_url[agent.name]}}}"
        binds = [f"{agent.service}-workspace:/workspace", f"{agent.service}-home:/home/agent"]
        for host_path, target in mounts.items():
            binds.append(f"{host_path}:{target}:ro")
            var = next(v for v, t in MOUNTED_FILES.items() if t == target)
            if var != "CLAUDE_CREDENTIALS":
                environment[var] = target
        if custom:
            binds.append(f"{Path(custom).resolve()}:{CUSTOM_PROMPTS}:ro")
            environment["BRIDGE_PROMPT_DIR"] = CUSTOM_PROMPTS
        services[agent.service] = {
            "extends": {"file": str(COMPOSE_FILE), "service": TEMPLATES[agent.client]},
            "profiles": ["agents"],
            "hostname": hostname(env, agent),
            "environment": environment,
            "volumes": binds,
            "labels": {"bridge.agent": agent.name, "bridge.role": agent.role,
                       "bridge.client": agent.client},
        }
        volumes[f"{agent.service}-workspace"] = {}
        volumes[f"{agent.service}-home"] = {}
    return {"services": services, "volumes": volumes}, agents


def redis_override(env: Mapping[str, str]) -> dict[str, object]:
    password, acl = env.get("REDIS_PASSWORD", ""), env.get("REDIS_ACL_FILE", "")
    if password and acl:
        raise DeployError("both REDIS_PASSWORD and REDIS_ACL_FILE are set: set only one")
    service: dict[str, object] = {"labels": {"bridge.auth": "acl" if acl else "password"}}
    mounts = redis_tls(env)
    if acl:
        if not os.path.isfile(acl):
            raise DeployError(f"REDIS_ACL_FILE={acl} is not a file: give the path of a Redis "
                              f"ACL file (bridge acl --format file prints its lines)")
        users = Path(acl).read_text(encoding="utf-8", errors="replace").split("\n")
        if not any(line.split()[:2] == ["user", "default"] for line in users):
            raise DeployError(f"REDIS_ACL_FILE={acl} has no 'user default' line, so Redis "
                              f"would let anyone in as the default user: add 'user default off'")
        warn_unreadable(acl, "REDIS_ACL_FILE", REDIS_UID)
        mounts[str(Path(acl).resolve())] = "/run/redis/users.acl"
    elif not password:
        raise DeployError("REDIS_PASSWORD is not set: Redis on a shared network needs one; "
                          "e.g. export REDIS_PASSWORD=$(openssl rand -hex 24), or give "
                          "REDIS_ACL_FILE")
    elif not PASSWORD_PATTERN.match(password):
        raise DeployError("bad REDIS_PASSWORD: use at least 16 of A-Z a-z 0-9 . _ ~ - (it goes "
                          "into REDIS_URL unescaped), e.g. $(openssl rand -hex 24)")
    if mounts:
        service["volumes"] = [f"{host}:{target}:ro" for host, target in mounts.items()]
    return {"services": {"redis": service}}


def redis_tls(env: Mapping[str, str]) -> dict[str, str]:
    """REDIS_TLS_CERT and REDIS_TLS_KEY (and REDIS_TLS_CA to require client certificates)."""
    files = {var: env.get(var, "") for var in ("REDIS_TLS_CERT", "REDIS_TLS_KEY", "REDIS_TLS_CA")}
    if bool(files["REDIS_TLS_CERT"]) != bool(files["REDIS_TLS_KEY"]):
        raise DeployError("give both REDIS_TLS_CERT and REDIS_TLS_KEY (the server's certificate "
                          "and key, PEM), or neither")
    if files["REDIS_TLS_CA"] and not files["REDIS_TLS_CERT"]:
        raise DeployError("REDIS_TLS_CA needs REDIS_TLS_CERT and REDIS_TLS_KEY too")
    mounts = {}
    for var, path in files.items():
        if not path:
            continue
        if not os.path.isfile(path):
            raise DeployError(f"{var}={path} is not a file: give a PEM file on this host")
        warn_unreadable(path, var, REDIS_UID)
        name = var.removeprefix("REDIS_TLS_").lower()
        mounts[str(Path(path).resolve())] = f"/run/redis/tls/{name}.pem"
    return mounts


def service(name: str, generated: str) -> str:
    """The service of agent NAME, which `make up` must have started on this host."""
    if not name:
        raise DeployError("NAME is not set: say which agent, e.g. make attach NAME=alice")
    if not NAME_PATTERN.match(name):
        raise DeployError(f"bad NAME {name!r}: use {NAME_HINT}")
    try:
        here = json.loads(Path(generated).read_text(encoding="utf-8").split("\n", 1)[1])
    except (OSError, ValueError, IndexError):
        raise DeployError("no agents were started on this host: run make up first") from None
    names = [s.removeprefix("agent-") for s in here.get("services", {})]
    if name not in names:
        raise DeployError(f"no agent {name!r} on this host; here: {', '.join(names) or 'none'}")
    return Agent(name, "").service


def write(path: str, data: Mapping[str, object]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # JSON is YAML: no quoting rules of our own to get wrong
    text = ("# generated by deploy/compose_agents.py for make; do not edit\n"
            + json.dumps(data, indent=2) + "\n")
    Path(path).write_text(text, encoding="utf-8")


def main(argv: list[str], env: Mapping[str, str]) -> int:
    command, *args = argv or ["help"]
    try:
        if command == "agents" and len(args) == 1:
            data, agents = agents_override(env)
            write(args[0], data)
            print(" ".join(agent.service for agent in agents))
        elif command == "room" and not args:
            check_url(env)
            check_room(env)
        elif command == "redis" and len(args) == 1:
            write(args[0], redis_override(env))
        elif command == "service" and len(args) == 2:
            print(service(args[0], args[1]))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except DeployError as e:
        print(f"make: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
