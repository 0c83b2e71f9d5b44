"""The loopback TCP listener's guards (docs/api.md, docs/aws.md; SSRF, DNS rebinding).

The threats: docs/security.md.

`tcp_guard(listen, token)` is an aiohttp middleware. It acts only on requests
that arrived over TCP (a Unix-socket request passes untouched, so one app may
serve both) and, in this order:

1. refuses `OPTIONS` (no CORS preflight ever succeeds)        405 method_not_allowed
2. refuses `Forwarded`, `X-Forwarded-*`, `X-Real-IP`           400 invalid_request
   (the AWS agent answers X-Forwarded-For with 400 too)
3. refuses `Origin` and `Sec-Fetch-Site: cross-site`           403 forbidden
4. refuses a `Host` other than the listen address, `localhost`, `127.0.0.1`
   or `[::1]` (each bare or with the listen port), or a missing/repeated one
                                                               403 forbidden / 400
5. needs exactly one token header, `X-Secretd-Token`,
   `X-Aws-Parameters-Secrets-Token` or `X-Vault-Token`, compared with hmac.compare_digest on the
   raw bytes: none -> 401 missing_token; repeated (even the same value twice,
   or both names), non-ASCII, empty or wrong -> 401 bad_token. The query
   string is never looked at for a token. `GET /ping` needs no token, as with
   the AWS agent; it says nothing but "healthy".
6. marks the caller as `Caller(tcp=True)` for the `[[allow]] tcp = true` rules,
   and strips any `Access-Control-*` header from the answer.

On the AWS agent's routes (`/secretsmanager/...`) a refusal is worded and
shaped as the AWS Secrets Manager Agent's own, so its clients handle it as
they always have: a missing or wrong token is `403` with the plain-text body
`Bad Token`, a forwarded request `400` `Forwarded`; other refusals are plain
text too. Elsewhere they are secretd's JSON errors (docs/api.md).

Also here: `load_token(path)` and `bind_tcp(listen)` (a listening loopback
socket with backlog >= 1024 to hand to the listener's `start_serving`).
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from secretd.api.errors import Handler, error_response, from_secretd_error, status_of
from secretd.api.secrets import CALLER_KEY
from secretd.errors import (
    AuthError,
    BadToken,
    ConfigError,
    Forbidden,
    InvalidRequest,
    SecretdError,
)
from secretd.fileperm import read_private_file
from secretd.model import Caller

log = structlog.get_logger(__name__)

TOKEN_HEADERS = (b"x-secretd-token", b"x-aws-parameters-secrets-token", b"x-vault-token")
MIN_TOKEN_BYTES = 16
MAX_TOKEN_BYTES = 1024
MIN_BACKLOG = 1024
NO_TOKEN_PATHS = frozenset({"/ping"})
AWS_PREFIX = "/secretsmanager/"  # the AWS agent's routes: refusals in its words
_FORWARDING = (b"forwarded", b"x-real-ip")
_TCP_CALLER = Caller(tcp=True)


def split_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:2773' -> ('127.0.0.1', 2773); '[::1]:2773' -> ('::1', 2773)."""
    host, _, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def allowed_hosts(listen: str) -> frozenset[str]:
    """Host header values a genuine local client sends (lowercase)."""
    host, port = split_listen(listen)
    shown = f"[{host}]" if ":" in host else host
    names = {shown.lower(), "localhost", "127.0.0.1", "[::1]"}
    return frozenset(names | {f"{name}:{port}" for name in names})


def tcp_guard(listen: str, token: bytes) -> Middleware:
    """The middleware enforcing the TCP rules above for `listen` and `token`."""
    guard = _Guard(allowed_hosts(listen), token)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _arrived_over_tcp(request):
            return await handler(request)
        try:
            guard.check(request)
        except SecretdError as exc:
            # Only the route family: a refused request's path is the client's to
            # fill, and a client may well have put its token there by mistake.
            log.info(
                "tcp.refused", route=route_family(request.path), code=exc.code, reason=exc.message
            )
            if request.path.startswith(AWS_PREFIX):
                return aws_refusal(exc)
            return from_secretd_error(exc)
        except web.HTTPMethodNotAllowed:
            return _no_preflight()
        request[CALLER_KEY] = _TCP_CALLER
        response = await handler(request)
        _strip_cors(response)
        return response

    return middleware


def aws_refusal(exc: SecretdError) -> web.Response:
    """A refusal as the AWS Secrets Manager Agent words it (plain text, its statuses)."""
    if isinstance(exc, AuthError | BadToken):
        status, text = 403, "Bad Token"
    elif isinstance(exc, InvalidRequest) and exc.message.startswith("forwarded"):
        status, text = 400, "Forwarded"
    else:
        status, text = status_of(exc), exc.message
    return web.Response(status=status, text=text, headers={"Cache-Control": "no-store"})


