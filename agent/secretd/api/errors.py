"""Every API error leaves as `{"error": {"code": ..., "message": ...}}`.

- `SecretdError` subclasses carry their own status and code (errors.py).
- aiohttp's own HTTP exceptions (unknown route 404, wrong method 405, body too
  large 413) are reshaped into the same JSON form.
- Anything else is a bug: `500 internal`, logged by exception type only, never
  a traceback or an exception message (either could carry a value) to the client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
import structlog
from aiohttp import web

from secretd.errors import InvalidRequest, SecretdError

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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
    return error_response(exc.status, exc.code, exc.message)


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
    try:
        if request.body_exists or "Transfer-Encoding" in request.headers:
            # Read routes take no body: refuse it (the connection then closes) rather than drain it.
            raise InvalidRequest("read routes take no request body")
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
