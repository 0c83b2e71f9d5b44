"""An in-process API server on a real Unix socket, built from the fakes."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from secretd.api.app import build_app
from secretd.api.listener import ConnectionTracker, UnixListener, start_serving
from secretd.api.ports import ApiDeps, ServingState
from secretd.events import Hub
from secretd.model import Caller
from tests.fakes.api_deps import CountingLimiter, CountingMetrics, ListAudit, MemoryCache, UidPolicy


def peer_uid_caller(sock: socket.socket) -> Caller:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return Caller(uid=uid, gid=gid, pid=pid)


@dataclass
class Served:
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
    tmp = Path(tempfile.mkdtemp(prefix="sdapi", dir="/tmp"))
    path = tmp / "s.sock"
    hub = Hub()
    cache = MemoryCache(hub)
    policy = UidPolicy(uids if uids is not None else {0}, ("app/", "blob", "json"))
    audit, metrics, limiter = ListAudit(), CountingMetrics(), CountingLimiter()
    state = ServingState(ready=True)
    tracker = ConnectionTracker(
        identify=peer_uid_caller, observer=metrics, max_connections=max_connections
    )
    deps = ApiDeps.fixed(
        cache=cache,
        hub=hub,
        policy=policy,
        audit=audit,
        metrics=metrics,
        limiter=limiter,
        identify=lambda request: tracker.caller(request.protocol),
        state=state,
    )
    listener = UnixListener.create(path, mode=0o660, group=None)
    runner = await start_serving(
        build_app(deps),
        [listener.sock],
        tracker=tracker,
        idle_timeout=idle_timeout,
        head_timeout=head_timeout,
    )
    try:
        yield Served(path, cache, policy, audit, metrics, limiter, tracker, state, hub)
    finally:
        await runner.cleanup()
        listener.close()
        shutil.rmtree(tmp, ignore_errors=True)
