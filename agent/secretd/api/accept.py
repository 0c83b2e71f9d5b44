"""Accepting connections on a listening socket, every pending one at a time.

uvloop (libuv) accepts one connection per turn of the event loop. While the
loop is busy serving - a flood of pipelined requests on hundreds of
connections - each turn takes milliseconds, so a burst of new connections
drains from the backlog at a hundred or so a second: a caller who connected
behind 300 others waited 3 s for its first byte while established
connections were answered in milliseconds. asyncio's own loop accepts in
batches; `Acceptor` does the same on any loop: when the socket is readable it
accepts up to `ACCEPT_BATCH` connections and hands each to the loop's public
`connect_accepted_socket`.

Out of descriptors (EMFILE and friends) it stops listening for
`RETRY_DELAY` seconds rather than spin on a socket it cannot accept from.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable

import structlog

__all__ = ["ACCEPT_BATCH", "Acceptor"]

log = structlog.get_logger(__name__)

ACCEPT_BATCH = 512
RETRY_DELAY = 1.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Acceptor:
    """Serves `sock` (listening; the acceptor's from now on) with `factory`'s
    protocols until `close()`, which closes it."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._sock = sock
        self._factory = factory
        self._loop = loop
        self._starting: set[asyncio.Task[object]] = set()
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        sock.setblocking(False)
        self._listen()

    def _listen(self) -> None:
        self._retry = None
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept_pending)

    def _accept_pending(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                self._pause(exc)
                return
            self._start(conn)

    def _start(self, conn: socket.socket) -> None:
        task: asyncio.Task[object] = self._loop.create_task(self._connect(conn))
        self._starting.add(task)
        task.add_done_callback(self._started)

    async def _connect(self, conn: socket.socket) -> object:
        try:
            return await self._loop.connect_accepted_socket(self._factory, sock=conn)
        except BaseException:
            conn.close()  # never handed over (a failure, or close() cancelled it)
            raise

    def _started(self, task: asyncio.Task[object]) -> None:
        self._starting.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("connection.accept_failed", error=type(exc).__name__)

    def _pause(self, exc: OSError) -> None:
        if exc.errno not in _OUT_OF_RESOURCES:
            log.warning("connection.accept_failed", error=exc.strerror)
            return
        log.error("connection.accept_paused", error=exc.strerror, seconds=RETRY_DELAY)
        self._loop.remove_reader(self._sock.fileno())
        self._retry = self._loop.call_later(RETRY_DELAY, self._listen)

    def close(self) -> None:
        """Stop accepting and close the socket; connections already handed over
        are their protocols' to close."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        with contextlib.suppress(ValueError, OSError):  # the socket may be closed already
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for task in self._starting:
            task.cancel()
