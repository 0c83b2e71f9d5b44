"""The guarded aiohttp site that serves the API on the agent's sockets.

`Serving` wraps aiohttp's protocol factory so that every connection:

- is admitted by its peer's fair share (api.connections: per uid on the Unix
  socket, the TCP listener as one peer) or gets a fast canned `503` and close;
- is counted (metrics) and has its socket remembered, so the caller's identity
  is read from SO_PEERCRED once per connection;
- is handed to its own protocol when it is a systemd credential request;
- must complete each request head in time, against slowloris clients
  (api.deadline: independent of the aiohttp version);
- must have its answers taken by the peer: with a zero write-buffer high-water
  mark, any byte the kernel will not take pauses writing, and a connection
  whose output stays unsent for `write_timeout` is aborted (not closed: a
  close waits for a flush that never comes). While output is unsent the
  connection is not read either, so a client that pipelines requests and never
  reads holds at most one kernel buffer of answers and aiohttp's bounded queue
  of parsed requests;
- answers requests aiohttp's parser rejects in our JSON error shape
  (api.errors.JsonErrorHandler), never with aiohttp's page that quotes them.

Idle keep-alive connections are closed by aiohttp's `keepalive_timeout`, which
we set to the same idle timeout. The socket file itself: api.unixsock.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any, cast

import structlog
from aiohttp import web

from secretd.api.accept import Acceptor
from secretd.api.connections import ConnectionLimits, ConnectionTracker, Peer, peer_of
from secretd.api.deadline import HeadDeadline
from secretd.api.errors import JsonErrorHandler
from secretd.api.fastread import FAST_READS_KEY, front
from secretd.api.unixsock import MIN_BACKLOG, ListenerError, UnixListener

log = structlog.get_logger(__name__)

__all__ = [
    "MIN_BACKLOG",
    "ConnectionLimits",
    "ConnectionTracker",
    "Divert",
    "DivertOnly",
    "ListenerError",
    "Serving",
    "UnixListener",
    "serve_diverted",
    "start_serving",
]

REFUSE_LINGER = 2.0
_REFUSAL_BODY = b'{"error":{"code":"too_many_connections","message":"connection limit reached"}}'
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)


# Given a new connection's transport, another protocol to hand it to instead of
# HTTP (systemd credential requests, recognised by the peer's abstract address).
Divert = Callable[[asyncio.BaseTransport], asyncio.Protocol | None]


class _Gate(asyncio.Protocol):
    """A new connection's first protocol: admits it by its peer's share, then
    hands the transport to the protocol that serves it - a `_Connection` (HTTP),
    a refusal, or a diverted protocol (which the gate keeps wrapping, to give
    the peer's slot back when it ends).

    The HTTP connection takes the transport over (`set_protocol`), so its
    requests are not passed through one more layer."""

    def __init__(
        self,
        connection: Callable[[Peer], _Connection],
        tracker: ConnectionTracker,
        divert: Divert | None,
    ) -> None:
        self._connection = connection
        self._tracker = tracker
        self._divert = divert
        self._inner: asyncio.Protocol | None = None  # the diverted protocol
        self._peer: Peer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = peer_of(transport)
        if not self._tracker.admit(peer):
            self._hand_over(transport, _Refuse())
            return
        diverted = self._divert(transport) if self._divert is not None else None
        if diverted is None:
            self._hand_over(transport, self._connection(peer))
            return
        self._peer, self._inner = peer, diverted
        try:
            diverted.connection_made(transport)
        except Exception as exc:  # a bug there must not leave the peer hanging
            log.error("connection.divert_failed", error=type(exc).__name__)
            cast(asyncio.Transport, transport).abort()

    @staticmethod
    def _hand_over(transport: asyncio.BaseTransport, protocol: asyncio.Protocol) -> None:
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    # What follows is only ever called for a diverted connection.

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            if self._inner is not None:
                self._inner.connection_lost(exc)
        finally:
            if self._peer is not None:
                self._tracker.release(self._peer)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class _Connection(JsonErrorHandler):
    """aiohttp's handler of one admitted HTTP connection, held to the head and
    write deadlines, counted, and giving its peer's slot back when it ends."""

    def __init__(
        self,
        manager: web.Server,
        *,
        peer: Peer,
        tracker: ConnectionTracker,
        head_timeout: float | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._peer = peer
        self._tracker = tracker
        self._head_timeout = head_timeout
        self._deadline: HeadDeadline | None = None
        self._stall: asyncio.TimerHandle | None = None
        self._holding_reads = False
        self._guarded: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not inherit from asyncio.Transport; same interface.
        self._guarded = cast(asyncio.Transport, transport)
        self._tracker.opened(self, transport)
        # Every byte the kernel does not take at once pauses writing (pause_writing).
        self._guarded.set_write_buffer_limits(high=0)
        if self._head_timeout is not None:
            self._deadline = HeadDeadline(self._head_timeout, self._guarded.abort)
            self._deadline.start()
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.stop()
        self._end_stall()
        try:
            super().connection_lost(exc)
        finally:
            self._tracker.closed(self)
            self._tracker.release(self._peer)

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            self._deadline.feed(data)
        super().data_received(data)

    def pause_writing(self) -> None:
        """The peer is not taking our output: it must within `write_timeout`, and
        nothing more is read from it meanwhile (it cannot queue more requests)."""
        transport = self._guarded
        if self._stall is None and transport is not None:
            timeout = self._tracker.limits.write_timeout
            self._stall = asyncio.get_running_loop().call_later(timeout, self._stalled)
            # Only a hold of our own is released in resume_writing (aiohttp pauses
            # reading itself when its queue of parsed requests is full).
            if transport.is_reading():
                transport.pause_reading()
                self._holding_reads = True
        super().pause_writing()

    def resume_writing(self) -> None:
        self._end_stall()
        super().resume_writing()

    def _end_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        transport = self._guarded
        if self._holding_reads and transport is not None and not transport.is_closing():
            transport.resume_reading()
        self._holding_reads = False

    def _stalled(self) -> None:
        self._stall = None
        log.info("connection.write_timed_out", timeout=self._tracker.limits.write_timeout)
        if self._guarded is not None:
            self._guarded.abort()  # close() would wait for the flush that is not coming


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


async def serve_diverted(sock: socket.socket, divert: Divert) -> Acceptor:
    """Serve `sock` with `DivertOnly` connections; close the returned acceptor to stop."""
    sock.listen(MIN_BACKLOG)
    return Acceptor(sock, lambda: DivertOnly(divert), asyncio.get_running_loop())


class _Refuse(asyncio.Protocol):
    """Beyond a connection limit: a canned 503, then close. No parsing, no waiting.

    Closing a Unix socket with unread bytes makes the peer's read fail with
    ECONNRESET, and closing before the peer has written makes its write fail
    with EPIPE - either way the 503 would be lost. So the answer is followed by
    a half-close (the peer reads 503 then EOF), and the request is read and
    discarded before the close, for at most `REFUSE_LINGER` seconds: long
    enough for a client on a busy host, short enough that a flood of refused
    connections holds few descriptors."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not inherit from asyncio.Transport; same interface.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(_REFUSAL)
        if self._transport.can_write_eof():
            self._transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSE_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        self._transport.close()

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()


class Serving:
    """The API served on listening sockets, with admission and deadlines.

    Built only on aiohttp's public interface: the runner's `server` (a
    `web.Server`, aiohttp's protocol factory) makes a `JsonErrorHandler` per
    connection - registered with that server, so `runner.cleanup()` closes the
    connections as its own - and we own the asyncio servers that accept on
    our sockets (which aiohttp's `SockSite` cannot wrap)."""

    def __init__(self, runner: web.AppRunner) -> None:
        self.runner = runner
        self._servers: list[Acceptor] = []

    async def listen(
        self,
        sock: socket.socket,
        *,
        tracker: ConnectionTracker,
        handler_args: Mapping[str, Any],
        divert: Divert | None,
        head_timeout: float | None,
    ) -> None:
        """Accept connections on `sock` from now on."""
        server = self.runner.server
        assert server is not None, "the runner is set up first"
        loop = asyncio.get_running_loop()
        args = dict(handler_args)

        unix = sock.family == socket.AF_UNIX

        def connection(peer: Peer) -> _Connection:
            return _Connection(
                server,
                peer=peer,
                tracker=tracker,
                head_timeout=head_timeout,
                fast_reads=unix,
                loop=loop,
                **args,
            )

        def factory() -> asyncio.Protocol:
            return _Gate(connection, tracker, divert)

        sock.listen(max(MIN_BACKLOG, tracker.max_connections))
        # Not loop.create_server: uvloop would accept one connection per turn of
        # a busy loop (api/accept.py).
        self._servers.append(Acceptor(sock, factory, loop))

    async def cleanup(self) -> None:
        """Stop accepting, then let the runner close the connections and the app."""
        for accepted in self._servers:
            accepted.close()
        self._servers.clear()
        await self.runner.cleanup()


# Header and line caps: names are at most 512 characters (1,536 percent-encoded).
MAX_LINE_SIZE = 4096
MAX_FIELD_SIZE = 4096
MAX_HEADERS = 32
SHUTDOWN_GRACE = 1.0


class _ToStructlog(logging.Handler):
    """aiohttp's own protocol log lines as one debug line each, without the
    traceback (or request text) aiohttp would print to stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        error = type(record.exc_info[1]).__name__ if record.exc_info else None
        log.debug("http.request_rejected", reason=str(record.msg)[:200], error=error)


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
) -> Serving:
    """Start `app` on every listening socket in `socks`; `cleanup()` stops it.

    `idle_timeout` closes idle keep-alive connections; `head_timeout` (default: the
    same) bounds the time to send a complete request head (api.deadline). The
    tracker's limits admit connections and bound how long output may stay unsent."""
    handler_args: dict[str, Any] = {
        "access_log": None,  # requests are audited; aiohttp's access log adds nothing
        "logger": _protocol_logger(),
        "keepalive_timeout": idle_timeout,
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
        "lingering_time": 0,  # never drain an unwanted body: close instead
    }
    runner = web.AppRunner(
        app,
        handler_cancellation=True,  # a long-poll ends when its client goes away
        shutdown_timeout=SHUTDOWN_GRACE,
        **handler_args,
    )
    await runner.setup()
    server = runner.server
    assert server is not None, "set up"
    server.request_handler = front(app.get(FAST_READS_KEY), server.request_handler)
    serving = Serving(runner)
    try:
        for sock in socks:
            unix = sock.family == socket.AF_UNIX
            await serving.listen(
                sock,
                tracker=tracker,
                handler_args=handler_args,
                divert=divert if unix else None,
                head_timeout=idle_timeout if head_timeout is None else head_timeout,
            )
    except BaseException:
        await serving.cleanup()
        raise
    return serving
