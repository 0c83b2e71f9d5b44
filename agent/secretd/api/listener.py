"""The guarded aiohttp site that serves the API on the agent's sockets.

`GuardedSite` wraps aiohttp's protocol factory to count connections
(metrics), to answer a fast `503` and close beyond `max_connections`, to
remember each connection's socket so the caller's identity is read from
SO_PEERCRED once per connection, to hand systemd credential requests to their
own protocol, and to hold every connection to a request-head deadline against
slowloris clients (api.deadline: independent of the aiohttp version). Idle
keep-alive connections are closed by aiohttp's `keepalive_timeout`, which we
set to the same idle timeout. The socket file itself: api.unixsock.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, Protocol, cast

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from secretd.api.deadline import HeadDeadline
from secretd.api.unixsock import MIN_BACKLOG, ListenerError, UnixListener
from secretd.model import Caller

log = structlog.get_logger(__name__)

__all__ = [
    "MIN_BACKLOG",
    "ConnectionTracker",
    "Divert",
    "DivertOnly",
    "GuardedSite",
    "ListenerError",
    "UnixListener",
    "serve_diverted",
    "start_serving",
]

REFUSE_LINGER = 0.5
_REFUSAL_BODY = b'{"error":{"code":"too_many_connections","message":"connection limit reached"}}'
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)


class ConnectionObserver(Protocol):
    """Told when connections open and close (metrics.Metrics implements it)."""

    def connection_opened(self) -> None: ...

    def connection_closed(self) -> None: ...


class ConnectionTracker:
    """Open connections, their sockets and each one's caller (read once, lazily)."""

    def __init__(
        self,
        *,
        identify: Callable[[socket.socket], Caller],
        observer: ConnectionObserver,
        max_connections: int,
    ) -> None:
        self._identify = identify
        self._observer = observer
        self.max_connections = max_connections
        self._open: dict[RequestHandler, tuple[Any, Caller | None]] = {}
        self.reserved = 0
        self.refused = 0

    def reserve(self) -> bool:
        """Claim a slot for a connection being accepted; False when full."""
        if self.reserved >= self.max_connections:
            self.refused += 1
            return False
        self.reserved += 1
        return True

    def opened(self, handler: RequestHandler, transport: asyncio.BaseTransport) -> None:
        self._open[handler] = (transport.get_extra_info("socket"), None)
        self._observer.connection_opened()

    def closed(self, handler: RequestHandler) -> None:
        self.reserved -= 1
        if self._open.pop(handler, None) is not None:
            self._observer.connection_closed()

    def caller(self, handler: object) -> Caller | None:
        """The peer of the connection `handler` serves, or None when not ours."""
        if not isinstance(handler, RequestHandler):
            return None
        entry = self._open.get(handler)
        if entry is None:
            return None
        sock, caller = entry
        if caller is None:
            try:
                caller = self._identify(sock)
            except OSError as exc:
                # No peer credentials (or /proc unreadable): no identity, so no access.
                log.warning("connection.unidentified", error=exc.strerror or str(exc))
                return None
            self._open[handler] = (sock, caller)
        return caller

    @property
    def open_count(self) -> int:
        return len(self._open)


# Given a new connection's transport, another protocol to hand it to instead of
# HTTP (systemd credential requests, recognised by the peer's abstract address).
Divert = Callable[[asyncio.BaseTransport], asyncio.Protocol | None]


