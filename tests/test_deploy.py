"""The Docker deployment (issue 7) and its hygiene (issue 6), checked without a Docker engine.

The compose files are validated by the real `docker-compose config` (Debian's 1.29.2,
installed by .ci/run) with every profile; the Makefile's targets run in DRY_RUN mode, which
does every check and writes the generated file but prints the compose command instead of
running it; the Dockerfile is parsed and audited; the scripts the image runs (template
rendering, Claude Code's first-run settings, the Redis start script) run here for real, and
so does the agent entrypoint, once with the real Claude Code and once (BRIDGE_CLIENT=codex, an
agent NAME:ROLE:codex) with the real Codex.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.room.keys import NAME_PATTERN
from tests.conftest import REDIS_SERVER, free_port
from tests.support.claude_code import wait_until

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
sys.path.insert(0, str(DEPLOY))
import claude_home  # noqa: E402
import compose_agents  # noqa: E402
import render  # noqa: E402

PASSWORD = "0123456789abcdef0123456789abcdef"
URL = f"redis://:{PASSWORD}@hosta:6379/0"
# Claude Code switches channels off with any of these, and channels need the first-party API
# (docs/claude-code.md): none may be set by the deployment.
CHANNEL_KILLERS = {"DISABLE_TELEMETRY", "DO_NOT_TRACK", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
                   "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY"}
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|PASS|TOKEN|CREDENTIAL", re.IGNORECASE)
COMPOSE = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(COMPOSE is None, reason="docker-compose is not installed "
                                   "(.ci/run installs Debian's docker-compose)")


def make(target: str, tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """`make TARGET DRY_RUN=1 ...` with a clean environment: only what the test gives."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    args = [f"{k}={v}" for k, v in variables.items()]
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), target, "DRY_RUN=1",
                           f"GENERATED={tmp_path}/generated", "COMPOSE=docker-compose",
                           "HOST_NAME=hostb", *args],
                          env=env, capture_output=True, text=True, timeout=60)


