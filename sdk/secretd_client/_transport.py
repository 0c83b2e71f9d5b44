"""The blocking client's transport, every call's deadline, and error mapping.

httpx's `timeout` bounds each socket operation, not a call: a peer sending one
byte every 100 ms holds a read open for as long as it likes. So each call has
one deadline (`deadline(seconds)`), and the blocking transport, built here on
httpcore's public pool and network-backend interfaces, gives every connect,
read and write only the time left until it. (The asyncio client puts the
whole call under `asyncio.timeout`.) The transport also closes the socket
when `connect()` fails, which httpcore's stock blocking backend leaks.

Answers are read within a byte cap (`check_size`): a misbehaving peer cannot
make the client buffer without limit.
"""

from __future__ import annotations

import select
import socket as socketlib
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

from secretd_client._errors import (
    AgentUnavailable,
    ProtocolError,
    RequestTimeout,
    SecretdClientError,
)

# A secret answer: the agent's default limits.max_secret_bytes (64 KiB) fits
# over six times, however JSON escapes it. Raise it (max_response_bytes) for
# an agent configured to serve larger values.
MAX_RESPONSE_BYTES = 1024 * 1024
# Listings and health name many secrets, never values: a larger allowance.
MAX_LISTING_BYTES = 16 * 1024 * 1024
BASE_URL = "http://secretd"

_DEADLINE: ContextVar[float | None] = ContextVar("secretd_client_deadline", default=None)


@contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Bound every socket operation of the blocking transport inside by one
    deadline `seconds` from now; yields that deadline (time.monotonic())."""
    end = time.monotonic() + seconds
    token = _DEADLINE.set(end)
    try:
        yield end
    finally:
        _DEADLINE.reset(token)


@contextmanager
def mapped_errors(socket: str, tried: Sequence[str] = ()) -> Iterator[None]:
    """Re-raise httpx/httpcore transport errors as SecretdClientError naming the
    socket (and, when no socket was found, every default place `tried`)."""
    try:
        yield
    except (httpx.ConnectTimeout, httpcore.ConnectTimeout):
        raise AgentUnavailable(f"timed out connecting to the agent at {socket}") from None
    except (httpx.TimeoutException, httpcore.TimeoutException, TimeoutError):
        raise RequestTimeout(f"the agent at {socket} did not answer in time") from None
    except (httpx.ConnectError, httpcore.ConnectError) as exc:
        reason = _reason(exc)
        if len(tried) > 1 and reason.startswith("no such socket"):
            raise AgentUnavailable(
                f"cannot reach the agent: no socket at {' or '.join(tried)} (is the agent "
                "running? name its socket with --socket or $SECRETD_SOCKET)"
            ) from None
        raise AgentUnavailable(f"cannot reach the agent at {socket}: {reason}") from None
    except (
        httpx.ReadError,
        httpx.WriteError,
        httpx.RemoteProtocolError,
        httpx.CloseError,
        httpcore.ReadError,
        httpcore.WriteError,
        httpcore.RemoteProtocolError,
    ):
        raise AgentUnavailable(f"the connection to the agent at {socket} broke") from None
    except httpx.DecodingError:
        raise ProtocolError(f"the agent at {socket} sent an undecodable body") from None
    except (httpx.HTTPError, httpcore.ProtocolError, httpcore.NetworkError) as exc:
        raise SecretdClientError(
            f"request to the agent at {socket} failed ({type(exc).__name__})"
        ) from None


def unix_transport(path: str) -> httpx.BaseTransport:
    """The blocking transport over the Unix socket at `path` (see the module docstring)."""
    return UnixTransport(path)


class UnixTransport(httpx.BaseTransport):
    """httpx over an httpcore pool whose connections keep to the call's deadline."""

    def __init__(self, path: str) -> None:
        self._connections = httpcore.ConnectionPool(uds=path, network_backend=_DeadlineBackend())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, Iterable)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        response = self._connections.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._connections.close()


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


def _time_left(timeout: float | None, kind: type[Exception]) -> float | None:
    """`timeout` shortened to what is left of the call's deadline (`kind` when none is)."""
    end = _DEADLINE.get()
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise kind("the call's deadline passed")
    return left if timeout is None else min(timeout, left)


@contextmanager
def _socket_errors(timeout_kind: type[Exception], error_kind: type[Exception]) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise timeout_kind(str(exc)) from exc
    except OSError as exc:
        raise error_kind(str(exc)) from exc


class _Stream(httpcore.NetworkStream):
    """One connected Unix socket; each operation waits at most until the deadline."""

    def __init__(self, sock: socketlib.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _socket_errors(httpcore.ReadTimeout, httpcore.ReadError):
            self._sock.settimeout(_time_left(timeout, httpcore.ReadTimeout))
            return self._sock.recv(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _socket_errors(httpcore.WriteTimeout, httpcore.WriteError):
            while buffer:
                self._sock.settimeout(_time_left(timeout, httpcore.WriteTimeout))
                sent = self._sock.send(buffer)
                buffer = buffer[sent:]

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("no TLS on the agent's Unix socket")

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._sock
        if info == "is_readable":  # an idle pooled connection the agent has closed
            return _readable(self._sock)
        return None


class _DeadlineBackend(httpcore.NetworkBackend):
    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        sock = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(_time_left(timeout, httpcore.ConnectTimeout))
            sock.connect(path)
        except TimeoutError as exc:
            sock.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        except BaseException:
            sock.close()
            raise
        return _Stream(sock)

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("the agent is reached over its Unix socket")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _readable(sock: socketlib.socket) -> bool:
    if sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def check_size(size: int, socket: str, limit: int) -> None:
    if size > limit:
        raise ProtocolError(f"the agent at {socket} sent an oversized answer")


def check_time(end: float, socket: str) -> None:
    """RequestTimeout once the call's deadline has passed (for any transport)."""
    if time.monotonic() > end:
        raise RequestTimeout(f"the agent at {socket} did not answer in time")


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, FileNotFoundError):
        return "no such socket (is the agent running?)"
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused (is the agent running?)"
    if isinstance(cause, PermissionError):
        return "permission denied"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return "connection failed"
