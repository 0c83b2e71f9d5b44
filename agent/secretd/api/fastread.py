"""The fast route: a plain `GET /v1/secrets/{name}` of a version the cache holds.

Most requests an agent serves are this one: no query, a current version
already cached, over the Unix socket. `FastReads` sits in front of the
application (aiohttp's request handler for every connection) and answers such
a request itself, without the router and the middleware, through the same
`ReadService` as every other read: the access rules, a deny audited and
counted, the cache, one audit line and one metric per request. Errors are
answered here in the same JSON shape the middleware would give.

Everything else goes to the application unchanged: any query (`?format=`,
`?field=`, a long-poll...), a name that is not valid as sent (percent-encoded,
dot segments: the router decodes and normalises those), a request with a body
or an `Expect` header (the middleware refuses or answers those), a request
that must not keep the connection open, a connection that is not a Unix
socket's (the TCP listener's guard is a middleware), and a version the cache
does not hold (a miss: the limiter and the single-flight load apply).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

from secretd.api.errors import early_error_response, from_secretd_error
from secretd.api.ports import ApiDeps
from secretd.api.reads import ReadService
from secretd.api.secrets import PLAIN_HEADERS, plain_body
from secretd.errors import SecretdError
from secretd.model import CachedSecret, SecretName, name_problem

__all__ = ["FAST_READS_KEY", "FastReads", "RequestHandler", "front"]

RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
PREFIX = "/v1/secrets/"
# Valid names seen in request paths, remembered so each is validated once.
MAX_NAMES = 4096


def front(fast: FastReads | None, application: RequestHandler) -> RequestHandler:
    """aiohttp's request handler for every connection: the fast route when it
    answers, else the application; an HTTP error the application raises before
    its middleware runs is answered in our JSON shape (api.errors)."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if fast is not None:
            answer = fast.answer(request)
            if answer is not None:
                return answer
        try:
            return await application(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise  # not an error (none are used, but keep aiohttp's meaning)
            return early_error_response(exc)

    return handle


class FastReads:
    """Answers fast-route requests (`answer`); `front` puts it before the application."""

    def __init__(self, deps: ApiDeps, reads: ReadService) -> None:
        self._deps = deps
        self._reads = reads
        self._names: dict[str, SecretName] = {}
        self._date = HttpDate()

    def _shape(self, secret: CachedSecret) -> PrebuiltAnswer:
        return prebuilt_answer(secret, self._date.line())

    def answer(self, request: web.BaseRequest) -> web.StreamResponse | None:
        """The answer to a fast-route request, or None when the application must answer."""
        if request.method != "GET" or not getattr(request.protocol, "fast_reads", False):
            return None
        name = self._name(request.raw_path)
        if name is None or request.version != HttpVersion11 or not request.keep_alive:
            return None  # not a fast-route path; or a connection that ends with this answer
        if request.body_exists:
            return None
        headers = request.headers
        if "Transfer-Encoding" in headers or "Expect" in headers:
            return None
        caller = self._deps.identify(request)  # type: ignore[arg-type]
        if caller is None:
            return None  # the application refuses it (403) as it always has
        try:
            return self._reads.read_held(caller, name, self._shape)
        except SecretdError as exc:
            return from_secretd_error(exc)

    def _name(self, path: str) -> SecretName | None:
        name = self._names.get(path)
        if name is not None:
            return name
        if not path.startswith(PREFIX):
            return None
        raw = path[len(PREFIX) :]
        if name_problem(raw) is not None:
            return None
        if len(self._names) >= MAX_NAMES:
            self._names.clear()
        name = self._names[path] = SecretName(raw)
        return name


# Where build_app leaves the app's FastReads for start_serving (api.listener).
FAST_READS_KEY = web.AppKey("secretd_fast_reads", FastReads)


class PrebuiltAnswer(web.StreamResponse):
    """A `200` whose status line, headers and body were serialised ahead (but
    for its `Date`): `prepare` writes it in one piece, `write_eof` has nothing
    left to do. The same bytes aiohttp would write for `PLAIN_HEADERS` and the
    body; only ever for an HTTP/1.1 request that keeps its connection open."""

    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self._answer = answer

    @property
    def keep_alive(self) -> bool:
        return True

    async def prepare(self, request: web.BaseRequest) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")  # as aiohttp's writer does
        transport.write(self._answer)

    async def write_eof(self, data: bytes = b"") -> None:
        del data


_HEAD = "HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in PLAIN_HEADERS.items())
_SERVER = f"Server: {SERVER_SOFTWARE}\r\n\r\n".encode("ascii")
_FAST_HEAD = "fast/head"  # the CachedSecret.answers key of the prebuilt head


def prebuilt_answer(secret: CachedSecret, date: bytes) -> PrebuiltAnswer:
    """The fast route's answer: `plain_body` and its head, each built once per
    cached view (the body is not kept twice: the pieces are joined per answer)."""
    body = plain_body(secret)
    head = secret.answers.get(_FAST_HEAD)
    if head is None:
        head = (_HEAD + f"Content-Length: {len(body)}\r\n").encode("ascii")
        secret.answers[_FAST_HEAD] = head
    return PrebuiltAnswer(head + date + _SERVER + body)


class HttpDate:
    """`Date: <RFC 9110 date>\r\n`, formatted once per second (as aiohttp does)."""

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("ascii")
        return self._line