def compose_config(tmp_path: Path, *files: Path, **env: str) -> dict[str, Any]:
    """`docker-compose config` with every profile, parsed (with the YAML of compose's own
    Python: the project's venv has no YAML parser)."""
    assert COMPOSE is not None
    args = [COMPOSE, "-p", "bridge", "-f", str(ROOT / "docker-compose.yml")]
    for file in files:
        args += ["-f", str(file)]
    for profile in ("redis", "agents", "tools", "template"):
        args += ["--profile", profile]
    full_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env}
    out = subprocess.run([*args, "config"], env=full_env, capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    python = Path(COMPOSE).read_text(errors="replace").splitlines()[0].removeprefix("#!").split()
    parsed = subprocess.run(
        [*python, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=out.stdout, capture_output=True, text=True, timeout=60, check=True)
    config: dict[str, Any] = json.loads(parsed.stdout)
    return config


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


# --- make up: AGENTS -> services ---

@needs_compose
def test_up_turns_agents_into_one_service_each(tmp_path: Path) -> None:
    result = make("up", tmp_path, REDIS_URL=URL, ROOM="team1",
                  AGENTS="alice:developer bob:developer carol:manager")
    assert result.returncode == 0, result.stderr
    command = result.stdout.strip()
    assert command == (f"docker-compose -p bridge -f docker-compose.yml -f {tmp_path}/generated/"
                       f"agents.yml --profile agents up -d --build agent-alice agent-bob "
                       f"agent-carol")
    assert PASSWORD not in result.stdout + result.stderr  # the URL travels in the environment

    services = compose_config(tmp_path, tmp_path / "generated" / "agents.yml",
                              REDIS_URL=URL, ROOM="team1")["services"]
    for name, role in (("alice", "developer"), ("bob", "developer"), ("carol", "manager")):
        service = services[f"agent-{name}"]
        assert service["environment"]["BRIDGE_NAME"] == name
        assert service["environment"]["BRIDGE_ROLE"] == role
        assert service["environment"]["BRIDGE_ROOM"] == "team1"
        assert service["environment"]["BRIDGE_REDIS_URL"] == URL
        assert service["hostname"] == f"hostb-{name}"
        # the session inbox by default: no channel flag, no dialog
        assert service["environment"]["BRIDGE_CHANNEL_FLAG"] == "0"
        assert "agents" in service["profiles"]
        assert sorted(v.split(":")[:2] for v in service["volumes"]) == [
            [f"agent-{name}-home", "/home/agent"], [f"agent-{name}-workspace", "/workspace"]]
        assert "mcp__bridge" not in json.dumps(service)  # the command line is the image's
    # the template itself is never started by make up
    assert services["agent"]["profiles"] == ["template"]


@needs_compose
def test_up_runs_a_codex_agent_in_the_image_with_codex(tmp_path: Path) -> None:
    """NAME:ROLE:codex: the service extends the agent-codex template, whose image is the
    Dockerfile's target agent-codex (the lean image stays the Claude agents'), with
    BRIDGE_CLIENT=codex and OPENAI_API_KEY passed through from the host."""
    key = "sk-proj-test-" + "y" * 20
    result = make("up", tmp_path, REDIS_URL=URL, ROOM="mixed",
                  AGENTS="carol:manager alice:developer:claude dave:developer:codex")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("up -d --build agent-carol agent-alice agent-dave")
    generated = tmp_path / "generated" / "agents.yml"
    services = compose_config(tmp_path, generated, REDIS_URL=URL, ROOM="mixed",
                              OPENAI_API_KEY=key, CODEX_ARGS="-m gpt-test")["services"]
    dave = services["agent-dave"]
    assert dave["image"] == "bridge-agent-codex:local"
    assert dave["build"]["target"] == "agent-codex"
    assert dave["build"]["dockerfile"] == "deploy/Dockerfile"
    env = dave["environment"]
    assert env["BRIDGE_CLIENT"] == "codex" and env["BRIDGE_NAME"] == "dave"
    assert env["BRIDGE_ROLE"] == "developer" and env["BRIDGE_ROOM"] == "mixed"
    assert env["OPENAI_API_KEY"] == key and env["CODEX_ARGS"] == "-m gpt-test"
    assert dave["labels"]["bridge.client"] == "codex"
    assert sorted(v.split(":")[:2] for v in dave["volumes"]) == [
        ["agent-dave-home", "/home/agent"], ["agent-dave-workspace", "/workspace"]]
    for name in ("carol", "alice"):  # the Claude Codes: the image without Codex
        service = services[f"agent-{name}"]
        assert service["image"] == "bridge-agent:local", name
        assert "target" not in service["build"], name
        assert "BRIDGE_CLIENT" not in service["environment"], name
        assert service["labels"]["bridge.client"] == "claude", name
    assert services["agent-codex"]["profiles"] == ["template"]  # never started itself
    assert key not in generated.read_text() + (ROOT / "docker-compose.yml").read_text()


@needs_compose
def test_up_with_channel_flag_gives_old_claude_codes_the_channel(tmp_path: Path) -> None:
    result = make("up", tmp_path, REDIS_URL=URL, AGENTS="alice:developer", CHANNEL_FLAG="1")
    assert result.returncode == 0, result.stderr
    services = compose_config(tmp_path, tmp_path / "generated" / "agents.yml",
                              REDIS_URL=URL, CHANNEL_FLAG="1")["services"]
    assert services["agent-alice"]["environment"]["BRIDGE_CHANNEL_FLAG"] == "1"


@needs_compose
def test_up_mounts_the_optional_files_read_only(tmp_path: Path) -> None:
    files = {}
    for var in ("BRIDGE_SECRET_FILE", "BRIDGE_TLS_CA", "CLAUDE_CREDENTIALS"):
        files[var] = tmp_path / var.lower()
        files[var].write_text("x")
        files[var].chmod(0o644)
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "tester.md").write_text("# Your role: tester\n")
    result = make("up", tmp_path, REDIS_URL=URL, AGENTS="tina:tester",
                  PROMPT_DIR=str(prompts), **{k: str(v) for k, v in files.items()})
    assert result.returncode == 0, result.stderr
    service = compose_config(tmp_path, tmp_path / "generated" / "agents.yml",
                             REDIS_URL=URL)["services"]["agent-tina"]
    volumes = set(service["volumes"])
    assert f"{files['BRIDGE_SECRET_FILE']}:/run/bridge/secret:ro" in volumes
    assert f"{files['BRIDGE_TLS_CA']}:/run/bridge/tls/ca.pem:ro" in volumes
    assert f"{files['CLAUDE_CREDENTIALS']}:/run/claude/credentials.json:ro" in volumes
    assert f"{prompts}:/opt/bridge/custom-prompts:ro" in volumes
    env = service["environment"]
    assert env["BRIDGE_SECRET_FILE"] == "/run/bridge/secret"
    assert env["BRIDGE_TLS_CA"] == "/run/bridge/tls/ca.pem"
    assert env["BRIDGE_PROMPT_DIR"] == "/opt/bridge/custom-prompts"
    assert "CLAUDE_CREDENTIALS" not in env  # the entrypoint copies the file; not a bridge setting


@needs_compose
def test_an_agent_can_have_its_own_url_for_its_own_acl_user(tmp_path: Path) -> None:
    own = "redis://alice:alicepassword1234@hosta:6379/0"
    result = make("up", tmp_path, AGENTS="alice:developer", REDIS_URL_ALICE=own)
    assert result.returncode == 0, result.stderr  # no REDIS_URL needed: every agent has one
    generated = tmp_path / "generated" / "agents.yml"
    assert "alicepassword1234" not in generated.read_text()
    services = compose_config(tmp_path, generated, REDIS_URL_ALICE=own)["services"]
    assert services["agent-alice"]["environment"]["BRIDGE_REDIS_URL"] == own
    mixed = make("up", tmp_path, AGENTS="alice:developer bob:developer", REDIS_URL_ALICE=own)
    assert mixed.returncode != 0 and "REDIS_URL is not set" in mixed.stderr  # bob has none
    bad = make("up", tmp_path, AGENTS="alice:developer", REDIS_URL_ALICE="redis://localhost/0")
    assert bad.returncode != 0 and "bad REDIS_URL_ALICE" in bad.stderr


@pytest.mark.parametrize(("variables", "message"), [
    ({"AGENTS": "alice:developer"}, "REDIS_URL is not set"),
    ({"REDIS_URL": URL}, "AGENTS is empty"),
    ({"REDIS_URL": URL, "AGENTS": " "}, "AGENTS is empty"),
    ({"REDIS_URL": URL, "AGENTS": "alice:developer", "ROOM": ""}, "ROOM is empty"),
    ({"REDIS_URL": URL, "AGENTS": "alice:developer", "ROOM": "Team One"}, "bad ROOM"),
    ({"REDIS_URL": URL, "AGENTS": "alice"}, "write NAME:ROLE"),
    ({"REDIS_URL": URL, "AGENTS": "Alice:developer"}, "bad agent name 'Alice'"),
    ({"REDIS_URL": URL, "AGENTS": "alice:developer alice:manager"}, "named twice"),
    ({"REDIS_URL": URL, "AGENTS": "alice:tester"}, "no prompt for role 'tester'"),
    ({"REDIS_URL": URL, "AGENTS": "dave:developer:gemini"},
     "bad client 'gemini' in 'dave:developer:gemini' in AGENTS: use claude (Claude Code, the "
     "default) or codex"),
    ({"REDIS_URL": URL, "AGENTS": "dave:developer:codex:x"}, "write NAME:ROLE or "
                                                             "NAME:ROLE:CLIENT"),
    ({"REDIS_URL": URL, "AGENTS": "dave:developer:"}, "bad agent 'dave:developer:'"),
    ({"REDIS_URL": "redis://:pw@localhost:6379/0", "AGENTS": "a:developer"},
     "inside a container is the container itself"),
    ({"REDIS_URL": "unix:///tmp/r.sock", "AGENTS": "a:developer"}, "bad REDIS_URL (scheme"),
    ({"REDIS_URL": "redis://:pw@hosta:63x9/0", "AGENTS": "a:developer"}, "port is not a number"),
    ({"REDIS_URL": "redis://:pw@hosta:6379/zero", "AGENTS": "a:developer"}, "database number"),
    ({"REDIS_URL": URL, "AGENTS": "a:developer", "BRIDGE_TLS_CA": "/nonexistent/ca.pem"},
     "BRIDGE_TLS_CA=/nonexistent/ca.pem is not a file"),
    ({"REDIS_URL": URL, "AGENTS": "a:developer", "CHANNEL_FLAG": "yes"},
     "bad CHANNEL_FLAG 'yes': use 1"),
    ({"REDIS_URL": URL, "AGENTS": "a:developer", "BUILD_CA_FILE": "/nonexistent/ca.crt"},
     "BUILD_CA_FILE=/nonexistent/ca.crt: cannot read it"),
    ({"REDIS_URL": URL, "AGENTS": "a:developer", "BUILD_CA_FILE": str(ROOT / "README.md")},
     "holds no PEM certificate"),
])
def test_up_stops_on_bad_settings_before_anything_starts(
        tmp_path: Path, variables: dict[str, str], message: str) -> None:
    result = make("up", tmp_path, **variables)
    assert result.returncode != 0
    assert message in result.stderr
    assert "docker-compose" not in result.stdout  # no compose command was even printed
    assert not (tmp_path / "generated" / "agents.yml").exists()


def test_the_team_targets_default_agents_do_not_count_for_up(tmp_path: Path) -> None:
    """The Makefile has a default AGENTS for `make team`; `make up` must not start it."""
    result = make("up", tmp_path, REDIS_URL=URL)
    assert result.returncode != 0
    assert "AGENTS is empty" in result.stderr


def test_a_url_without_password_is_a_warning(tmp_path: Path) -> None:
    result = make("up", tmp_path, REDIS_URL="redis://hosta:6379/0", AGENTS="a:developer")
    assert result.returncode == 0, result.stderr
    assert "REDIS_URL has no password" in result.stderr


# --- the other targets ---

@needs_compose
def test_up_redis_needs_a_strong_password_or_an_acl_file(tmp_path: Path) -> None:
    missing = make("up-redis", tmp_path)
    assert missing.returncode != 0 and "REDIS_PASSWORD is not set" in missing.stderr
    weak = make("up-redis", tmp_path, REDIS_PASSWORD="secret")
    assert weak.returncode != 0 and "bad REDIS_PASSWORD" in weak.stderr
    assert "secret" not in weak.stderr.replace("bad REDIS_PASSWORD", "")

    ok = make("up-redis", tmp_path, REDIS_PASSWORD=PASSWORD)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith("--profile redis up -d redis")
    assert PASSWORD not in ok.stdout + (tmp_path / "generated" / "redis.yml").read_text()

    acl = tmp_path / "users.acl"
    acl.write_text("user default off\n")
    result = make("up-redis", tmp_path, REDIS_ACL_FILE=str(acl))
    assert result.returncode == 0, result.stderr
    redis_service = compose_config(tmp_path, tmp_path / "generated" / "redis.yml")["services"]
    assert f"{acl}:/run/redis/users.acl:ro" in redis_service["redis"]["volumes"]
    both = make("up-redis", tmp_path, REDIS_ACL_FILE=str(acl), REDIS_PASSWORD=PASSWORD)
    assert both.returncode != 0 and "set only one" in both.stderr
    open_default = tmp_path / "open.acl"
    open_default.write_text("user bridge-main-alice on >pw ~* +@all\n")
    result = make("up-redis", tmp_path, REDIS_ACL_FILE=str(open_default))
    assert result.returncode != 0 and "add 'user default off'" in result.stderr


@needs_compose
def test_up_redis_with_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    half = make("up-redis", tmp_path, REDIS_PASSWORD=PASSWORD, REDIS_TLS_CERT=str(cert))
    assert half.returncode != 0 and "give both REDIS_TLS_CERT and REDIS_TLS_KEY" in half.stderr
    ok = make("up-redis", tmp_path, REDIS_PASSWORD=PASSWORD, REDIS_TLS_CERT=str(cert),
              REDIS_TLS_KEY=str(key))
    assert ok.returncode == 0, ok.stderr
    assert "not readable by the container's uid 999" not in ok.stderr  # 0644 here
    volumes = compose_config(tmp_path, tmp_path / "generated" / "redis.yml")["services"][
        "redis"]["volumes"]
    assert f"{cert}:/run/redis/tls/cert.pem:ro" in volumes
    assert f"{key}:/run/redis/tls/key.pem:ro" in volumes


def test_who_tail_attach_logs_down(tmp_path: Path) -> None:
    assert make("who", tmp_path).returncode != 0
    who = make("who", tmp_path, REDIS_URL=URL)
    assert who.stdout.strip() == ("docker-compose -p bridge -f docker-compose.yml --profile tools "
                                  "run --rm tail who")
    tail = make("tail", tmp_path, REDIS_URL=URL, ARGS="--since 10m")
    assert tail.stdout.strip().endswith("run --rm tail tail --since 10m")

    not_up = make("attach", tmp_path, NAME="alice")
    assert not_up.returncode != 0 and "run make up first" in not_up.stderr
    assert make("up", tmp_path, REDIS_URL=URL, AGENTS="alice:developer").returncode == 0
    attach = make("attach", tmp_path, NAME="alice")
    assert attach.returncode == 0, attach.stderr
    assert attach.stdout.strip().endswith("exec agent-alice tmux -L bridge attach -t agent")
    other = make("attach", tmp_path, NAME="bob")
    assert other.returncode != 0 and "no agent 'bob' on this host; here: alice" in other.stderr
    unnamed = make("attach", tmp_path)
    assert unnamed.returncode != 0 and "NAME is not set" in unnamed.stderr

    logs = make("logs", tmp_path, NAME="alice")
    assert logs.stdout.strip().endswith("logs -f --tail=200 agent-alice")
    down = make("down", tmp_path)
    assert "--profile agents --profile redis --profile tools down" in down.stdout


@pytest.mark.parametrize("name", ["alice", "a", "0x", "a.b_c-d", "a" * 32, "a" * 33, "Alice",
                                  "-a", "_a", "a b", "a\n", "", "al/ice", "ali:ce"])
def test_names_follow_bridge_rules(name: str) -> None:
    assert bool(compose_agents.NAME_PATTERN.match(name)) == bool(NAME_PATTERN.match(name))


# --- hygiene (issue 6): the image and the compose services ---

@needs_compose
def test_every_service_is_hardened(tmp_path: Path) -> None:
    assert make("up", tmp_path, REDIS_URL=URL,
                AGENTS="alice:developer carol:manager dave:developer:codex",
                BRIDGE_SECRET_FILE=str(DEPLOY / "mcp.json")).returncode == 0
    services = compose_config(tmp_path, tmp_path / "generated" / "agents.yml",
                              REDIS_URL=URL)["services"]
    assert set(services) == {"redis", "agent", "agent-codex", "tail", "agent-alice",
                             "agent-carol", "agent-dave"}
    for name, service in services.items():
        assert service["cap_drop"] == ["ALL"], name
        assert "cap_add" not in service, name
        assert service["read_only"] is True, name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert any(t.split(":")[0] == "/tmp" for t in service["tmpfs"]), name
        assert not service.get("privileged"), name
        assert service.get("network_mode") != "host", name
        env = service.get("environment") or {}
        assert not CHANNEL_KILLERS & set(env), name
        for key, value in env.items():
            # secrets only pass through from the host (null here, the host has none set)
            if SECRET_NAME.search(key) and not key.endswith("_FILE"):
                assert value in (None, ""), (name, key)
    # the agents run as the image's user; redis as its own, not root
    assert "user" not in services["agent-alice"]
    assert services["redis"]["user"] == "999:999"


@needs_compose
def test_host_secrets_pass_through_but_are_not_written_down(tmp_path: Path) -> None:
    key = "sk-ant-api03-test-" + "x" * 20
    assert make("up", tmp_path, REDIS_URL=URL, AGENTS="alice:developer").returncode == 0
    services = compose_config(tmp_path, tmp_path / "generated" / "agents.yml",
                              REDIS_URL=URL, ANTHROPIC_API_KEY=key)["services"]
    assert services["agent-alice"]["environment"]["ANTHROPIC_API_KEY"] == key
    for path in (ROOT / "docker-compose.yml", tmp_path / "generated" / "agents.yml"):
        assert PASSWORD not in path.read_text() and key not in path.read_text()


def test_dockerfile_hygiene() -> None:
    instructions = dockerfile()
    froms = [args for word, args in instructions if word == "FROM"]
    assert len(froms) >= 3  # builder stages keep pip, npm and the sources out of the image
    users = [args for word, args in instructions if word == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), users
    assert users[-1].split(":")[0] == "10001" == str(compose_agents.UID)
    final = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM"):]
    assert any(w == "USER" for w, _ in final)  # the final stage itself drops root
    for word, args in instructions:
        if word in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
            for name in names:
                assert not SECRET_NAME.search(name), (word, args)
                assert name not in CHANNEL_KILLERS, (word, args)
        assert "sk-ant-" not in args
        if word in ("COPY", "ADD") and "--from" not in args:
            sources = args.split()[:-1]
            assert all(not s.startswith((".env", ".git", ".venv", ".cache")) for s in sources)
    assert ("ARG", "CLAUDE_CODE_VERSION=2.1.328") in instructions
    # Codex, opt-in: pinned to what the tests drive (tests/support/codex_cli.py), in a stage of its
    # own, and only in the target agent-codex; the default target (the last stage) is the
    # agent without it
    from tests.support.codex_cli import CODEX_VERSION

    assert ("ARG", f"CODEX_VERSION={CODEX_VERSION}") in instructions
    assert froms[-1] == "agent" and "agent AS agent-codex" in froms
    codex_stage = instructions[instructions.index(("FROM", "agent AS agent-codex")):]
    codex_stage = codex_stage[:[w for w, _ in codex_stage].index("FROM", 1)]
    assert ("COPY", "--from=codex /opt/codex /opt/codex") in codex_stage
    assert not any("codex" in args for _, args in final)
    health = [args for word, args in instructions if word == "HEALTHCHECK"]
    assert len(health) == 1 and "bridge doctor" in health[0]
    entry = [args for word, args in instructions if word == "ENTRYPOINT"]
    assert json.loads(entry[-1]) == ["tini", "--", "/opt/bridge/deploy/agent-entrypoint.sh"]
    # every file the image copies in exists (the build context is the repository root)
    for word, args in instructions:
        if word == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip().rstrip("/") for line in lines if line.strip()[:1] not in ("", "#")}
    assert {".env", ".venv", ".cache", ".git", "deploy/.generated"} <= ignored


