"""One command pattern: every subcommand is an entry of `bridge.cli.COMMANDS`, the layers know
nothing of argparse, and every command fails the same way (one line `bridge: …`, exit 1; bad
flags exit 2)."""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bridge

BRIDGE = str(Path(sys.executable).with_name("bridge"))
PACKAGE = Path(bridge.__file__).parent


def test_every_subcommand_is_an_entry_of_the_command_table() -> None:
    from bridge.cli import COMMANDS, build_parser

    [sub] = [action for action in build_parser()._actions
             if isinstance(action, argparse._SubParsersAction)]
    assert list(sub.choices) == list(COMMANDS)
    assert set(COMMANDS) >= {"serve", "redis", "acl", "who", "tail", "send", "history", "doctor",
                             "functions", "team"}


def test_the_layers_do_not_parse_the_command_line() -> None:
    # flags are declared in bridge/cli/ (and, for settings, bridge/settings.py) only
    parsing = []
    for layer in ("redis", "room", "mcp", "ops"):
        for path in sorted((PACKAGE / layer).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                    if "argparse" in names:
                        parsing.append(f"{layer}/{path.name}")
    assert parsing == []


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run([BRIDGE, *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, env={**clean, **env})


@pytest.mark.parametrize("command", [
    ["serve"], ["who"], ["tail"], ["send", "--as", "op", "bob", "hi"], ["history"],
    ["functions", "load"], ["acl", "--agent", "alice"], ["team", "--dry-run", "a:developer"],
    ["tasks"],
])
def test_every_command_fails_with_one_line_and_exit_1(command: list[str]) -> None:
    result = run(*command, BRIDGE_ROOM="Bad Room")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "bridge: bad value for --room / BRIDGE_ROOM (from BRIDGE_ROOM): 'Bad Room'; "
        "use 1-32 of a-z 0-9 _ . - starting with a letter or digit"]


def test_the_doctor_reports_a_bad_setting_as_its_first_check() -> None:
    result = run("doctor", BRIDGE_ROOM="Bad Room")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "bad value for --room / BRIDGE_ROOM" in result.stdout


@pytest.mark.parametrize("command", [["serve", "--nope"], ["who", "--nope"], ["team", "--nope"],
                                     ["acl"], ["functions"], ["nope"]])
def test_bad_flags_exit_2_with_the_usage(command: list[str]) -> None:
    result = run(*command)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("usage: bridge") and "Traceback" not in result.stderr
