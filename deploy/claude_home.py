#!/usr/bin/env python3
"""Prepare ~/.claude.json so that a headless Claude Code starts straight into its prompt.

Interactive Claude Code stops at first-run dialogs (onboarding, "do you trust this folder",
"use this API key?"), and nobody is there to answer in a container. The keys set here are
the ones tests/support/claude_driver.py seeds for the tests, checked against Claude Code
2.1.328. Existing settings (a login, history) are kept: only these keys are merged in.
Feature flags are NOT seeded: whether channels are on is the account's business.

    python3 deploy/claude_home.py HOME WORKDIR      # ANTHROPIC_API_KEY read from the env
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def seed(config: dict[str, Any], workdir: str, api_key: str = "") -> dict[str, Any]:
    config["hasCompletedOnboarding"] = True
    config.setdefault("theme", "dark")
    project = config.setdefault("projects", {}).setdefault(workdir, {})
    project["hasTrustDialogAccepted"] = True
    project["hasCompletedProjectOnboarding"] = True
    project.setdefault("allowedTools", [])
    if api_key:
        # Claude Code remembers an approved key by its last 20 characters
        responses = config.setdefault("customApiKeyResponses", {"approved": [], "rejected": []})
        approved = responses.setdefault("approved", [])
        if api_key[-20:] not in approved:
            approved.append(api_key[-20:])
        responses["rejected"] = [k for k in responses.get("rejected", []) if k != api_key[-20:]]
    return config


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: claude_home.py HOME WORKDIR", file=sys.stderr)
        return 2
    path = os.path.join(argv[0], ".claude.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        config = {}
    except (OSError, ValueError) as e:
        print(f"claude_home: cannot read {path} ({e}); move it away and restart",
              file=sys.stderr)
        return 1
    seed(config, argv[1], os.environ.get("ANTHROPIC_API_KEY", ""))
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
