"""bridge: AI coding agents on different machines find each other and talk through Redis."""

import sys

__version__ = "0.1.0"

# structlog imports rich's console and traceback whenever rich is installed: +44 ms to every
# start of `bridge serve` (python -X importtime, structlog 84 -> 40 ms), for tracebacks our
# logs do not use (format_exc_info renders them). Hide rich while structlog loads; the
# operator commands import rich themselves, after this.
_hidden = "rich" not in sys.modules
if _hidden:
    sys.modules["rich"] = None  # type: ignore[assignment]
try:
    import structlog  # noqa: F401
finally:
    if _hidden:
        del sys.modules["rich"]
