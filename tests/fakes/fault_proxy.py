"""A small asyncio HTTP/1.1 proxy on 127.0.0.1 that injects faults in front of a
real server (bao, moto_server, anything speaking HTTP/1.1 over TCP).

Each client connection carries one request: the proxy reads it, consults its
rules, and either forwards it upstream (on a fresh upstream connection, body
re-framed with Content-Length) or misbehaves. Every response says
`Connection: close`, so an HTTP client opens a new connection per request and
each request meets the rules afresh.

    proxy = FaultProxy("127.0.0.1", bao_port)
    await proxy.start()                     # proxy.url -> "http://127.0.0.1:NNNN"
    proxy.add(Fault.latency(2.0, match="/data/"))
    proxy.add(Fault.canned(429, b"{}", headers={"Retry-After": "1"}, times=1))
    proxy.add(Fault.transform(lambda body: body.replace(b'"version":3', b'"version":2')))
    ...
    await proxy.stop()

Rules are tried in the order added; the first whose `match` is a substring of
the request target (and has `times` left) applies. `proxy.seen` records every
request (monotonic time, method, target, action).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.fakes.loopback_app import LoopbackServer

MAX_HEAD = 64 * 1024


@dataclass
class Fault:
    """One rule. `action` is forward, latency, truncate, reset, blackhole, canned
    or transform."""

    action: str
    match: str = ""
    times: int | None = None  # None: forever
    delay: float = 0.0
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    rewrite: Callable[[bytes], bytes] | None = None

    @classmethod
    def latency(cls, seconds: float, *, match: str = "", times: int | None = None) -> Fault:
        """Forward after `seconds`."""
        return cls("latency", match, times, delay=seconds)

    @classmethod
    def truncate(cls, *, match: str = "", times: int | None = None) -> Fault:
        """Forward, but send only half the body (the header announces all of it)."""
        return cls("truncate", match, times)

    @classmethod
    def reset(cls, *, match: str = "", times: int | None = None) -> Fault:
        """Close the connection with a TCP RST instead of answering."""
        return cls("reset", match, times)

    @classmethod
    def blackhole(cls, *, match: str = "", times: int | None = None) -> Fault:
        """Read the request and never answer."""
        return cls("blackhole", match, times)

    @classmethod
    def canned(
        cls,
        status: int,
        body: bytes,
        *,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
        match: str = "",
        times: int | None = None,
    ) -> Fault:
        """Answer with this status and body instead of asking upstream."""
        all_headers = {"Content-Type": content_type, **(headers or {})}
        return cls("canned", match, times, status=status, body=body, headers=all_headers)

    @classmethod
    def transform(
        cls, rewrite: Callable[[bytes], bytes], *, match: str = "", times: int | None = None
    ) -> Fault:
        """Forward and rewrite the upstream body before relaying it."""
        return cls("transform", match, times, rewrite=rewrite)


def hostile_bodies(size: int = 8 * 1024 * 1024) -> dict[str, bytes]:
    """Canned bodies every strict client must refuse (200 answers)."""
    return {
        "malformed": b'{"data": {"data": {"password": "x"}, "metadata": ',
        "html": b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        "nan": b'{"data": {"current_version": NaN, "versions": {}}}',
        "huge_number": b'{"data": {"current_version": 1' + b"0" * 400 + b', "versions": {}}}',
        "deep": b'{"data": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
        "duplicate_keys": b'{"data": {"current_version": 1, "current_version": 2}}',
        "not_object": b'["data"]',
        "huge": b'{"data": {"x": "' + b"A" * size + b'"}}',
    }


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic()
    method: str
    target: str
    action: str


class FaultProxy(LoopbackServer):
    """See the module docstring."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._rules: list[Fault] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.seen: list[Seen] = []

    def add(self, rule: Fault) -> Fault:
        self._rules.append(rule)
        return rule

    def clear(self) -> None:
        self._rules.clear()

    def count(self, fragment: str = "", action: str | None = None) -> int:
        """How many requests whose target contains `fragment` (and met `action`)."""
        return sum(
            1 for s in self.seen if fragment in s.target and (action is None or s.action == action)
        )

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    def _pick(self, target: str) -> Fault | None:
        for rule in self._rules:
            if rule.match in target and (rule.times is None or rule.times > 0):
                if rule.times is not None:
                    rule.times -= 1
                return rule
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader)
            if request is None:
                return
            method, target, raw = request
            rule = self._pick(target)
            action = rule.action if rule else "forward"
            self.seen.append(Seen(time.monotonic(), method, target, action))
            await self._apply(rule, raw, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _apply(self, rule: Fault | None, raw: bytes, writer: asyncio.StreamWriter) -> None:
        if rule is None:
            writer.write(await self._forward(raw))
        elif rule.action == "latency":
            await asyncio.sleep(rule.delay)
            writer.write(await self._forward(raw))
        elif rule.action == "truncate":
            answer = await self._forward(raw)
            head, _, body = answer.partition(b"\r\n\r\n")
            writer.write(head + b"\r\n\r\n" + body[: len(body) // 2])
        elif rule.action == "reset":
            _abort_with_rst(writer)
            return
        elif rule.action == "blackhole":
            await asyncio.Event().wait()  # until the proxy stops or the client goes
        elif rule.action == "canned":
            writer.write(_response(rule.status, rule.headers, rule.body))
        elif rule.action == "transform":
            assert rule.rewrite is not None
            status, headers, body = _parse_response(await self._upstream_exchange(raw))
            writer.write(_response(status, headers, rule.rewrite(body)))
        await writer.drain()

    async def _forward(self, raw: bytes) -> bytes:
        status, headers, body = _parse_response(await self._upstream_exchange(raw))
        return _response(status, headers, body)

    async def _upstream_exchange(self, raw: bytes) -> bytes:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        try:
            up_writer.write(raw)
            await up_writer.drain()
            return await up_reader.read(-1)  # until EOF: we asked upstream to close
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    """One request, re-framed with `Connection: close` for the upstream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if len(head) > MAX_HEAD:
        raise ValueError("request head too large")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    kept: list[str] = []
    length = 0
    for line in lines[1:]:
        if not line:
            continue
        key, _, value = line.partition(":")
        lowered = key.strip().lower()
        if lowered == "content-length":
            length = int(value.strip())
        if lowered in ("connection", "keep-alive", "transfer-encoding"):
            continue
        kept.append(line)
    body = await reader.readexactly(length) if length else b""
    kept.append("Connection: close")
    rebuilt = "\r\n".join([f"{method} {target} HTTP/1.1", *kept]) + "\r\n\r\n"
    return method, target, rebuilt.encode("latin-1") + body


def _parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    chunked = False
    for line in lines[1:]:
        key, _, value = line.partition(":")
        lowered = key.strip().lower()
        if lowered == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
        if lowered in ("content-length", "transfer-encoding", "connection"):
            continue
        headers[key.strip()] = value.strip()
    return status, headers, _dechunk(body) if chunked else body


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


def _response(status: int, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} Fault Proxy"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