# --- templates and the scripts the image runs ---

def test_mcp_json_renders_with_json_escaping() -> None:
    env = {"BRIDGE_REDIS_URL": URL, "BRIDGE_NAME": "alice", "BRIDGE_ROOM": 'we"ird\\room',
           "BRIDGE_BIN": "/usr/local/bin/bridge"}
    config = json.loads(render.render_file(str(DEPLOY / "mcp.json"), env))
    server = config["mcpServers"]["bridge"]
    assert server["command"] == "/usr/local/bin/bridge" and server["args"] == ["serve"]
    assert server["env"] == {"BRIDGE_REDIS_URL": URL, "BRIDGE_ROOM": 'we"ird\\room',
                             "BRIDGE_NAME": "alice", "BRIDGE_ROLE": "developer",
                             "BRIDGE_DELIVERY": "auto"}
    with pytest.raises(render.RenderError, match="unset: BRIDGE_NAME, BRIDGE_REDIS_URL"):
        render.render_file(str(DEPLOY / "mcp.json"), {})


@pytest.mark.parametrize("role", ["manager", "developer"])
def test_role_prompts_render(role: str, tmp_path: Path) -> None:
    source = DEPLOY / "prompts" / f"{role}.md"
    out = tmp_path / "prompt.md"
    result = subprocess.run([sys.executable, str(DEPLOY / "render.py"), str(source), str(out)],
                            env={"BRIDGE_NAME": "alice"}, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.startswith(f"# Your role: {role}") and "${" not in text
    assert out.stat().st_mode & 0o777 == 0o600
    assert render.render("you are ${BRIDGE_NAME} in ${BRIDGE_ROOM:-main}",
                         {"BRIDGE_NAME": "alice"}) == "you are alice in main"


def test_claude_home_keeps_settings_and_skips_first_run_dialogs(tmp_path: Path) -> None:
    (tmp_path / ".claude.json").write_text(json.dumps({"theme": "light", "oauthAccount": {"x": 1},
                                                       "numStartups": 7}))
    key = "sk-ant-api03-" + "k" * 30 + "LAST20CHARSOFTHEKEY!"
    result = subprocess.run([sys.executable, str(DEPLOY / "claude_home.py"), str(tmp_path),
                             "/workspace"], env={"ANTHROPIC_API_KEY": key},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / ".claude.json").read_text())
    assert config["theme"] == "light" and config["oauthAccount"] == {"x": 1}
    assert config["hasCompletedOnboarding"] is True
    assert config["projects"]["/workspace"]["hasTrustDialogAccepted"] is True
    assert config["customApiKeyResponses"]["approved"] == [key[-20:]]
    assert "cachedGrowthBookFeatures" not in config  # channels are the account's business
    assert (tmp_path / ".claude.json").stat().st_mode & 0o777 == 0o600
    again = claude_home.seed(config, "/workspace", key)
    assert again["customApiKeyResponses"]["approved"] == [key[-20:]]


