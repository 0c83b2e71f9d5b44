"""Every API error leaves as `{"error": {"code": ..., "message": ...}}`.

- `SecretdError` subclasses carry their code (errors.py); their HTTP status is
  decided here, once (`status_of`).
- aiohttp's own HTTP exceptions (unknown route 404, wrong method 405, body too
  large 413) are reshaped into the same JSON form.
- Anything else is a bug: `500 internal`, logged by exception type only, never
  a traceback or an exception message (either could carry a value) to the client.
- Requests the HTTP parser rejects (malformed request line, bad or oversized
  header, bad chunking, invalid method) never reach the app: aiohttp answers
  them from `RequestHandler.handle_error`, whose default text page quotes the
  offending bytes (a token header included), and HTTP exceptions raised
  before the middleware (417 for an unknown `Expect`) quote the header too.
  `JsonErrorHandler` answers both: our JSON shape, a fixed message per kind
  of fault, nothing the client sent, and the connection closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import http_exceptions, web

from secretd.errors import (
    AuthError,
    BackendError,
    BackendTimeout,
    Conflict,
    Forbidden,
    InvalidName,
    InvalidRequest,
    NotFound,
    RateLimited,
    SecretdError,
    TooLarge,
    UsageError,
)
from secretd.rotation.errors import RotationError

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The HTTP status of each error class; the nearest listed ancestor decides, else 500.
STATUS: dict[type[SecretdError], int] = {
    UsageError: 400,
    InvalidName: 400,
    InvalidRequest: 400,
    AuthError: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,
    RateLimited: 429,
    BackendError: 503,
    BackendTimeout: 504,
    RotationError: 502,  # the rotation's target (a database, a command) failed
}


def status_of(exc: SecretdError) -> int:
    """The HTTP status that answers `exc`."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 500


# Codes for aiohttp's own HTTP exceptions (routing, methods, size caps).
_HTTP_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    414: "too_large",
    431: "too_large",
}
_HTTP_MESSAGES = {
    404: "no such route",
    405: "method not allowed (read routes accept only GET)",
    413: "request body too large (read routes take no body)",
}


def error_response(status: int, code: str, message: str) -> web.Response:
    """The one JSON error shape, with headers that keep it out of caches."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return web.Response(
        status=status,
        body=body,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def from_secretd_error(exc: SecretdError) -> web.Response:
    return error_response(status_of(exc), exc.code, exc.message)


def from_http_exception(exc: web.HTTPException) -> web.Response:
    status = exc.status
    code = _HTTP_CODES.get(status, "invalid_request" if status < 500 else "internal")
    message = _HTTP_MESSAGES.get(status, exc.reason)
    response = error_response(status, code, message)
    allow = exc.headers.get("Allow")
    if allow is not None:
        response.headers["Allow"] = allow
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one middleware: refuses request bodies, maps every failure to the JSON shape."""
    if request.body_exists or "Transfer-Encoding" in request.headers:
        # Read routes take no body: refuse it rather than drain it, and close the
        # connection, since what follows the body cannot be trusted to be a request
        # of its own (a pipelined one would otherwise be served).
        response = from_secretd_error(InvalidRequest("read routes take no request body"))
        response.force_close()
        return response
    try:
        return await handler(request)
    except SecretdError as exc:
        return from_secretd_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects are not errors (none are used, but keep aiohttp's meaning)
        return from_http_exception(exc)
    except Exception as exc:
        # A bug. The type name is safe to log; the message or traceback may not be.
        log.error("request.failed", route=request.path[:200], error=type(exc).__name__)
        return error_response(500, "internal", "internal error")


# What the HTTP parser's exceptions mean, most specific first: a fixed message
# each, so an error body never carries a byte the client sent.
_PARSE_FAULTS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "request line or header field too long"),
    (http_exceptions.BadHttpMethod, "invalid method"),
    (http_exceptions.BadStatusLine, "malformed request line"),
    (http_exceptions.InvalidURLError, "invalid request target"),
    (http_exceptions.InvalidHeader, "invalid header"),
    (http_exceptions.PayloadEncodingError, "invalid body framing"),
)


def protocol_error_response(status: int, exc: BaseException | None) -> web.Response:
    """The answer to a request that failed below the app; the connection then closes."""
    if status >= 500:
        response = error_response(status, "internal", "internal error")
    else:
        message = next(
            (text for kind, text in _PARSE_FAULTS if isinstance(exc, kind)),
            "malformed HTTP request",
        )
        response = error_response(status, "invalid_request", message)
    response.force_close()
    return response


def early_error_response(exc: web.HTTPException) -> web.Response:
    """The answer to an HTTP error the application raised before the middleware
    ran: aiohttp's handling of `Expect` answers 417 with text quoting the
    header's value. Any body the client sends after it is not a request: the
    connection closes, as for a parser error."""
    response = from_http_exception(exc)
    response.force_close()
    return response


class JsonErrorHandler(web.RequestHandler):
    """aiohttp's connection handler, answering its own errors in our JSON shape.

    aiohttp's `RequestHandler` calls `handle_error` for every request its
    parser rejects (and for exceptions escaping the app, which the middleware
    above never lets happen). The method is public but not a documented
    extension point, so tests/e2e/test_e2e_hostile.py (both of aiohttp's
    parsers) and tests/fuzz send such requests with a token in them and fail
    if anything but our answer comes back. HTTP exceptions the application
    raises before the middleware runs (an unknown `Expect` is answered 417,
    quoting it) are answered by `early_error_response`, called from the
    request handler in front of the application (api.fastread.front).

    `fast_reads`: this connection's plain reads may take the fast route
    (api.fastread): a Unix socket's, never the TCP listener's.
    """

    def __init__(self, manager: web.Server, *, fast_reads: bool = False, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.fast_reads = fast_reads

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        error = type(exc).__name__ if exc is not None else None
        if status >= 500:
            log.error("request.failed", error=error)
        else:
            log.debug("http.request_rejected", status=status, error=error)
        if request.writer.output_size > 0:
            # Part of an answer is on the wire already: aiohttp then drops the connection.
            raise ConnectionError("response already started")
        return protocol_error_response(status, exc)
