"""structlog setup: text or JSON lines to stderr (journald picks them up).

Modules log with `structlog.get_logger(__name__)` and events named
`noun.verb_past` (`secret.refreshed`, `template.rendered`). A `SecretValue`
renders as `<redacted>` wherever it lands; the processor below also refuses raw
bytes so a revealed value cannot slip into a log line as `b'...'`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def _drop_bytes(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event.items():
        event[key] = _without_bytes(value, depth=0)
    return event


def _without_bytes(value: Any, depth: int) -> Any:
    """`value` with raw bytes replaced by their length, inside containers too."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if not isinstance(value, list | tuple | set | frozenset | dict):
        return value
    if depth >= 8:  # deeper than any log call needs: bounded, and nothing slips through
        return "<nested too deep>"
    if isinstance(value, dict):
        return {k: _without_bytes(v, depth + 1) for k, v in value.items()}
    return [_without_bytes(item, depth + 1) for item in value]


def configure_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure structlog for the process (called once by the composition root/CLI)."""
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_bytes,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