def entrypoint(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
            "BRIDGE_DEPLOY_DIR": str(DEPLOY), "BRIDGE_RUN_DIR": str(tmp_path / "run")}
    return subprocess.run(["bash", str(DEPLOY / "agent-entrypoint.sh")], env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_entrypoint_refuses_missing_settings(tmp_path: Path) -> None:
    no_name = entrypoint({"BRIDGE_REDIS_URL": URL}, tmp_path)
    assert no_name.returncode == 64 and "BRIDGE_NAME is not set" in no_name.stderr
    no_url = entrypoint({"BRIDGE_NAME": "alice"}, tmp_path)
    assert no_url.returncode == 64 and "BRIDGE_REDIS_URL is not set" in no_url.stderr
    bad_role = entrypoint({"BRIDGE_NAME": "alice", "BRIDGE_REDIS_URL": URL,
                           "BRIDGE_ROLE": "tester", "BRIDGE_PROMPT_DIR": str(DEPLOY / "prompts")},
                          tmp_path)
    assert bad_role.returncode == 64
    assert "no prompt for role 'tester'" in bad_role.stderr
    assert "developer" in bad_role.stderr and "manager" in bad_role.stderr
    bad_flag = entrypoint({"BRIDGE_NAME": "alice", "BRIDGE_REDIS_URL": URL,
                           "BRIDGE_CHANNEL_FLAG": "yes"}, tmp_path)
    assert bad_flag.returncode == 64
    assert "BRIDGE_CHANNEL_FLAG='yes': use 1" in bad_flag.stderr
    assert not (tmp_path / "run").exists()  # stopped before writing anything


@pytest.mark.parametrize("channel_flag", ["", "0", "1"])
def test_entrypoint_adds_the_channel_flag_only_when_asked(
        channel_flag: str, redis_server: Any, tmp_path: Path) -> None:
    """A stand-in `claude` records its argv: no channel flag by default, the flag with
    BRIDGE_CHANNEL_FLAG=1 (Claude Code before 2.1.224); telemetry off is a warning only then."""
    from tests.support.claude_code import require_tmux

    require_tmux()
    bin_dir, argv_file = tmp_path / "bin", tmp_path / "argv.json"
    bin_dir.mkdir()
    (bin_dir / "claude").write_text(f"#!{sys.executable}\nimport json, sys\n"
                                    f"json.dump(sys.argv[1:], open({str(argv_file)!r}, 'w'))\n")
    (bin_dir / "claude").chmod(0o755)
    (tmp_path / "workspace").mkdir()
    socket_name = f"bridge-flag-{os.getpid()}-{channel_flag or 'unset'}"
    env = {"PATH": f"{bin_dir}:{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
           "HOME": str(tmp_path), "LANG": "C.UTF-8", "BRIDGE_NAME": "alice",
           "BRIDGE_REDIS_URL": redis_server.url, "BRIDGE_DEPLOY_DIR": str(DEPLOY),
           "BRIDGE_PROMPT_DIR": str(DEPLOY / "prompts"), "BRIDGE_RUN_DIR": str(tmp_path / "run"),
           "BRIDGE_WORKDIR": str(tmp_path / "workspace"), "BRIDGE_TMUX_SOCKET": socket_name,
           "BRIDGE_DIALOG_SECONDS": "5", "DISABLE_TELEMETRY": "1"}
    if channel_flag:
        env["BRIDGE_CHANNEL_FLAG"] = channel_flag
    try:
        done = subprocess.run(["bash", str(DEPLOY / "agent-entrypoint.sh")], env=env,
                              capture_output=True, text=True, timeout=90)
    finally:
        subprocess.run(["tmux", "-L", socket_name, "kill-server"], capture_output=True)
    assert done.returncode == 0, done.stderr
    argv = json.loads(argv_file.read_text())
    assert argv[:3] == ["--mcp-config", str(tmp_path / "run" / "mcp.json"), "--strict-mcp-config"]
    assert "--append-system-prompt" in argv and flag_value(argv, "--allowedTools") == "mcp__bridge"
    warned = "WARNING DISABLE_TELEMETRY is set" in done.stderr
    if channel_flag == "1":
        assert flag_value(argv, "--dangerously-load-development-channels") == "server:bridge"
        assert warned, done.stderr
    else:
        assert "--dangerously-load-development-channels" not in argv
        assert not warned, done.stderr


def flag_value(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# --- the Redis service's start script, against a real redis-server ---

def start_redis(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    process = subprocess.Popen(
        ["sh", str(DEPLOY / "redis-start.sh"), "--bind", "127.0.0.1", "--save", ""],
        env={"PATH": f"{Path(REDIS_SERVER).parent}:{os.environ['PATH']}",
             "REDIS_CONF": str(tmp_path / "redis.conf"), "REDIS_DATA": str(data),
             "REDIS_PORT": str(port), "REDIS_ACL": str(tmp_path / "users.acl"),
             "REDIS_TLS_DIR": str(tmp_path / "tls"), **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, port


def wait_ping(client: redis.Redis, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "redis-start.sh: Redis did not come up"
            time.sleep(0.05)


def test_redis_start_needs_a_password(tmp_path: Path) -> None:
    process, _ = start_redis(tmp_path, {})
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 64 and "set REDIS_PASSWORD" in out


def test_redis_start_requires_the_password_keeps_aof_and_hides_it(tmp_path: Path) -> None:
    process, port = start_redis(tmp_path, {"REDIS_PASSWORD": PASSWORD})
    try:
        wait_ping(redis.Redis(port=port, password=PASSWORD, socket_timeout=5), process)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=5).set("k", "v")
        client = redis.Redis(port=port, password=PASSWORD, socket_timeout=5)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{process.pid}/environ").read_bytes()
        assert PASSWORD.encode() not in cmdline and PASSWORD.encode() not in environ
        # what the agents' healthcheck runs, against this Redis
        doctor = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "bridge"), "doctor", "--redis",
             f"redis://:{PASSWORD}@127.0.0.1:{port}/0"],
            capture_output=True, text=True, timeout=60)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "AOF persistence is on" in doctor.stdout
        assert PASSWORD not in doctor.stdout + doctor.stderr
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_redis_start_with_an_acl_file(tmp_path: Path) -> None:
    (tmp_path / "users.acl").write_text(
        "user default off\nuser alice on >alicepassword1234 ~bridge:{main}:* &bridge:{main}:* "
        "+@all\n")
    process, port = start_redis(tmp_path, {})
    try:
        client = redis.Redis(port=port, username="alice", password="alicepassword1234",
                             socket_timeout=5)
        wait_ping(client, process)
        assert client.set("bridge:{main}:x", "1")
        with pytest.raises(redis.ResponseError, match="no permissions"):
            client.set("other", "1")
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- the agent container's entrypoint, end to end, with the real Claude Code (no Docker) ---

@pytest.fixture(scope="module")
def claude_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.claude_code import ensure_claude, require_tmux

    require_tmux()
    return ensure_claude(tmp_path_factory)


@pytest.mark.slow
@pytest.mark.parametrize("channel_flag", [False, True], ids=["inbox", "channel-flag"])
def test_entrypoint_runs_claude_code_with_the_role_prompt(
        channel_flag: bool, claude_bin: Path, redis_server: Any, tmp_path: Path) -> None:
    """What an agent container runs, outside Docker: the entrypoint renders mcp.json and the
    prompt, starts Claude Code in tmux with no channel flag (so no channel dialog), and the
    agent then answers a message that bridge posted to its session inbox; SIGTERM makes it
    leave the room. With BRIDGE_CHANNEL_FLAG=1 (for Claude Code before 2.1.224) it also
    confirms the development-channels dialog, and warns that telemetry off switches the
    channel off."""
    from tests.support.claude_code import FAKE_API, FAKE_API_KEY, QUIET_ENV, read_tail

    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps({"default_reply": "OK", "side_reply": "OK", "rules": [
        {"id": "answer", "when": {"last_user_contains": "HELLO-FROM-BOSS"},
         "reply": [{"type": "tool_use", "name": "mcp__bridge__send_message",
                    "input": {"to": "boss", "text": "PONG-FROM-ALICE"}}]}]}))
    port_file, requests = tmp_path / "api.port", tmp_path / "requests.jsonl"
    api = subprocess.Popen([sys.executable, str(FAKE_API), "--port", "0", "--port-file",
                            str(port_file), "--log", str(requests), "--script", str(turns)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    home, work, log = tmp_path / "home", tmp_path / "workspace", tmp_path / "entrypoint.log"
    home.mkdir()
    work.mkdir()
    if channel_flag:
        # Offline there is no GrowthBook to switch channels on: cache the flag, as the
        # driver does (test only; the entrypoint seeds no flag). The inbox needs none.
        (home / ".claude.json").write_text(json.dumps({"cachedGrowthBookFeatures":
                                                       {"tengu_harbor": True}}))
    socket_name = f"bridge-test-{os.getpid()}"
    env = {
        "PATH": f"{claude_bin.parent}:{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
        "HOME": str(home), "LANG": "C.UTF-8", "TERM": "xterm-256color",
        "ANTHROPIC_API_KEY": FAKE_API_KEY, **QUIET_ENV,
        "BRIDGE_NAME": "alice", "BRIDGE_ROLE": "developer", "BRIDGE_ROOM": "deploy",
        "BRIDGE_REDIS_URL": redis_server.url, "BRIDGE_DEPLOY_DIR": str(DEPLOY),
        "BRIDGE_PROMPT_DIR": str(DEPLOY / "prompts"), "BRIDGE_RUN_DIR": str(tmp_path / "run"),
        "BRIDGE_WORKDIR": str(work), "BRIDGE_TMUX_SOCKET": socket_name,
        "BRIDGE_CHANNEL_FLAG": "1" if channel_flag else "0",
    }
    client = redis_server.client()
    agent = None
    try:
        port = wait_until("the fake API", lambda: port_file.exists() and port_file.read_text(),
                          30)
        env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{port}"
        with open(log, "w") as out:
            agent = subprocess.Popen(["bash", str(DEPLOY / "agent-entrypoint.sh")], env=env,
                                     stdout=out, stderr=subprocess.STDOUT)

        def screen() -> str:
            shot = subprocess.run(["tmux", "-L", socket_name, "capture-pane", "-p", "-t",
                                   "agent"], capture_output=True, text=True, timeout=10)
            return f"entrypoint log:\n{read_tail(log)}\nscreen:\n{shot.stdout}"

        up = ("Claude Code is up with the bridge channel;" if channel_flag
              else "Claude Code is up;")
        wait_until("Claude Code past its dialogs",
                   lambda: f"agent-entrypoint: {up} make attach NAME=alice" in log.read_text(),
                   120, screen)
        record = wait_until("alice in the room",
                            lambda: client.hgetall("bridge:{deploy}:agent:alice"), 60, screen)
        assert record[b"role"] == b"developer"
        text = log.read_text()
        # the tests need DISABLE_TELEMETRY; it switches channels off, not the inbox
        assert ("agent-entrypoint: WARNING DISABLE_TELEMETRY is set" in text) == channel_flag
        assert FAKE_API_KEY not in text and "Redis reachable" in text  # bridge doctor ran

        boss = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "bridge"), "send", "--as", "boss", "--redis",
             redis_server.url, "--room", "deploy", "alice", "HELLO-FROM-BOSS"],
            capture_output=True, text=True, timeout=60)
        assert boss.returncode == 0, boss.stderr

        def answered() -> bool:
            entries = client.xrange("bridge:{deploy}:log")
            return any(f[b"from"] == b"alice" and f[b"to"] == b"boss"
                       and f[b"text"] == b"PONG-FROM-ALICE" for _, f in entries)

        wait_until("alice's answer in the room log", answered, 90, screen)

        assert_a_developer_heard_boss_through_the_inbox(requests)

        agent.terminate()  # what docker stop sends (through tini)
        assert agent.wait(timeout=60) == 0, read_tail(log)
        wait_until("alice to leave the room",
                   lambda: not client.exists("bridge:{deploy}:agent:alice"), 30, screen)
        assert subprocess.run(["tmux", "-L", socket_name, "has-session"],
                              capture_output=True).returncode != 0
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait(timeout=30)
        subprocess.run(["tmux", "-L", socket_name, "kill-server"], capture_output=True)
        api.terminate()
        api.wait(timeout=30)


