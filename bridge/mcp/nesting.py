"""How deep a JSON-RPC line nests, and its top-level `id`, found without recursion.

A line nested deeper than MAX_NESTING is refused before anything walks it (json itself,
repr, a tool would recurse), and is still answered: by the `id` found here.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Arrays and objects nested deeper than this are refused before anything walks them: no MCP
# request needs more, and every recursive walk (json itself, repr, a tool) is then safe.
MAX_NESTING = 100

# The tokens of a JSON text that matter for nesting: strings (skipped whole, brackets in them
# do not count), runs of opening brackets, runs of closing brackets, and everything else.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[{]+|[\]}]+|[^"\[\]{}]+', re.DOTALL)


def too_deep(line: bytes) -> bool:
    """Whether ``line`` nests arrays/objects deeper than MAX_NESTING, without recursion."""
    if line.count(b"[") + line.count(b"{") <= MAX_NESTING:  # the common case, in C
        return False
    depth = 0
    for token in _TOKENS.finditer(line):
        first = token.group()[0]
        if first in b"[{":
            depth += token.end() - token.start()
            if depth > MAX_NESTING:
                return True
        elif first in b"]}":
            depth -= token.end() - token.start()
    return False


def top_level_id(line: bytes) -> Any:
    """The `id` member of the top-level object in ``line``, found without building (or
    recursing into) anything nested; None when there is none or it is an array or object
    (the caller checks that it is a valid id)."""
    depth, expect, key = 0, "", None  # expect: "key", "colon", "value" or "" (anything else)
    for token in _TOKENS.finditer(line):
        text = token.group()
        first = text[0]
        if first in b"[{":
            if depth == 0:
                if first != ord("{"):
                    return None  # not an object: it has no id
                expect = "key" if len(text) == 1 else ""
            elif depth == 1 and expect == "value":
                if key == "id":
                    return None  # an array or object as id
                expect = ""
            depth += len(text)
        elif first in b"]}":
            depth -= len(text)
            if depth <= 0:
                return None
        elif depth == 1 and first == ord('"'):
            if expect == "key":
                key, expect = _loads(text), "colon"
            elif expect == "value":
                if key == "id":
                    return _loads(text)
                expect = ""
        elif depth == 1:  # whitespace, `:`, `,` and scalars (numbers, true, false, null)
            for part_number, part in enumerate(text.split(b",")):
                part = part.strip()
                if part_number:  # a comma: the next string is a key
                    expect = "key"
                if expect == "colon" and part.startswith(b":"):
                    part, expect = part[1:].strip(), "value"
                if part and expect == "value":
                    if key == "id":
                        return _loads(part)
                    expect = ""
    return None


def _loads(text: bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
