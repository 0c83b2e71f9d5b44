"""A request-head deadline per connection, against slowloris clients.

aiohttp closes idle keep-alive connections after a response, but whether it
also bounds a connection that never completes its first request head depends
on its version (it only arms that timer at connection start since late 3.14).
So we bound it ourselves, at the byte level, independently of the HTTP parser:

- a connection must complete a request head (up to the blank line ending the
  headers) within `limit` seconds of connecting;
- bytes arriving after a complete head start the next head (read routes take no
  body; a request with one is refused and closed), which must complete within
  `limit` seconds of its first byte;
- trickling bytes never extends a deadline.

Idle time between requests (no bytes at all) is aiohttp's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")
_CARRY = 3  # a terminator split across two reads is found with this much of the last one


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Scheduler = Callable[[float, Callable[[], None]], Cancellable]


class HeadDeadline:
    """Watches one connection's incoming bytes; calls `expire` when a head is late.

    `schedule(delay, callback)` defaults to the running loop's `call_later`."""

    def __init__(
        self, limit: float, expire: Callable[[], None], schedule: Scheduler | None = None
    ) -> None:
        self._limit = limit
        self._expire = expire
        self._schedule: Scheduler = schedule or asyncio.get_running_loop().call_later
        self._timer: Cancellable | None = None
        self._in_head = False
        self._tail = b""

    def start(self) -> None:
        """The connection is open: its first head is due within the limit."""
        self._begin_head()

    def feed(self, data: bytes) -> None:
        if not self._in_head:
            if data.endswith(_HEAD_ENDS):
                # The common case - whole requests in one read: every head in
                # `data` is complete and nothing follows the last, so no clock
                # starts (what the general case below finds too, at more cost).
                return
            if not data:
                return
            self._begin_head()
        window = self._tail + data
        if not any(end in window for end in _HEAD_ENDS):
            self._tail = window[-_CARRY:]
            return
        self._end_head()
        # Pipelining: the bytes after the terminator may hold further complete
        # heads (a long-poll sent with the request before it must not be cut
        # off as a late head); only an incomplete one left over starts a clock.
        rest = _after_heads(window)
        if rest:
            self._begin_head()
            self._tail = rest[-_CARRY:]

    def stop(self) -> None:
        self._end_head()

    def _begin_head(self) -> None:
        self._in_head = True
        self._tail = b""
        if self._timer is None:
            self._timer = self._schedule(self._limit, self._fire)

    def _end_head(self) -> None:
        self._in_head = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if self._in_head:
            self._expire()


def _after_heads(window: bytes) -> bytes:
    """What follows the last complete head in `window` (empty if nothing does)."""
    while found := [window.find(end) + len(end) for end in _HEAD_ENDS if end in window]:
        window = window[min(found) :]
    return window