def whole_lines(path: Path) -> list[str]:
    """The lines of a log another process is still writing: the last one may be half
    written (a request of several KB read mid-write once failed to parse), so only lines
    that end in a newline count."""
    return path.read_text().split("\n")[:-1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_entrypoint_runs_codex_for_a_codex_agent(redis_server: Any, tmp_path: Path) -> None:
    """What an agent container with BRIDGE_CLIENT=codex runs, outside Docker, with the real
    Codex 0.171.0 against the scripted fake Responses API: the entrypoint writes bridge into
    the Codex home's config.toml (keeping the model config there), starts Codex in tmux with
    the role prompt as its first prompt, whose list_participants call brings alice into the
    room and tells bridge her thread; boss's message wakes her and she answers, with no
    approval asked under approval_policy = "on-request"; SIGTERM stops Codex's daemon too, and
    alice leaves the room."""
    import tomllib

    from tests.support.claude_code import read_tail
    from tests.support.codex_cli import ensure_codex
    from tests.support.codex_driver import FAKE_KEY, FAKE_KEY_ENV, FAKE_OPENAI, alive

    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (apt-get install -y tmux)")
    codex = ensure_codex()
    call = {"type": "function_call", "namespace": "mcp__bridge"}
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps({"default_reply": "OK", "rules": [
        {"id": "start", "when": {"last_user_contains": "Start now: call list_participants"},
         "reply": [call | {"name": "list_participants", "arguments": {}}]},
        {"id": "answer", "when": {"last_user_contains": "HELLO-FROM-BOSS"},
         "reply": [call | {"name": "send_message",
                           "arguments": {"to": "boss", "text": "PONG-FROM-ALICE"}}]}]}))
    port_file, requests = tmp_path / "api.port", tmp_path / "requests.jsonl"
    api = subprocess.Popen([sys.executable, FAKE_OPENAI, "--port", "0", "--port-file",
                            str(port_file), "--log", str(requests), "--script", str(turns)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    home, work, log = tmp_path / "home", tmp_path / "workspace", tmp_path / "entrypoint.log"
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    work.mkdir()
    socket_name = f"bridge-test-codex-{os.getpid()}"
    env = {
        "PATH": f"{codex.parent}:{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
        "HOME": str(home), "LANG": "C.UTF-8", "TERM": "xterm-256color", FAKE_KEY_ENV: FAKE_KEY,
        "BRIDGE_CLIENT": "codex", "DISABLE_TELEMETRY": "1",
        "BRIDGE_NAME": "alice", "BRIDGE_ROLE": "developer", "BRIDGE_ROOM": "deploy",
        "BRIDGE_REDIS_URL": redis_server.url, "BRIDGE_DEPLOY_DIR": str(DEPLOY),
        "BRIDGE_PROMPT_DIR": str(DEPLOY / "prompts"), "BRIDGE_RUN_DIR": str(tmp_path / "run"),
        "BRIDGE_WORKDIR": str(work), "BRIDGE_TMUX_SOCKET": socket_name,
    }
    client = redis_server.client()
    agent = None

    def daemon() -> set[int]:
        """Codex's daemon and its updater, run from the daemon's copy in the Codex home."""
        mark = str(codex_home / "packages") + os.sep
        pids = set()
        for entry in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0]
                if argv0.decode(errors="replace").startswith(mark):
                    pids.add(int(entry))
        return pids

    try:
        port = wait_until("the fake API", lambda: port_file.exists() and port_file.read_text(),
                          30)
        # the model's config, as a person would keep it in the home volume
        (codex_home / "config.toml").write_text(f"""model = "gpt-fake"
model_provider = "fake"
approval_policy = "on-request"
check_for_update_on_startup = false
[analytics]
enabled = false
[model_providers.fake]
name = "fake"
base_url = "http://127.0.0.1:{port}/v1"
wire_api = "responses"
env_key = "{FAKE_KEY_ENV}"
request_max_retries = 0
stream_max_retries = 0
""")
        with open(log, "w") as out:
            agent = subprocess.Popen(["bash", str(DEPLOY / "agent-entrypoint.sh")], env=env,
                                     stdout=out, stderr=subprocess.STDOUT)

        def screen() -> str:
            shot = subprocess.run(["tmux", "-L", socket_name, "capture-pane", "-p", "-t",
                                   "agent"], capture_output=True, text=True, timeout=10)
            return f"entrypoint log:\n{read_tail(log)}\nscreen:\n{shot.stdout}"

        def no_question() -> None:
            assert "to run tool" not in screen(), f"Codex asks to approve\n{screen()}"

        wait_until("alice in the room", lambda: no_question() or client.hgetall(
            "bridge:{deploy}:agent:alice"), 120, screen)
        wait_until("Codex up", lambda: "agent-entrypoint: Codex is up; make attach NAME=alice"
                   in log.read_text(), 60, screen)
        text = log.read_text()
        assert "Redis reachable" in text  # bridge doctor ran
        # no key, no login: said once; the fake provider needs none
        assert "no OPENAI_API_KEY and no Codex login" in text
        assert "WARNING DISABLE_TELEMETRY" not in text  # Claude Code's channel, not Codex's
        config = tomllib.loads((codex_home / "config.toml").read_text())
        assert config["model_provider"] == "fake"  # the home's own config is kept
        server = config["mcp_servers"]["bridge"]
        assert server["command"] == str(ROOT / ".venv" / "bin" / "bridge")
        assert server["args"] == ["serve"] and server["default_tools_approval_mode"] == "approve"
        assert {"CODEX_HOME", "BRIDGE_REDIS_URL", "BRIDGE_NAME", "BRIDGE_ROLE",
                "BRIDGE_ROOM"} <= set(server["env_vars"])
        assert redis_server.url not in (codex_home / "config.toml").read_text()
        assert config["projects"][str(work)] == {"trust_level": "trusted"}
        record = client.hgetall("bridge:{deploy}:agent:alice")
        assert record[b"role"] == b"developer"

        boss = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "bridge"), "send", "--as", "boss", "--redis",
             redis_server.url, "--room", "deploy", "alice", "HELLO-FROM-BOSS"],
            capture_output=True, text=True, timeout=60)
        assert boss.returncode == 0, boss.stderr

        def answered() -> bool:
            no_question()
            entries = client.xrange("bridge:{deploy}:log")
            return any(f[b"from"] == b"alice" and f[b"to"] == b"boss"
                       and f[b"text"] == b"PONG-FROM-ALICE" for _, f in entries)

        wait_until("alice's answer in the room log", answered, 90, screen)
        bodies = [json.loads(line).get("body") or {} for line in whole_lines(requests)]
        first = next(b for b in bodies if "Start now: call list_participants" in json.dumps(b))
        assert "# Your role: developer" in json.dumps(first)  # the role prompt came first

        agent.terminate()  # what docker stop sends (through tini)
        assert agent.wait(timeout=60) == 0, read_tail(log)
        assert "agent-entrypoint: Codex exited" in log.read_text()
        wait_until("alice to leave the room",
                   lambda: not client.exists("bridge:{deploy}:agent:alice"), 30, screen)
        assert subprocess.run(["tmux", "-L", socket_name, "has-session"],
                              capture_output=True).returncode != 0
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait(timeout=30)
        subprocess.run(["tmux", "-L", socket_name, "kill-server"], capture_output=True)
        # the updater outlives `daemon stop` (a container's end ends it)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in daemon():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(alive(p) for p in daemon()):
                time.sleep(0.1)
        shutil.rmtree(codex_home / "packages", ignore_errors=True)  # the daemon's copy
        api.terminate()
        api.wait(timeout=30)


