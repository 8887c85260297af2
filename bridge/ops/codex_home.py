"""A Codex agent's own Codex home: its config.toml registers bridge as its MCP server.

Used by `bridge team` (a pane whose agent is NAME:ROLE:codex) and by the agent container
(deploy/agent-entrypoint.sh, BRIDGE_CLIENT=codex), as ``python -m bridge.ops.codex_home``.
What Codex 0.171.0 does with the file is measured in docs/codex-facts.md:

- an MCP server is ``[mcp_servers.NAME]`` (command, args, env, env_vars); Codex starts it with
  an allow-list of its own environment (HOME, PATH, TERM, LANG, USER, ...) plus the entry's
  ``env``, and ``env_vars`` names more variables to pass through. So bridge's settings
  (BRIDGE_REDIS_URL, the runtime dir of the embedded Redis, ...) and CODEX_HOME (where bridge
  finds the thread's session file and the daemon's copy of codex) are named there: their
  values stay in the environment, never in the file;
- ``required = true``: Codex waits for bridge (up to ``startup_timeout_sec``) before the first
  turn, instead of 1 s for an optional server: the first prompt must be able to call a bridge
  tool, since that call is how bridge learns the session's thread;
- ``default_tools_approval_mode = "approve"`` on the entry runs bridge's tools without asking:
  under ``approval_policy = "on-request"`` (Codex's default) a bridge tool call otherwise
  stops at "Allow the bridge MCP server to run tool ...?" until someone answers in the pane,
  also in a turn that a teammate's message woke (docs/team.md: "Codex's approval policy");
- ``[projects."DIR"] trust_level = "trusted"`` (for a folder in a git repository: its root)
  skips the "Trust this folder?" dialog.

The rest of the file is the user's: what the base config says (model, provider, approval
policy, sandbox) is kept, except its other MCP servers (only this bridge, as Claude Code's
--strict-mcp-config gives the Claude agents).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.errors import BridgeError

CONFIG = "config.toml"
AUTH = "auth.json"
SERVER = "bridge"
APPROVE = "approve"
STARTUP_SECONDS = 30  # bridge serve may first start the embedded Redis, or wait for Redis
# the embedded Redis's socket and data live where these say (bridge.redis.embedded): a server
# that Codex starts must see the same ones as the rest of the team
PASSED = ("XDG_RUNTIME_DIR", "XDG_DATA_HOME")
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+\Z")


# --------------------------------------------------------------------------- TOML out

def _key(key: str) -> str:
    return key if BARE_KEY.match(key) else _string(key)


def _string(text: str) -> str:
    # JSON's escapes are TOML's, except that TOML also wants DEL escaped
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007F")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # inf, nan, 1e+20 are TOML too
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise BridgeError(f"cannot write {value!r} to config.toml")


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """TOML text whose tomllib reading equals ``data``: a table's plain values first, then
    its sub-tables; lists of tables become lists of inline tables."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    text = "".join(line + "\n" for line in lines)
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}.{_key(key)}" if prefix else _key(key)
            # a table of tables only needs its sub-tables' headers
            bare = value and all(isinstance(v, dict) for v in value.values())
            text += ("" if bare else f"\n[{name}]\n") + to_toml(value, name)
    return text


# --------------------------------------------------------------------------- the config