def install_tcp_guard(app: web.Application, listen: str, token: bytes) -> None:
    """Append the guard to an app that is not started yet."""
    app.middlewares.append(tcp_guard(listen, token))


class _Guard:
    def __init__(self, hosts: frozenset[str], token: bytes) -> None:
        self._hosts = hosts
        self._token = token

    def check(self, request: web.Request) -> None:
        if request.method == "OPTIONS":
            raise web.HTTPMethodNotAllowed("OPTIONS", ["GET"])
        headers = _raw_headers(request.raw_headers)
        for name in headers:
            if name in _FORWARDING or name.startswith(b"x-forwarded-"):
                raise InvalidRequest("forwarded requests are refused")
        if b"origin" in headers:
            raise Forbidden("requests with Origin are refused")
        if any(v.strip().lower() == b"cross-site" for v in headers.get(b"sec-fetch-site", [])):
            raise Forbidden("cross-site requests are refused")
        self._check_host(headers.get(b"host", []))
        if request.path not in NO_TOKEN_PATHS:
            self._check_token(headers)

    def _check_host(self, values: list[bytes]) -> None:
        if len(values) != 1:
            raise InvalidRequest("exactly one Host header is required")
        try:
            host = values[0].strip().decode("ascii").lower()
        except UnicodeDecodeError:
            host = ""
        if host not in self._hosts:
            raise Forbidden("Host is not this listener (DNS rebinding?)")

    def _check_token(self, headers: dict[bytes, list[bytes]]) -> None:
        given = [value for name in TOKEN_HEADERS for value in headers.get(name, [])]
        if not given:
            raise AuthError("missing token: send header X-Secretd-Token")
        if len(given) > 1:
            raise BadToken("bad token: give the token header exactly once")
        value = given[0].strip(b" \t")
        if not value or not _visible_ascii(value):
            raise BadToken("bad token")
        if not hmac.compare_digest(value, self._token):
            raise BadToken("bad token")


def _raw_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    headers: dict[bytes, list[bytes]] = {}
    for name, value in raw:
        headers.setdefault(name.lower(), []).append(value)
    return headers


def _visible_ascii(value: bytes) -> bool:
    return all(0x21 <= byte <= 0x7E for byte in value)


def _arrived_over_tcp(request: web.Request) -> bool:
    """False only for a request known to come over a Unix socket (fail closed)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is None or sock.family != socket.AF_UNIX


def _no_preflight() -> web.Response:
    response = error_response(405, "method_not_allowed", "OPTIONS is refused; use GET")
    response.headers["Allow"] = "GET"
    return response


def _strip_cors(response: web.StreamResponse) -> None:
    if response.prepared:
        return  # already on the wire (a streamed answer); handlers never set CORS anyway
    for name in [n for n in response.headers if n.lower().startswith("access-control-")]:
        del response.headers[name]


def load_token(path: Path) -> bytes:
    """The token from `tcp.token_file`: a private file (0600-ish, ours or root's)
    holding 16-1024 visible ASCII characters; one trailing newline is allowed."""
    # Owner and mode are checked on the very descriptor that is read.
    data = read_private_file(path, what="tcp.token_file", secret=True, limit=MAX_TOKEN_BYTES + 2)
    token = data.removesuffix(b"\n").removesuffix(b"\r")
    if not MIN_TOKEN_BYTES <= len(token) <= MAX_TOKEN_BYTES or not _visible_ascii(token):
        raise ConfigError(
            f"tcp.token_file {path}: must hold {MIN_TOKEN_BYTES}-{MAX_TOKEN_BYTES} visible "
            "ASCII characters (e.g. `openssl rand -hex 32`)"
        )
    return token


def bind_tcp(listen: str, *, backlog: int = MIN_BACKLOG) -> socket.socket:
    """A non-blocking listening socket on the loopback address `listen`.

    `localhost` binds 127.0.0.1: /etc/hosts could point the name elsewhere.
    """
    host, port = split_listen(listen)
    address = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    if not address.is_loopback:
        raise ConfigError(f"tcp.listen {listen!r}: not a loopback address")
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((str(address), port))
        sock.listen(max(backlog, MIN_BACKLOG))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"tcp.listen {listen!r}: cannot listen ({exc.strerror})") from None
    sock.setblocking(False)
    log.info("tcp.listening", listen=listen)
    return sock


def route_family(path: str) -> str:
    """The first two segments of `path` (`/v1/secrets`, `/secretsmanager/get`), for logs."""
    return "/" + "/".join(path.strip("/").split("/")[:2])[:64]