class _Tracked(asyncio.Protocol):
    """Delegates to aiohttp's RequestHandler (or a diverted protocol) and reports
    open/close to the tracker."""

    def __init__(
        self,
        handler: RequestHandler,
        tracker: ConnectionTracker,
        divert: Divert | None,
        head_timeout: float | None,
    ) -> None:
        self._handler = handler
        self._inner: asyncio.Protocol = handler
        self._tracker = tracker
        self._divert = divert
        self._head_timeout = head_timeout
        self._deadline: HeadDeadline | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        diverted = self._divert(transport) if self._divert is not None else None
        if diverted is not None:
            self._inner = diverted
            try:
                diverted.connection_made(transport)
            except Exception as exc:  # a bug there must not leave the peer hanging
                log.error("connection.divert_failed", error=type(exc).__name__)
                cast(asyncio.Transport, transport).abort()
            return
        self._tracker.opened(self._handler, transport)
        if self._head_timeout is not None:
            self._deadline = HeadDeadline(self._head_timeout, transport.close)
            self._deadline.start()
        self._handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.stop()
        try:
            self._inner.connection_lost(exc)
        finally:
            self._tracker.closed(self._handler)

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            self._deadline.feed(data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # True keeps a half-closed connection open

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class DivertOnly(asyncio.Protocol):
    """For a socket that serves only diverted protocols (the dedicated credentials
    socket): a connection the divert declines is closed with nothing written."""

    def __init__(self, divert: Divert) -> None:
        self._divert = divert
        self._inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            self._inner = self._divert(transport)
            if self._inner is not None:
                self._inner.connection_made(transport)
                return
        except Exception as exc:  # a bug there must not leave the peer hanging
            log.error("connection.divert_failed", error=type(exc).__name__)
        cast(asyncio.Transport, transport).abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None


async def serve_diverted(sock: socket.socket, divert: Divert) -> asyncio.AbstractServer:
    """Serve `sock` with `DivertOnly` connections; close the returned server to stop."""
    loop = asyncio.get_running_loop()
    return await loop.create_unix_server(lambda: DivertOnly(divert), sock=sock, backlog=MIN_BACKLOG)


class _Refuse(asyncio.Protocol):
    """Beyond the connection cap: a canned 503, then close. No parsing, no waiting.

    Closing a Unix socket with unread bytes makes the peer's read fail with
    ECONNRESET (the 503 would be lost), so the request is read and discarded
    first, for at most `REFUSE_LINGER` seconds."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not inherit from asyncio.Transport; same interface.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(_REFUSAL)
        self._timer = asyncio.get_running_loop().call_later(REFUSE_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        self._transport.close()

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()


class GuardedSite(web.BaseSite):
    """An aiohttp site on an existing listening socket, with a connection cap."""

    __slots__ = ("_backlog_sock", "_divert", "_head_timeout", "_tracker")

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        *,
        tracker: ConnectionTracker,
        divert: Divert | None = None,
        head_timeout: float | None = None,
    ) -> None:
        super().__init__(runner, backlog=max(MIN_BACKLOG, tracker.max_connections))
        self._backlog_sock = sock
        self._tracker = tracker
        self._divert = divert
        self._head_timeout = head_timeout

    @property
    def name(self) -> str:
        return f"http://unix:{self._backlog_sock.getsockname()!r}:"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        tracker = self._tracker

        def factory() -> asyncio.Protocol:
            if not tracker.reserve():
                return _Refuse()
            return _Tracked(server(), tracker, self._divert, self._head_timeout)

        loop = asyncio.get_running_loop()
        if self._backlog_sock.family == socket.AF_UNIX:
            self._server = await loop.create_unix_server(
                factory, sock=self._backlog_sock, backlog=self._backlog
            )
        else:
            self._server = await loop.create_server(
                factory, sock=self._backlog_sock, backlog=self._backlog
            )


# Header and line caps: names are at most 512 characters (1,536 percent-encoded).
MAX_LINE_SIZE = 4096
MAX_FIELD_SIZE = 4096
MAX_HEADERS = 32
SHUTDOWN_GRACE = 1.0


class _ToStructlog(logging.Handler):
    """aiohttp's protocol errors (malformed requests: the client's fault) as one
    debug line each, without the traceback aiohttp would print to stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        error = type(record.exc_info[1]).__name__ if record.exc_info else None
        log.debug("http.request_rejected", reason=record.getMessage()[:200], error=error)


def _protocol_logger() -> logging.Logger:
    # A free-standing Logger (not registered with logging.getLogger): no global state.
    logger = logging.Logger("secretd.api.http", level=logging.DEBUG)
    logger.addHandler(_ToStructlog())
    logger.propagate = False
    return logger


async def start_serving(
    app: web.Application,
    socks: list[socket.socket],
    *,
    tracker: ConnectionTracker,
    idle_timeout: float,
    divert: Divert | None = None,
    head_timeout: float | None = None,
) -> web.AppRunner:
    """Start `app` on every listening socket in `socks`; `runner.cleanup()` stops it.

    `idle_timeout` closes idle keep-alive connections; `head_timeout` (default: the
    same) bounds the time to send a complete request head (api.deadline)."""
    runner = web.AppRunner(
        app,
        access_log=None,  # requests are audited; aiohttp's access log adds nothing
        logger=_protocol_logger(),
        keepalive_timeout=idle_timeout,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
        max_headers=MAX_HEADERS,
        lingering_time=0,  # never drain an unwanted body: close instead
        handler_cancellation=True,  # a long-poll ends when its client goes away
        shutdown_timeout=SHUTDOWN_GRACE,
    )
    await runner.setup()
    try:
        for sock in socks:
            unix = sock.family == socket.AF_UNIX
            site = GuardedSite(
                runner,
                sock,
                tracker=tracker,
                divert=divert if unix else None,
                head_timeout=idle_timeout if head_timeout is None else head_timeout,
            )
            await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