def read(path: Path) -> dict[str, Any]:
    """A config.toml, or {} when there is none."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BridgeError(f"cannot read {path} ({e}): fix it or move it away") from e


def merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def passed_vars(env: Mapping[str, str]) -> list[str]:
    """The variables bridge's entry passes through (env_vars): CODEX_HOME, then every
    BRIDGE_* setting and where the embedded Redis lives, as far as they are set."""
    names = ["CODEX_HOME"]
    names += sorted(name for name in env if name.startswith("BRIDGE_") and env[name])
    names += [name for name in PASSED if env.get(name)]
    return names


def git_root(folder: Path) -> Path | None:
    for path in (folder, *folder.parents):
        if (path / ".git").exists():
            return path
    return None


def trusted(folder: Path) -> dict[str, Any]:
    """`projects` that trust ``folder`` (and its git repository's root, where Codex records
    the trust of a folder inside one)."""
    folders = [folder] + [root for root in [git_root(folder)] if root and root != folder]
    return {str(path): {"trust_level": "trusted"} for path in folders}


def server_entry(command: Sequence[str], args: Sequence[str], env_vars: Iterable[str],
                 env: Mapping[str, str] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"command": command[0], "args": [*command[1:], *args]}
    if env:
        entry["env"] = dict(env)
    entry["env_vars"] = list(env_vars)
    # wait for bridge before the first turn: Codex gives an optional server 1 s
    # (mcp_optional_startup_grace_ms), and a first prompt sent without bridge's tools cannot
    # call one, so bridge never learns the thread (measured: a server 3 s slow is left out)
    entry["required"] = True
    entry["startup_timeout_sec"] = STARTUP_SECONDS
    # bridge's tools run without a question in the pane (as --allowedTools mcp__bridge does
    # for Claude Code): a woken turn would otherwise wait for someone to answer it
    entry["default_tools_approval_mode"] = APPROVE
    return entry


def agent_config(base: Mapping[str, Any], entry: Mapping[str, Any],
                 workdir: Path) -> dict[str, Any]:
    """``base`` with bridge as the only MCP server and ``workdir`` trusted. Per-tool settings
    that ``base`` has for a server named bridge stay (``[mcp_servers.bridge.tools.TOOL]``, e.g.
    ``approval_mode = "prompt"`` to review each send, or what "Always allow" wrote)."""
    config = {key: value for key, value in base.items() if key != "mcp_servers"}
    config = merged(config, {"projects": trusted(workdir)})
    servers = base.get("mcp_servers")
    server = servers.get(SERVER) if isinstance(servers, dict) else None
    tools = server.get("tools") if isinstance(server, dict) else None
    config["mcp_servers"] = {SERVER: dict(entry) | ({"tools": tools}
                                                     if isinstance(tools, dict) else {})}
    return config


def write(home: Path, config: Mapping[str, Any]) -> Path:
    """``home``/config.toml, owner-only (a user's config may hold a provider's headers)."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = home / CONFIG
    tmp = home / f".{CONFIG}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("# written by bridge at each start (bridge/ops/codex_home.py): bridge is this "
                "Codex's MCP server\n")
        f.write(to_toml(config))
    os.replace(tmp, path)
    return path


def link_login(home: Path, user_home: Path) -> bool:
    """Share the user's Codex login: ``home``/auth.json becomes a link to theirs when it has
    none of its own. Codex rewrites auth.json in place when it refreshes a token, so the link
    stays and every agent keeps the user's current login."""
    mine, theirs = home / AUTH, user_home / AUTH
    if mine.exists() or mine.is_symlink() or not theirs.is_file():
        return False
    if mine.resolve() == theirs.resolve():
        return False
    mine.symlink_to(theirs.absolute())
    return True


# --------------------------------------------------------------------------- the container

def main(argv: list[str], env: Mapping[str, str]) -> int:
    """``python -m bridge.ops.codex_home CODEX_HOME WORKDIR``: the agent container's Codex
    home, its own config.toml kept, bridge (``bridge serve`` with the container's BRIDGE_*
    settings) registered."""
    if len(argv) != 2:
        print("usage: python -m bridge.ops.codex_home CODEX_HOME WORKDIR", file=sys.stderr)
        return 2
    home, workdir = Path(argv[0]), Path(argv[1])
    script = Path(sys.executable).with_name("bridge")
    command = [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-m", "bridge"]
    try:
        entry = server_entry(command, ["serve"], passed_vars(env))
        write(home, agent_config(read(home / CONFIG), entry, workdir))
    except (BridgeError, OSError) as e:
        print(f"codex_home: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
