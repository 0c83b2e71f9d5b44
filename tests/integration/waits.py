"""Bounded polls for a condition another process or task brings about: each
wait has a deadline and fails saying what never happened (never a bare sleep).

    eventually(lambda: path.exists(), within=5, what="the rendered file")
    await until(lambda: len(lines(log)) >= 4, within=15)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL = 0.02


def eventually(check: Callable[[], object], within: float = 15.0, what: str = "condition") -> None:
    """Return once `check()` is true; AssertionError after `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        time.sleep(POLL)


async def until(check: Callable[[], object], within: float = 15.0, what: str = "condition") -> None:
    """`eventually` for asyncio: the loop keeps running between polls."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(POLL)
