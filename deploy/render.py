#!/usr/bin/env python3
"""Render a deploy template: ``${VAR}`` and ``${VAR:-default}`` from the environment.

Standard library only, so the same renderer runs on the host (tests, `make`) and inside the
agent image (deploy/agent-entrypoint.sh). A variable that is unset and has no default is an
error that names it, so a half-filled config never reaches Claude Code. In a ``.json``
template each value is JSON-escaped, so a value with quotes cannot break the file.

    python3 deploy/render.py TEMPLATE [OUT]      # OUT: written with mode 0600; default stdout
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class RenderError(Exception):
    pass


def render(text: str, env: Mapping[str, str], json_values: bool = False) -> str:
    missing: list[str] = []

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        got = env.get(name) or default  # an empty value counts as unset, as ${VAR:-x} does
        if got is None:
            missing.append(name)
            return ""
        return json.dumps(got)[1:-1] if json_values else got

    out = PLACEHOLDER.sub(value, text)
    if missing:
        raise RenderError("unset: " + ", ".join(sorted(set(missing))))
    return out


def render_file(path: str, env: Mapping[str, str]) -> str:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    json_values = path.endswith(".json")
    try:
        out = render(text, env, json_values)
    except RenderError as e:
        raise RenderError(f"{path}: {e}; set them in the environment") from e
    if json_values:
        json.loads(out)  # a template that renders to bad JSON is a bug: fail here, not in claude
    return out


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print("usage: render.py TEMPLATE [OUT]", file=sys.stderr)
        return 2
    try:
        out = render_file(argv[0], os.environ)
    except (OSError, RenderError, ValueError) as e:
        print(f"render: {e}", file=sys.stderr)
        return 1
    if len(argv) == 1:
        sys.stdout.write(out)
        return 0
    # the rendered config may hold the Redis password: owner-only from the first byte
    fd = os.open(argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
