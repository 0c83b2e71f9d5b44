"""Durations as the config and the CLI write them: "250ms", "30s", "5m", "1h", "30d".

Pure and import-light: the client commands (`secretd exec --grace`) use it
without loading the configuration schema.
"""

from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(raw: Any) -> float:
    """'250ms', '30s', '5m', '1h', '30d' (or a sequence like '1m30s') -> seconds.

    Raises ValueError saying what was expected, never quoting `raw`."""
    if not isinstance(raw, str):
        raise ValueError("expected a duration string such as '250ms', '30s', '5m', '1h' or '30d'")
    text = raw.strip()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError("expected a duration such as '250ms', '30s', '5m', '1h' or '30d'")
    return total


def format_duration(seconds: float) -> str:
    """300.0 -> '5m'; 0.05 -> '50ms'; 90.0 -> '90s'; 86400.0 -> '1d'."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"
