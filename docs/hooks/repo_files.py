"""MkDocs hook: a page that holds `<!-- include: FILE -->` shows that file of the repository's
root (README.md on the home page, CONTRIBUTING.md), so each exists once. Their links are
written for the repository: `docs/x.md` becomes `x.md`, README.md and CONTRIBUTING.md their
pages, and a link to any other file of the repository its plain text (the site has no copy)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

INCLUDE = re.compile(r"^<!-- include: ([\w.-]+) -->$", re.MULTILINE)
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
PAGES = {"README.md": "index.md", "CONTRIBUTING.md": "contributing.md"}


def site_link(match: re.Match[str]) -> str:
    image, text, target = match.groups()
    if re.match(r"[a-z]+:|#", target):
        return match.group(0)  # a web address, or an anchor on the same page
    path, hash_, anchor = target.partition("#")
    if path.startswith("docs/"):
        path = path.removeprefix("docs/")
    elif path in PAGES:
        path = PAGES[path]
    else:
        return text  # a file the site does not hold
    return f"{image}[{text}]({path}{hash_}{anchor})"


def on_page_markdown(markdown: str, config: Any, **_: Any) -> str:
    root = Path(config.config_file_path).parent

    def include(match: re.Match[str]) -> str:
        path = root / match.group(1)
        if not path.is_file():
            raise PluginError(f"{match.group(0)}: no such file {path}")
        return LINK.sub(site_link, path.read_text(encoding="utf-8"))

    return INCLUDE.sub(include, markdown)
