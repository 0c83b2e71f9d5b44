"""The TCP guard on a real aiohttp server on 127.0.0.1, driven with raw bytes
(HTTP clients normalise or refuse exactly the hostile input we want to send)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import structlog.testing
from aiohttp import web

from secretd.api.errors import error_middleware
from secretd.api.secrets import CALLER_KEY
from secretd.api.tcp import allowed_hosts, bind_tcp, load_token, tcp_guard
from secretd.config.load import parse_config
from secretd.errors import ConfigError

TOKEN = b"t0ken-0123456789abcdef"


async def _whoami(request: web.Request) -> web.Response:
    caller = request.get(CALLER_KEY)
    return web.json_response({"tcp": caller.tcp if caller else None})


async def _ping(request: web.Request) -> web.Response:
    return web.Response(text="healthy")


async def _cors(request: web.Request) -> web.Response:
    # A handler that (wrongly) sets CORS headers: the guard must strip them.
    return web.Response(
        text="x",
        headers={"Access-Control-Allow-Origin": "*", "access-control-allow-headers": "*"},
    )


@dataclass
class Served:
    port: int
    unix_path: str

    @property
    def listen(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    tcp_sock = bind_tcp("127.0.0.1:0")
    port = tcp_sock.getsockname()[1]
    app = web.Application(middlewares=[error_middleware, tcp_guard(f"127.0.0.1:{port}", TOKEN)])
    app.router.add_get("/v1/secrets/{name:.+}", _whoami)
    app.router.add_get("/ping", _ping)
    app.router.add_get("/secretsmanager/get", _whoami)
    app.router.add_get("/cors", _cors)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tmp = tempfile.mkdtemp(prefix="sdtcp", dir="/tmp")
    unix_path = os.path.join(tmp, "s.sock")
    try:
        await web.SockSite(runner, tcp_sock).start()
        await web.UnixSite(runner, unix_path).start()
        yield Served(port, unix_path)
    finally:
        await runner.cleanup()
        tcp_sock.close()
        if os.path.exists(unix_path):
            os.unlink(unix_path)
        os.rmdir(tmp)


@dataclass
class Answer:
    status: int
    head: bytes
    body: bytes

    def json(self) -> dict[str, object]:
        data = orjson.loads(self.body)
        assert isinstance(data, dict)
        return data

    def code(self) -> object:
        error = self.json()["error"]
        assert isinstance(error, dict)
        return error["code"]


async def raw(
    served: Served, request: bytes, *, unix: bool = False, timeout: float = 10.0
) -> Answer:
    """Send `request` verbatim; read until the server closes."""
    async with asyncio.timeout(timeout):
        if unix:
            reader, writer = await asyncio.open_unix_connection(served.unix_path)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(request)
        await writer.drain()
        data = await reader.read(-1)
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return Answer(status, head, body)


def get(
    served: Served,
    path: str = "/v1/secrets/db/app",
    *,
    headers: list[tuple[str, bytes]] | None = None,
    host: bytes | None = None,
    token: bytes | None = TOKEN,
    method: str = "GET",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode()]
    lines.append(b"Host: " + (host if host is not None else served.listen.encode()))
    if token is not None:
        lines.append(b"X-Secretd-Token: " + token)
    for name, value in headers or []:
        lines.append(name.encode() + b": " + value)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def test_right_token_is_served_as_a_tcp_caller(served: Served) -> None:
    answer = await raw(served, get(served))
    assert answer.status == 200
    assert answer.json() == {"tcp": True}


async def test_aws_token_header_is_accepted(served: Served) -> None:
    request = get(served, token=None, headers=[("X-Aws-Parameters-Secrets-Token", TOKEN)])
    assert (await raw(served, request)).status == 200


async def test_token_header_name_is_case_insensitive(served: Served) -> None:
    request = get(served, token=None, headers=[("x-SECRETD-token", TOKEN)])
    assert (await raw(served, request)).status == 200


async def test_missing_token_is_401_missing_token(served: Served) -> None:
    answer = await raw(served, get(served, token=None))
    assert (answer.status, answer.code()) == (401, "missing_token")


@pytest.mark.parametrize(
    "bad",
    [b"wrong", TOKEN[:-1], TOKEN + b"x", TOKEN.upper(), b"x" * len(TOKEN)],
    ids=["short", "prefix", "longer", "case", "same-length"],
)
async def test_wrong_token_is_401_bad_token(served: Served, bad: bytes) -> None:
    answer = await raw(served, get(served, token=bad))
    assert (answer.status, answer.code()) == (401, "bad_token")
    assert TOKEN not in answer.body and bad not in answer.body


async def test_duplicated_token_header_is_bad_even_when_right(served: Served) -> None:
    answer = await raw(served, get(served, headers=[("X-Secretd-Token", TOKEN)]))
    assert (answer.status, answer.code()) == (401, "bad_token")


async def test_both_token_headers_are_bad(served: Served) -> None:
    request = get(served, headers=[("X-Aws-Parameters-Secrets-Token", TOKEN)])
    answer = await raw(served, request)
    assert (answer.status, answer.code()) == (401, "bad_token")


@pytest.mark.parametrize("bad", [TOKEN + "é".encode(), "é".encode() + TOKEN, b"\xff" * 20])
async def test_non_ascii_token_is_401_bad_token(served: Served, bad: bytes) -> None:
    answer = await raw(served, get(served, token=bad))
    assert (answer.status, answer.code()) == (401, "bad_token")


async def test_control_character_in_token_is_never_served(served: Served) -> None:
    # aiohttp's parsers refuse DEL in a header value themselves (400) before the
    # guard sees it; the guard would say bad_token. Either way: not served.
    answer = await raw(served, get(served, token=TOKEN + b"\x7f"))
    assert answer.status in (400, 401)


async def test_token_in_query_string_is_never_accepted(served: Served) -> None:
    for query in ("X-Secretd-Token", "token", "x-aws-parameters-secrets-token"):
        path = f"/v1/secrets/db/app?{query}={TOKEN.decode()}"
        answer = await raw(served, get(served, path, token=None))
        assert (answer.status, answer.code()) == (401, "missing_token")


@pytest.mark.parametrize(
    "header",
    ["X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Host", "x-forwarded-for"],
)
async def test_forwarding_headers_are_400(served: Served, header: str) -> None:
    answer = await raw(served, get(served, headers=[(header, b"10.0.0.1")]))
    assert (answer.status, answer.code()) == (400, "invalid_request")


async def test_origin_is_refused(served: Served) -> None:
    answer = await raw(served, get(served, headers=[("Origin", b"http://127.0.0.1")]))
    assert (answer.status, answer.code()) == (403, "forbidden")


async def test_cross_site_fetch_is_refused_same_origin_is_not(served: Served) -> None:
    answer = await raw(served, get(served, headers=[("Sec-Fetch-Site", b"cross-site")]))
    assert (answer.status, answer.code()) == (403, "forbidden")
    answer = await raw(served, get(served, headers=[("Sec-Fetch-Site", b"same-origin")]))
    assert answer.status == 200


@pytest.mark.parametrize(
    "host",
    [
        b"evil.example",
        b"evil.example:{port}",
        b"localhost:1",
        b"127.0.0.1:1",
        b"localhost.",
        b"127.0.0.2:{port}",
        b"[::2]:{port}",
        b"localhost:{port}.evil.example",
        b"",
    ],
)
async def test_rebinding_hosts_are_refused(served: Served, host: bytes) -> None:
    value = host.replace(b"{port}", str(served.port).encode())
    answer = await raw(served, get(served, host=value))
    assert answer.status in (400, 403)


@pytest.mark.parametrize(
    "host", [b"localhost", b"LOCALHOST:{port}", b"127.0.0.1", b"127.0.0.1:{port}", b"[::1]:{port}"]
)
async def test_local_hosts_are_allowed(served: Served, host: bytes) -> None:
    value = host.replace(b"{port}", str(served.port).encode())
    assert (await raw(served, get(served, host=value))).status == 200


async def test_missing_or_repeated_host_is_refused(served: Served) -> None:
    request = b"GET /v1/secrets/a HTTP/1.0\r\nX-Secretd-Token: " + TOKEN + b"\r\n\r\n"
    assert (await raw(served, request)).status == 400
    double = get(served, headers=[("Host", b"evil.example")])
    assert (await raw(served, double)).status == 400


async def test_preflight_is_refused_without_cors_headers(served: Served) -> None:
    request = get(
        served,
        method="OPTIONS",
        token=None,
        headers=[
            ("Origin", b"http://evil.example"),
            ("Access-Control-Request-Method", b"GET"),
            ("Access-Control-Request-Headers", b"x-secretd-token"),
        ],
    )
    answer = await raw(served, request)
    assert answer.status == 405
    assert b"access-control-" not in answer.head.lower()


async def test_cors_headers_never_leave(served: Served) -> None:
    answer = await raw(served, get(served, "/cors"))
    assert answer.status == 200
    assert b"access-control-" not in answer.head.lower()


async def test_ping_needs_no_token_but_keeps_the_other_guards(served: Served) -> None:
    answer = await raw(served, get(served, "/ping", token=None))
    assert (answer.status, answer.body) == (200, b"healthy")
    answer = await raw(served, get(served, "/ping", host=b"evil.example", token=None))
    assert answer.status == 403


async def test_unix_socket_requests_are_not_guarded(served: Served) -> None:
    request = b"GET /v1/secrets/db/app HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = await raw(served, request, unix=True)
    assert answer.status == 200
    assert answer.json() == {"tcp": None}


def test_allowed_hosts_follow_the_listen_address() -> None:
    assert "[::1]:2773" in allowed_hosts("[::1]:2773")
    assert "127.0.0.5:80" in allowed_hosts("127.0.0.5:80")
    assert "127.0.0.5:81" not in allowed_hosts("127.0.0.5:80")


# --- the token file ---------------------------------------------------------


def _token_file(tmp_path: Path, data: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_load_token_reads_a_private_file(tmp_path: Path) -> None:
    assert load_token(_token_file(tmp_path, TOKEN + b"\n")) == TOKEN
    assert load_token(_token_file(tmp_path, TOKEN + b"\r\n")) == TOKEN


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_load_token_refuses_a_file_others_can_read_or_write(tmp_path: Path, mode: int) -> None:
    with pytest.raises(ConfigError, match=r"tcp\.token_file"):
        load_token(_token_file(tmp_path, TOKEN, mode))


@pytest.mark.parametrize(
    "data", [b"", b"short", TOKEN + b" x", TOKEN + b"\n\n", "é".encode() * 10, b"a" * 1025]
)
def test_load_token_refuses_bad_contents(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(ConfigError, match=r"tcp\.token_file") as caught:
        load_token(_token_file(tmp_path, data))
    assert data.decode(errors="replace") not in str(caught.value) or not data


def test_load_token_refuses_untrusted_symlinks_and_missing_files(tmp_path: Path) -> None:
    real = _token_file(tmp_path, TOKEN)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    link = shared / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="symlink"):
        load_token(link)
    with pytest.raises(ConfigError, match="no such file"):
        load_token(tmp_path / "absent")


# --- listen addresses -------------------------------------------------------

_CONFIG = """
[tcp]
listen = "{listen}"
token_file = "/run/secretd/token"
[backends.local]
type = "file"
path = "/var/lib/secretd/store"
"""


@pytest.mark.parametrize(
    "listen",
    [
        "0.0.0.0:2773",
        "[::]:2773",
        "192.168.1.10:2773",
        "10.0.0.1:2773",
        "example.com:2773",
        "127.0.0.1",
        "127.0.0.1:0x10",
        "127.0.0.1:70000",
        ":2773",
        "[::ffff:10.0.0.1]:2773",
    ],
)
def test_config_refuses_non_loopback_listen(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"tcp\.listen"):
        parse_config(_CONFIG.format(listen=listen))


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:2773", "127.1.2.3:2773", "[::1]:2773", "localhost:2773"]
)
def test_config_accepts_loopback_listen(listen: str) -> None:
    config = parse_config(_CONFIG.format(listen=listen))
    assert config.tcp is not None and config.tcp.listen == listen


def test_bind_tcp_listens_on_loopback_only() -> None:
    sock = bind_tcp("localhost:0")
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    finally:
        sock.close()
    with pytest.raises(ConfigError, match="loopback"):
        bind_tcp("10.0.0.1:2773")


def test_the_guard_holds_with_the_pure_python_http_parser() -> None:
    """aiohttp has a C and a pure-Python HTTP parser (docs/security.md): run this
    file again on the other one, in a child process."""
    if os.environ.get("AIOHTTP_NO_EXTENSIONS"):
        pytest.skip("this run already uses the pure-Python parser")
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "not pure_python",
            str(Path(__file__).resolve()),
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout


AWS_GET = "/secretsmanager/get?secretId=db/app"


@pytest.mark.parametrize(
    ("token", "headers"),
    [
        (None, []),
        (b"wrong-token-0123456789", []),
        (None, [("X-Aws-Parameters-Secrets-Token", b"wrong-token-0123456789")]),
    ],
    ids=["missing", "wrong", "wrong-aws-header"],
)
async def test_aws_routes_refuse_a_token_as_the_aws_agent_does(
    served: Served, token: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    """403 `Bad Token` in plain text, naming no secretd header (its clients expect that)."""
    answer = await raw(served, get(served, AWS_GET, token=token, headers=headers))
    assert (answer.status, answer.body) == (403, b"Bad Token")
    assert b"text/plain" in answer.head.lower()
    assert b"secretd" not in answer.body.lower()


async def test_aws_routes_refuse_forwarded_requests_as_the_aws_agent_does(served: Served) -> None:
    request = get(served, AWS_GET, headers=[("X-Forwarded-For", b"10.0.0.1")])
    answer = await raw(served, request)
    assert (answer.status, answer.body) == (400, b"Forwarded")


async def test_aws_routes_with_the_token_are_served(served: Served) -> None:
    request = get(served, AWS_GET, token=None, headers=[("X-Aws-Parameters-Secrets-Token", TOKEN)])
    assert (await raw(served, request)).json() == {"tcp": True}


async def test_a_refusal_logs_the_route_family_not_the_path(served: Served) -> None:
    """A client that put its token in the path by mistake (a refused request:
    the token header is missing) must not find it in the agent's log."""
    with structlog.testing.capture_logs() as logs:
        path = "/v1/secrets/app/" + TOKEN.decode()
        answer = await raw(served, get(served, path, token=None))
    assert answer.status == 401
    refused = [entry for entry in logs if entry["event"] == "tcp.refused"]
    assert [entry["route"] for entry in refused] == ["/v1/secrets"]
    assert TOKEN.decode() not in repr(logs)
