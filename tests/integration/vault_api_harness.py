"""The real API app with `[vault_api]` on, over a real Unix socket and the guarded
loopback TCP socket, reading through the in-memory cache fake (tests/fakes/api_deps).

    async with serve_vault_api() as served:
        served.add("app/db", [("v1", b"one", {"previous"}, T1), ("v2", b"two", {"current"}, T2)])
        status, head, body = await served.get("/v1/secret/data/app/db")
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from secretd.api.app import build_app
from secretd.api.listener import ConnectionTracker, UnixListener, start_serving
from secretd.api.ports import ApiDeps, ServingState
from secretd.api.tcp import bind_tcp, install_tcp_guard
from secretd.api.vault_compat import VaultSettings
from secretd.events import Hub
from secretd.model import Caller, SecretName, SecretValue, Version
from tests.fakes.api_deps import CountingLimiter, CountingMetrics, MemoryCache

TOKEN = b"vault-compat-token-0123456789"

VersionSpec = tuple[str, bytes, set[str], datetime]


@dataclass
class ExtraAudit:
    """Audit lines with their extra fields (api=..., op=...)."""

    lines: list[dict[str, object]] = field(default_factory=list)

    def record(
        self,
        event: str,
        *,
        secret: str | None,
        version_id: str | None,
        caller: Caller | None,
        result: str,
        **extra: str,
    ) -> None:
        line = {"event": event, "secret": secret, "version_id": version_id, "result": result}
        self.lines.append({**line, "tcp": bool(caller and caller.tcp), **extra})


@dataclass
class PrefixPolicy:
    """uid 0 may read `app/`; TCP callers only `tcp/`."""

    def allows(self, caller: Caller, name: SecretName) -> bool:
        if caller.tcp:
            return name.startswith("tcp/")
        return caller.uid == 0 and name.startswith("app/")

    def readable_filter(self, caller: Caller) -> Callable[[SecretName], bool]:
        return lambda name: self.allows(caller, name)


@dataclass
class Served:
    unix: Path
    port: int
    cache: MemoryCache
    audit: ExtraAudit
    metrics: CountingMetrics
    limiter: CountingLimiter
    state: ServingState
    numbered: set[str]  # backends that number versions as KV v2 does

    def add(self, name: str, versions: Iterable[VersionSpec], *, cached: bool = True) -> None:
        """Put versions (id, value, stages, created) for `name` straight into the cache."""
        key = SecretName(name)
        self.cache.versions[key] = [
            Version(vid, frozenset(stages), created, SecretValue(value))
            for vid, value, stages, created in versions
        ]
        if cached:
            self.cache.cached.add(key)

    async def raw(self, request: bytes, *, tcp: bool = False) -> tuple[int, bytes, bytes]:
        """Send `request`; (status, head, body) of the answer (read until close)."""
        async with asyncio.timeout(10):
            if tcp:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            else:
                reader, writer = await asyncio.open_unix_connection(str(self.unix))
            writer.write(request)
            data = await reader.read(-1)
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), head, body

    async def call(
        self,
        method: str,
        target: str,
        *,
        tcp: bool = False,
        token: bytes | None = None,
        headers: bytes = b"",
        body: bytes = b"",
    ) -> tuple[int, bytes, bytes]:
        host = f"127.0.0.1:{self.port}".encode()
        head = f"{method} {target} HTTP/1.1\r\n".encode() + b"Host: " + host + b"\r\n"
        if token is not None:
            head += b"X-Vault-Token: " + token + b"\r\n"
        if body:
            head += f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n".encode()
        return await self.raw(head + headers + b"Connection: close\r\n\r\n" + body, tcp=tcp)

    async def get(
        self, target: str, *, tcp: bool = False, token: bytes | None = None, headers: bytes = b""
    ) -> tuple[int, bytes, bytes]:
        return await self.call("GET", target, tcp=tcp, token=token, headers=headers)


def _peer(sock: socket.socket) -> Caller:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return Caller(uid=uid, gid=gid, pid=pid)


@asynccontextmanager
async def serve_vault_api(
    *, mount: str = "secret", refresh_interval: float = 300.0
) -> AsyncIterator[Served]:
    tmp = Path(tempfile.mkdtemp(prefix="sdvapi", dir="/tmp"))
    hub = Hub()
    cache = MemoryCache(hub)
    audit, metrics, limiter = ExtraAudit(), CountingMetrics(), CountingLimiter()
    state = ServingState(ready=True)
    tracker = ConnectionTracker(identify=_peer, observer=metrics, max_connections=64)
    deps = ApiDeps.fixed(
        cache=cache,
        hub=hub,
        policy=PrefixPolicy(),
        audit=audit,
        metrics=metrics,
        limiter=limiter,
        identify=lambda request: tracker.caller(request.protocol),
        state=state,
    )
    numbered: set[str] = set()
    settings = VaultSettings(
        mount=mount,
        refresh_interval=lambda: refresh_interval,
        kv_numbered=lambda backend: backend in numbered,
    )
    tcp_sock = bind_tcp("127.0.0.1:0")
    port = tcp_sock.getsockname()[1]
    app = build_app(deps, vault=settings)
    install_tcp_guard(app, f"127.0.0.1:{port}", TOKEN)
    listener = UnixListener.create(tmp / "s.sock", mode=0o660, group=None)
    runner = await start_serving(app, [listener.sock, tcp_sock], tracker=tracker, idle_timeout=5)
    try:
        yield Served(tmp / "s.sock", port, cache, audit, metrics, limiter, state, numbered)
    finally:
        await runner.cleanup()
        listener.close()
        tcp_sock.close()
        shutil.rmtree(tmp, ignore_errors=True)