def assert_a_developer_heard_boss_through_the_inbox(requests: Path) -> None:
    """From the fake API's request log: the role prompt reached the model, and boss's
    HELLO-FROM-BOSS came as an inbox post (bridge/mcp/posts.py), not a channel block."""
    bodies = [json.loads(line)["body"] for line in whole_lines(requests)]
    system = json.dumps([b.get("system") for b in bodies if b])
    assert "Your role: developer" in system  # the role prompt reached the model
    conversation = "\n".join(text for b in bodies if b for text in user_texts(b))
    assert re.search(r"^\[bridge\] message from boss, id [0-9]+-[0-9]+:\n> HELLO-FROM-BOSS$",
                     conversation, re.M), conversation[-3000:]
    assert '<channel source="bridge"' not in conversation


def user_texts(body: dict[str, Any]) -> list[str]:
    """The texts of a request's user turns."""
    texts = []
    for message in body.get("messages", []):
        if message.get("role") == "user":
            content = message["content"]
            texts += [content] if isinstance(content, str) else [
                b["text"] for b in content
                if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return texts


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_redis_start_with_tls_closes_the_plain_port(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem"),
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    process, port = start_redis(tmp_path, {"REDIS_PASSWORD": PASSWORD})
    try:
        client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, ssl=True,
                             ssl_ca_certs=str(tls / "cert.pem"), socket_timeout=5)
        wait_ping(client, process)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=port, password=PASSWORD, socket_timeout=5).ping()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_readme_acl_recipe_gives_each_agent_a_working_user(tmp_path: Path) -> None:
    """docs/docker.md: `bridge acl --format file` lines plus `user default off` and an admin,
    served by the Redis service's start script; once the admin loaded bridge's functions, the
    URL bridge acl prints for alice passes bridge doctor."""
    bridge = str(ROOT / ".venv" / "bin" / "bridge")
    port = free_port()
    acl = tmp_path / "users.acl"
    admin = hashlib.sha256(PASSWORD.encode()).hexdigest()
    acl.write_text(f"user default off\nuser admin on #{admin} ~* &* +@all\n")
    urls = {}
    for agent in ("alice", "ops"):
        made = subprocess.run([bridge, "acl", "--room", "main", "--agent", agent, "--redis",
                               f"redis://127.0.0.1:{port}/0", "--format", "file"],
                              capture_output=True, text=True, timeout=60, check=True)
        with acl.open("a") as f:
            f.write(made.stdout)
        urls[agent] = re.search(r"BRIDGE_REDIS_URL='([^']+)'", made.stderr).group(1)  # type: ignore[union-attr]
    process = subprocess.Popen(
        ["sh", str(DEPLOY / "redis-start.sh"), "--bind", "127.0.0.1", "--save", ""],
        env={"PATH": f"{Path(REDIS_SERVER).parent}:{os.environ['PATH']}",
             "REDIS_CONF": str(tmp_path / "redis.conf"), "REDIS_DATA": str(tmp_path),
             "REDIS_PORT": str(port), "REDIS_ACL": str(acl),
             "REDIS_TLS_DIR": str(tmp_path / "tls")},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ping(redis.Redis.from_url(urls["alice"], socket_timeout=5), process)
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=5).set("bridge:{main}:x", "1")
        loaded = subprocess.run([bridge, "functions", "load", "--redis",
                                 f"redis://admin:{PASSWORD}@127.0.0.1:{port}/0"],
                                capture_output=True, text=True, timeout=60)
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        doctor = subprocess.run([bridge, "doctor", "--redis", urls["alice"], "--room", "main"],
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, "BRIDGE_NAME": "alice"})
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "may run every command bridge uses" in doctor.stdout
    finally:
        process.terminate()
        process.wait(timeout=30)


