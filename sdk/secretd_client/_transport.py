"""Mapping httpx's transport failures onto the client's errors, and a bounded
body read (a misbehaving peer cannot make the client buffer without limit)."""

from __future__ import annotations

import socket as socketlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

try:  # httpcore's own stream around a connected socket (internal, hence guarded)
    from httpcore._backends.sync import SyncStream
except ImportError:  # pragma: no cover - a future httpcore
    SyncStream = None  # type: ignore[assignment,misc]

from secretd_client._errors import (
    AgentUnavailable,
    ProtocolError,
    RequestTimeout,
    SecretdClientError,
)

# The agent caps a value at 64 MiB; base64 and JSON framing add a third.
MAX_RESPONSE_BYTES = 96 * 1024 * 1024
BASE_URL = "http://secretd"


@contextmanager
def mapped_errors(socket: str) -> Iterator[None]:
    """Re-raise httpx transport errors as SecretdClientError naming the socket."""
    try:
        yield
    except httpx.ConnectTimeout:
        raise AgentUnavailable(f"timed out connecting to the agent at {socket}") from None
    except httpx.TimeoutException:
        raise RequestTimeout(f"the agent at {socket} did not answer in time") from None
    except httpx.ConnectError as exc:
        reason = _reason(exc)
        raise AgentUnavailable(f"cannot reach the agent at {socket}: {reason}") from None
    except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.CloseError):
        raise AgentUnavailable(f"the connection to the agent at {socket} broke") from None
    except httpx.DecodingError:
        raise ProtocolError(f"the agent at {socket} sent an undecodable body") from None
    except httpx.HTTPError as exc:
        raise SecretdClientError(
            f"request to the agent at {socket} failed ({type(exc).__name__})"
        ) from None


def unix_transport(path: str) -> httpx.HTTPTransport:
    """A blocking transport over the Unix socket at `path`.

    httpcore's blocking backend leaks the socket when connect() fails (the
    agent is down); this one closes it. Should httpx change its internals, the
    stock pool stays in place and only that leak comes back.
    """
    transport = httpx.HTTPTransport(uds=path)
    pool = getattr(transport, "_pool", None)
    if SyncStream is not None and isinstance(pool, httpcore.ConnectionPool):
        transport._pool = httpcore.ConnectionPool(uds=path, network_backend=_ClosingBackend())
    return transport


class _ClosingBackend(httpcore.SyncBackend):
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
            sock.settimeout(timeout)
            sock.connect(path)
        except TimeoutError as exc:
            sock.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return SyncStream(sock)


def check_size(size: int, socket: str, limit: int) -> None:
    if size > limit:
        raise ProtocolError(f"the agent at {socket} sent an oversized answer")


def _reason(exc: httpx.ConnectError) -> str:
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
