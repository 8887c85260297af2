"""Logging: structlog to stderr only. stdout belongs to the MCP protocol.

JSON lines when stderr is not a terminal (Claude Code keeps them in its MCP log),
readable console output when a person watches.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

from bridge.errors import SettingsError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def check_level() -> None:
    """A BRIDGE_LOG_LEVEL that is not a level is an error, not a quiet INFO."""
    value = os.environ.get("BRIDGE_LOG_LEVEL") or "INFO"
    if value.upper() not in LEVELS:
        raise SettingsError(f"bad value for BRIDGE_LOG_LEVEL: {value!r}; use one of "
                            f"{', '.join(LEVELS)}")


def configure(level: str | None = None) -> None:
    level_name = (level or os.environ.get("BRIDGE_LOG_LEVEL") or "INFO").upper()
    numeric = getattr(logging, level_name, logging.INFO)
    renderer: Any
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors="NO_COLOR" not in os.environ)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Third-party chatter (redis-py, anyio) stays down, and on stderr.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
    for noisy in ("redis", "anyio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
