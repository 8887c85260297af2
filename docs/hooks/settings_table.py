"""MkDocs hook: docs/settings.md's table of settings, made at build time from their
declarations (bridge.settings.settings_table), so the page cannot drift from the code."""

from __future__ import annotations

from typing import Any

from mkdocs.exceptions import PluginError

from bridge.settings import settings_table

PAGE = "settings.md"
MARKER = "<!-- settings-table -->"


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if markdown.count(MARKER) != 1:
        raise PluginError(f"docs/{PAGE} must hold the line {MARKER} once (the settings table)")
    return markdown.replace(MARKER, settings_table())
