"""The real API app in process, over real sockets, built from the fakes.

`serve_parts` is what every in-process API harness shares: from the parts
`ApiDeps.fixed` takes (`Parts`: the fakes of tests/fakes/api_deps, or a real
cache), it serves the app on a Unix socket in a fresh temporary directory and,
given a token, on the guarded loopback TCP socket too; peers are identified by
SO_PEERCRED. `serve_api` is the harness of the /v1 API tests on top of it.

    async with serve_parts(Parts(cache, hub, policy, audit, metrics), tcp_token=TOKEN) as at:
        status, head, body = await at.raw(b"GET /v1/health HTTP/1.1\\r\\n...", tcp=True)
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from secretd.api.app import build_app
from secretd.api.listener import ConnectionTracker, UnixListener, start_serving
from secretd.api.ports import ApiDeps, CacheView, Limiter, PolicyView, ServingState
from secretd.api.tcp import bind_tcp, install_tcp_guard
from secretd.api.vault_compat import VaultSettings
from secretd.audit import AuditSink
from secretd.events import Hub
from secretd.model import Caller, SecretName
from tests.fakes.api_deps import CountingLimiter, CountingMetrics, ListAudit, MemoryCache, UidPolicy


def peer_uid_caller(sock: socket.socket) -> Caller:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return Caller(uid=uid, gid=gid, pid=pid)


@dataclass
class Parts:
    """What `ApiDeps.fixed` is built from (the rest: its defaults)."""

    cache: CacheView
    hub: Hub
    policy: PolicyView
    audit: AuditSink
    metrics: CountingMetrics
    limiter: Limiter = field(default_factory=CountingLimiter)
    state: ServingState = field(default_factory=lambda: ServingState(ready=True))
    arn_names: Callable[[str], SecretName | None] | None = None

    def given(self) -> dict[str, Any]:
        """These parts as keyword arguments (None: leave ApiDeps.fixed's default)."""
        named = {part.name: getattr(self, part.name) for part in fields(self)}
        return {name: value for name, value in named.items() if value is not None}


@dataclass
class Listening:
    """Where a served app listens: its Unix socket and the guarded TCP port (0: none)."""

    unix: Path
    port: int
    tracker: ConnectionTracker

    async def raw(
        self, request: bytes, *, tcp: bool = False, timeout: float = 10.0
    ) -> tuple[int, bytes, bytes]:
        """Send `request`; (status, head, body) of the answer (read until close)."""
        async with asyncio.timeout(timeout):
            if tcp:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            else:
                reader, writer = await asyncio.open_unix_connection(str(self.unix))
            writer.write(request)
            data = await reader.read(-1)
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), head, body


@asynccontextmanager
async def serve_parts(
    parts: Parts,
    *,
    vault: VaultSettings | None = None,
    tcp_token: bytes | None = None,
    max_connections: int = 64,
    idle_timeout: float = 5.0,
    head_timeout: float | None = None,
    socket_mode: int = 0o660,
) -> AsyncIterator[Listening]:
    """The real app over `parts` on a Unix socket (and, with `tcp_token`, on TCP)."""
    tmp = Path(tempfile.mkdtemp(prefix="sdapi", dir="/tmp"))
    tracker = ConnectionTracker(
        identify=peer_uid_caller, observer=parts.metrics, max_connections=max_connections
    )
    deps = ApiDeps.fixed(identify=lambda request: tracker.caller(request.protocol), **parts.given())
    app = build_app(deps, vault=vault)
    tcp = [] if tcp_token is None else [bind_tcp("127.0.0.1:0")]
    port = tcp[0].getsockname()[1] if tcp else 0
    if tcp_token is not None:
        install_tcp_guard(app, f"127.0.0.1:{port}", tcp_token)
    listener = UnixListener.create(tmp / "s.sock", mode=socket_mode, group=None)
    runner = await start_serving(
        app,
        [listener.sock, *tcp],
        tracker=tracker,
        idle_timeout=idle_timeout,
        head_timeout=head_timeout,
    )
    try:
        yield Listening(tmp / "s.sock", port, tracker)
    finally:
        await runner.cleanup()
        listener.close()
        for sock in tcp:
            sock.close()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class FakeServed(Listening):
    """The app served over the in-memory fakes (`serve_fakes`)."""

    cache: MemoryCache
    audit: ListAudit
    metrics: CountingMetrics
    limiter: CountingLimiter
    state: ServingState

    async def call(
        self,
        method: str,
        target: str,
        *,
        tcp: bool = False,
        headers: bytes = b"",
        body: bytes = b"",
    ) -> tuple[int, bytes, bytes]:
        """One request (Host: the TCP listener's address; `Connection: close`)."""
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n".encode()
        if body:
            head += f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n".encode()
        return await self.raw(head + headers + b"Connection: close\r\n\r\n" + body, tcp=tcp)

    async def get(
        self, target: str, *, tcp: bool = False, headers: bytes = b""
    ) -> tuple[int, bytes, bytes]:
        return await self.call("GET", target, tcp=tcp, headers=headers)


S = TypeVar("S", bound=FakeServed)


@asynccontextmanager
async def serve_fakes(
    policy: PolicyView, served_as: type[S], *, audit: ListAudit | None = None, **serving: Any
) -> AsyncIterator[S]:
    """The app over a fresh MemoryCache and counting fakes; `serving`: serve_parts's options."""
    hub = Hub()
    cache = MemoryCache(hub)
    audit = ListAudit() if audit is None else audit
    metrics, limiter, state = CountingMetrics(), CountingLimiter(), ServingState(ready=True)
    parts = Parts(cache, hub, policy, audit, metrics, limiter, state)
    async with serve_parts(parts, **serving) as at:
        yield served_as(at.unix, at.port, at.tracker, cache, audit, metrics, limiter, state)


@dataclass
class Served:
    """The /v1 API tests' view (`serve_api`)."""

    path: Path
    cache: MemoryCache
    policy: UidPolicy
    audit: ListAudit
    metrics: CountingMetrics
    limiter: CountingLimiter
    tracker: ConnectionTracker
    state: ServingState
    hub: Hub

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self.path)),
            base_url="http://localhost",
        )

    async def raw(self, data: bytes, *, timeout: float = 5.0) -> bytes:
        """Send raw bytes, read until the server closes or `timeout` passes."""
        reader, writer = await asyncio.open_unix_connection(str(self.path))
        try:
            writer.write(data)
            await writer.drain()
            chunks: list[bytes] = []
            try:
                async with asyncio.timeout(timeout):
                    while chunk := await reader.read(65536):
                        chunks.append(chunk)
            except TimeoutError:
                pass  # a keep-alive connection: what arrived is the answer
            return b"".join(chunks)
        except (ConnectionResetError, BrokenPipeError):
            return b""
        finally:
            writer.close()


@asynccontextmanager
async def serve_api(
    *,
    max_connections: int = 64,
    idle_timeout: float = 5.0,
    head_timeout: float | None = None,
    uids: set[int] | None = None,
) -> AsyncIterator[Served]:
    policy = UidPolicy(uids if uids is not None else {0}, ("app/", "blob", "json"))
    async with serve_fakes(
        policy,
        FakeServed,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        head_timeout=head_timeout,
    ) as at:
        yield Served(
            at.unix,
            at.cache,
            policy,
            at.audit,
            at.metrics,
            at.limiter,
            at.tracker,
            at.state,
            at.cache.hub,
        )
