"""An OpenCode agent of `bridge team` (NAME:ROLE:opencode): OpenCode's TUI, started with a port
of its own so that bridge can push into it (bridge.opencode), its role prompt as the first
prompt, and this bridge as its MCP server.

OpenCode takes a configuration from the environment, ``OPENCODE_CONFIG_CONTENT``, on top of the
user's own and the folder's ``opencode.json``: the agent's entry for bridge goes there, so the
user's model and login stay as they are and the shared work folder is not written. The entry
and the first prompt are files in the agent's folder (beside the embedded Redis's data, one
per room and name), read by the pane's command, so that the command stays one line.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

from bridge.errors import BridgeError
from bridge.redis.embedded import EmbeddedRedis

CONFIG_FILE = "opencode-config.json"  # in the agent's folder: OPENCODE_CONFIG_CONTENT
PROMPT_FILE = "bridge-first-prompt.md"
# the pane's command: OpenCode with the agent's entry, its port and its first prompt
LAUNCH = ('OPENCODE_CONFIG_CONTENT="$(cat "$1/' + CONFIG_FILE + '")" exec "$0" --port "$2" '
          '--prompt "$(cat "$1/' + PROMPT_FILE + '")"')


def folders() -> Path:
    """Where the OpenCode agents' folders live: beside the embedded Redis's data."""
    return EmbeddedRedis.for_user().data_dir / "opencode"


def find(given: str | None) -> str:
    """The OpenCode CLI: --opencode PATH, else `opencode` on PATH."""
    wanted = given or "opencode"
    found = shutil.which(wanted)
    if found is None:
        if given:
            raise BridgeError(f"--opencode {given}: no such executable; give the path of the "
                              f"OpenCode CLI (`which opencode` shows it)")
        raise BridgeError("OpenCode (`opencode`) is not on PATH, and an agent is "
                          "NAME:ROLE:opencode: install it (npm install -g opencode-ai), set "
                          "up its model once by running `opencode`, or give its path with "
                          "--opencode PATH")
    return str(Path(found).absolute())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the TUI's server takes it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config(bridge: tuple[str, ...], serve_args: list[str]) -> dict[str, object]:
    """The agent's layer of OpenCode's configuration: this bridge as its MCP server."""
    return {"mcp": {"bridge": {"type": "local", "command": [*bridge, *serve_args],
                               "enabled": True}}}


def command(opencode: str, folder: Path, port: int) -> list[str]:
    return ["sh", "-c", LAUNCH, opencode, str(folder), str(port)]


def prepare(folder: Path, entry: dict[str, object], first_prompt: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(entry, separators=(",", ":")),
                                      encoding="utf-8")
    (folder / PROMPT_FILE).write_text(first_prompt, encoding="utf-8")
