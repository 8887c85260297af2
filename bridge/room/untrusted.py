"""Text that a peer wrote: made one printable line and bounded before anyone shows it.

Anyone who can write to the room's Redis can put anything into a presence record or an event:
escape sequences, newlines that fake another line, megabytes. These helpers are the one
place such text is neutralised, for the terminal and for the agent alike.
"""

from __future__ import annotations

import unicodedata


def clean(text: str) -> str:
    """One printable line: newlines shown as ⏎, other control characters (an ANSI escape
    sent by an agent, say) replaced, so that a message cannot rewrite the operator's terminal."""
    out = []
    for char in text.replace("\r\n", "\n"):
        if char == "\n":
            out.append(" ⏎ ")
        elif char == "\t" or (char != " " and unicodedata.category(char) in ("Zs", "Zl", "Zp")):
            out.append(" ")  # U+2028/2029 would break the line; odd spaces line up falsely
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            out.append("\ufffd")
        else:
            out.append(char)
    return "".join(out)


def bounded(text: str, limit: int) -> str:
    """``clean`` and at most ``limit`` characters (cut ones end in …)."""
    text = clean(text[: limit * 2])  # cut first: cleaning megabytes costs time
    return text if len(text) <= limit else text[: limit - 1] + "…"