# --- Sentinel (docs/scaling.md): deploy/sentinel.yml ---

@needs_compose
def test_the_sentinel_recipe_is_a_primary_a_replica_and_three_hardened_sentinels(
        tmp_path: Path) -> None:
    out = subprocess.run([COMPOSE, "-p", "bridge", "-f", str(DEPLOY / "sentinel.yml"), "config"],
                         env={"PATH": os.environ["PATH"], "HOME": str(tmp_path),
                              "REDIS_PASSWORD": PASSWORD},
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in (DEPLOY / "sentinel.yml").read_text()
    python = Path(COMPOSE).read_text(errors="replace").splitlines()[0].removeprefix("#!").split()
    parsed = subprocess.run(
        [*python, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=out.stdout, capture_output=True, text=True, timeout=60, check=True)
    services = json.loads(parsed.stdout)["services"]
    roles = {name: s["environment"]["ROLE"] for name, s in services.items()}
    assert sorted(roles.values()) == ["primary", "replica", "sentinel", "sentinel", "sentinel"]
    for name, service in services.items():
        assert service["cap_drop"] == ["ALL"] and service["read_only"] is True, name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["user"] == "999:999", name
        assert service["environment"]["PRIMARY_HOST"] == "redis-primary", name
        # each keeps its data (a sentinel: what it learnt, such as the current primary)
        assert any(v.endswith(":/data:rw") or v.endswith(":/data") for v in service["volumes"])
    script = (DEPLOY / "sentinel-start.sh").read_text()
    assert "sentinel monitor %s %s 6379 2" in script  # a quorum of two of the three


def test_make_up_takes_a_sentinel_url(tmp_path: Path) -> None:
    url = (f"redis+sentinel://:{PASSWORD}@sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"
           f"/bridge/0?sentinel_password={PASSWORD}")
    assert make("up", tmp_path, REDIS_URL=url, AGENTS="alice:developer").returncode == 0
    local = make("up", tmp_path, REDIS_URL="redis+sentinel://:p@localhost:26379/bridge",
                 AGENTS="alice:developer")
    assert local.returncode != 0 and "localhost inside a container" in local.stderr
    nameless = make("up", tmp_path, REDIS_URL="redis+sentinel://:p@s1:26379,s2:26379",
                    AGENTS="alice:developer")
    assert nameless.returncode != 0 and "service name" in nameless.stderr
