"""The AWS backend's HTTP session: aiobotocore's own, with every answer's body capped.

botocore reads a whole answer into memory, parses it and base64-decodes
SecretBinary before anything can look at its size, so an endpoint streaming a
100 MiB SecretBinary cost the agent half a gigabyte. This session (handed to
aiobotocore through `AioConfig(http_session_cls=...)`, its documented way to
supply the HTTP layer) reads each body itself, in chunks, and stops at a cap
sized from `limits.max_secret_bytes`:

    GetSecretValue          6 x max_secret_bytes + 64 KiB  (a string value's JSON
                                                            escapes take at most 6
                                                            bytes per byte)
    BatchGetSecretValue     20 of those                     (20 secrets a call)
    anything else           8 MiB                           (a page of 100 listings)

An answer over its cap is cut off (the connection is closed, not drained),
a body that ends before its Content-Length is "cut short", a success whose
body is not JSON is "truncated or malformed", and a redirect is neither
followed nor used (real Secrets Manager never redirects; following one would
send the signed request elsewhere); each raises an `AnswerRefused` that
aws_errors.map_error turns into BadBackendAnswer. Only then does botocore
see the body.

aiobotocore's session calls aiohttp's `ClientSession.request`, which follows
redirects unless told otherwise; `_get_session` is the one place it hands out
that session, so the session it returns here asks for every request not to
be redirected.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from aiobotocore.awsrequest import AioAWSResponse
from aiobotocore.httpsession import AIOHTTPSession

from secretd.backends.aws_errors import AnswerRefused

BATCH_SIZE = 20
ESCAPED_BYTES = 6  # "\u0000": the most a JSON string spends on one byte
FRAMING = 64 * 1024
OTHER_CAP = 8 * 1024 * 1024
CHUNK = 64 * 1024


def body_caps(max_secret_bytes: int) -> dict[str, int]:
    """The body cap of each operation (others: OTHER_CAP)."""
    one = ESCAPED_BYTES * max_secret_bytes + FRAMING
    return {"GetSecretValue": one, "BatchGetSecretValue": BATCH_SIZE * one}


def capped_session_class(max_secret_bytes: int) -> type[AIOHTTPSession]:
    """An AIOHTTPSession subclass whose answers are read within `body_caps`."""
    caps = body_caps(max_secret_bytes)

    class CappedSession(AIOHTTPSession):  # type: ignore[misc]
        async def _get_session(self, proxy_url: Any) -> _NoRedirects:
            return _NoRedirects(await super()._get_session(proxy_url))

        async def send(self, request: Any) -> Any:
            if request.stream_output:  # no Secrets Manager operation streams
                return await super().send(request)
            request.stream_output = True  # the stock send would read the body whole
            try:
                response = await super().send(request)
            finally:
                request.stream_output = False
            op = _operation(request)
            if 300 <= response.status_code < 400 or response.raw.history:
                response.raw.close()
                raise AnswerRefused(f"AWS's {op} answer was a redirect; not followed")
            limit = caps.get(op, OTHER_CAP)
            body = await read_capped(response.raw, op, limit, max_secret_bytes)
            if 200 <= response.status_code < 300:
                _check_json(body, op)
            return AioAWSResponse(
                response.url, response.status_code, response.headers, _Buffered(body)
            )

    return CappedSession


async def read_capped(raw: aiohttp.ClientResponse, op: str, limit: int, max_bytes: int) -> bytes:
    """The whole body of `raw`, or AnswerRefused once it passes `limit` bytes."""
    declared = raw.content_length
    body = bytearray()
    try:
        if declared is not None and declared > limit:
            raise _too_large(op, limit, max_bytes)
        async for chunk in raw.content.iter_chunked(CHUNK):
            body += chunk
            if len(body) > limit:
                raise _too_large(op, limit, max_bytes)
    except AnswerRefused:
        raw.close()  # abandon the rest of the body with the connection
        raise
    except aiohttp.ClientPayloadError:
        raw.close()
        raise AnswerRefused(f"AWS's {op} answer was cut short (truncated)") from None
    except BaseException:
        raw.close()  # cancelled (the call's timeout) mid-body: never leave it half-read
        raise
    raw.release()
    return bytes(body)


class _NoRedirects:
    """The aiohttp session aiobotocore sends through, with redirects never followed."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def request(self, *args: Any, **kwargs: Any) -> aiohttp.ClientResponse:
        kwargs["allow_redirects"] = False
        return await self._session.request(*args, **kwargs)


class _Buffered:
    """What AioAWSResponse reads its content from: the body we already hold."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def read(self) -> bytes:
        return self._body


def _operation(request: Any) -> str:
    target = request.headers.get("X-Amz-Target", "")
    if isinstance(target, bytes):
        target = target.decode("ascii", "replace")
    return str(target).rpartition(".")[2] or "request"


def _too_large(op: str, limit: int, max_bytes: int) -> AnswerRefused:
    return AnswerRefused(
        f"AWS's {op} answer is over {limit} bytes, more than any value within "
        f"limits.max_secret_bytes ({max_bytes}) can take; not read"
    )


def _check_json(body: bytes, op: str) -> None:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        raise AnswerRefused(
            f"AWS's {op} answer is not valid JSON (truncated or malformed)"
        ) from None
