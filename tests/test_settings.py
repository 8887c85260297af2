"""Settings from flags and environment; bad values get one clear line and a non-zero exit."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.errors import SettingsError
from bridge.settings import Settings, default_name

BRIDGE = str(Path(sys.executable).with_name("bridge"))


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url is None and settings.room == "main"
    assert settings.ttl == 15 and settings.delivery == "auto" and settings.max_bytes == 65536
    assert settings.name_was_derived and settings.name == default_name()


def test_flags_win_over_environment() -> None:
    env = {"BRIDGE_ROOM": "blue", "BRIDGE_NAME": "bob", "BRIDGE_TTL": "30",
           "BRIDGE_DELIVERY": "pull", "BRIDGE_REDIS_URL": "redis://a:6379/0"}
    settings = Settings.from_env(env, room="red", ttl="5")
    assert settings.room == "red" and settings.ttl == 5
    assert settings.name == "bob" and not settings.name_was_derived
    assert settings.delivery == "pull" and settings.redis_url == "redis://a:6379/0"


def test_default_name_is_a_valid_name() -> None:
    assert default_name("My-Laptop.local", "/home/me/Web App") == "my-laptop-web-app"
    assert default_name("h", "/") == "h-root"
    assert len(default_name("x" * 50, "/y" * 3)) <= 32


@pytest.mark.parametrize(("flag", "var", "value"), [
    ("ttl", "BRIDGE_TTL", "soon"),
    ("ttl", "BRIDGE_TTL", "0"),
    ("ttl", "BRIDGE_TTL", "nan"),  # NaN compares false with any bound
    ("send_timeout", "BRIDGE_SEND_TIMEOUT", "inf"),
    ("read_ahead_bytes", "BRIDGE_READ_AHEAD_BYTES", "100"),
    ("delivery", "BRIDGE_DELIVERY", "email"),
    ("max_bytes", "BRIDGE_MAX_BYTES", "-1"),
    ("name", "BRIDGE_NAME", "Alice Smith"),
    ("room", "BRIDGE_ROOM", "a" * 40),
    ("redis", "BRIDGE_REDIS_URL", "http://localhost:6379"),
    ("redis", "BRIDGE_REDIS_URL", "redis+sentinel://s1:26379,s2:26379"),  # no service name
    ("min_replicas", "BRIDGE_MIN_REPLICAS", "-1"),
    ("min_replicas", "BRIDGE_MIN_REPLICAS", "nan"),
    ("min_replicas", "BRIDGE_MIN_REPLICAS", "two"),
    ("min_replicas_timeout", "BRIDGE_MIN_REPLICAS_TIMEOUT", "nan"),
    ("log_hard_maxlen", "BRIDGE_LOG_HARD_MAXLEN", "99"),
    ("backlog_max", "BRIDGE_BACKLOG_MAX", "0"),
    ("away_hold", "BRIDGE_AWAY_HOLD", "0.5"),
])
def test_bad_values_name_flag_and_variable(flag: str, var: str, value: str) -> None:
    for source in ({"env": {var: value}}, {"env": {}, flag: value}):
        env = source.pop("env")
        with pytest.raises(SettingsError) as error:
            Settings.from_env(env, **source)
        message = str(error.value)
        assert f"--{flag.replace('_', '-')}" in message and var in message
        assert repr(value) in message


def test_retention_bounds_fit_together() -> None:
    # the hard cap is at least the usual length, and nobody may fall further behind than it
    # keeps: a value given that breaks this is an error naming both; a default follows
    defaults = Settings.from_env({})
    assert (defaults.log_maxlen, defaults.log_hard_maxlen, defaults.backlog_max,
            defaults.away_hold) == (10000, 100000, 10000, 86400)
    with pytest.raises(SettingsError, match="BRIDGE_LOG_HARD_MAXLEN .200. is below "
                                            "BRIDGE_LOG_MAXLEN .300."):
        Settings.from_env({"BRIDGE_LOG_MAXLEN": "300", "BRIDGE_LOG_HARD_MAXLEN": "200"})
    assert Settings.from_env({"BRIDGE_LOG_MAXLEN": "200000"}).log_hard_maxlen == 200000
    with pytest.raises(SettingsError, match="BRIDGE_BACKLOG_MAX .600. is above "
                                            "BRIDGE_LOG_HARD_MAXLEN .500."):
        Settings.from_env({"BRIDGE_LOG_MAXLEN": "100", "BRIDGE_LOG_HARD_MAXLEN": "500",
                           "BRIDGE_BACKLOG_MAX": "600"})
    assert Settings.from_env({"BRIDGE_LOG_MAXLEN": "100",
                              "BRIDGE_LOG_HARD_MAXLEN": "500"}).backlog_max == 500


def test_cli_bad_value_is_one_line_and_non_zero() -> None:
    result = subprocess.run([BRIDGE, "serve", "--ttl", "soon"], capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=30)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--ttl / BRIDGE_TTL" in lines[0]


def test_python_dash_m_works() -> None:
    result = subprocess.run([sys.executable, "-m", "bridge", "--version"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("bridge ")


def test_a_bad_log_level_is_one_line_not_a_quiet_default() -> None:
    for command in (["serve"], ["who"]):
        result = subprocess.run([BRIDGE, *command], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=30,
                                env={**os.environ, "BRIDGE_LOG_LEVEL": "LOUD"})
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.strip() == ("bridge: bad value for BRIDGE_LOG_LEVEL: 'LOUD'; "
                                         "use one of DEBUG, INFO, WARNING, ERROR")


def test_each_setting_is_declared_once_for_flag_help_and_the_docs() -> None:
    # the flags of `serve`, their help, and the settings page's table all follow the one
    # declaration of each setting (bridge/settings.py); docs/hooks/settings_table.py puts the
    # table at the page's marker when the site is built
    from bridge.cli import build_parser
    from bridge.settings import declarations, settings_table

    [serve] = [action.choices["serve"] for action in build_parser()._actions
               if isinstance(action, argparse._SubParsersAction)]
    helps = {flag: action.help or "" for action in serve._actions
             for flag in action.option_strings}
    table = settings_table()
    rows = {row.split("|")[2].strip(" `"): row.split("|") for row in table.splitlines()[2:]}
    assert all(len(cells) == 6 for cells in rows.values())  # a stray | would add a column
    for declared in declarations():
        assert declared.env in rows, declared.env
        _, flag, _, default, meaning, _ = rows.pop(declared.env)
        if declared.flag:
            assert f"(env {declared.env}" in helps.pop(declared.flag)
            assert flag.strip().startswith(f"`{declared.flag}"), declared.env
        else:
            assert not flag.strip(), declared.env
        assert meaning.strip(), declared.env
        value = declared.default
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = int(value) if float(value).is_integer() else value
            assert default.strip() == f"`{number}`", declared.env
    assert rows == {}
    assert set(helps) == {"-h", "--help"}  # every flag of serve is a declared setting
    assert {d.key for d in declarations()} >= {"redis", "room", "name", "ttl", "secret_file",
                                               "loop_limit", "tls_ca"}
    assert "| `--ttl` | `BRIDGE_TTL` | `15` | seconds (1 to 3600)" in table
    assert "| `--redis URL` | `BRIDGE_REDIS_URL` | the embedded Redis |" in table


def test_the_settings_page_holds_the_table_and_every_variable_bridge_reads() -> None:
    # the page has the marker the hook fills; every BRIDGE_* variable the code names is on the
    # page, in the generated table or in the short table of those read elsewhere
    from bridge.settings import settings_table

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "settings.md").read_text()
    hook = (root / "docs" / "hooks" / "settings_table.py").read_text()
    assert page.count("<!-- settings-table -->") == 1 and "<!-- settings-table -->" in hook
    shown = page + settings_table()
    named = {name for path in (root / "bridge").rglob("*.py")
             for name in re.findall(r"[\"'](BRIDGE_[A-Z_]+)[\"']", path.read_text())}
    # not settings: a constant of bridge team, and the agent image's choice of client
    named -= {"BRIDGE_TOOLS", "BRIDGE_CLIENT"}
    assert len(named) > 30
    assert {name for name in named if f"`{name}`" not in shown} == set()
