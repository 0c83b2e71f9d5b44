"""A fake Vault/OpenBao on 127.0.0.1 (aiohttp) that answers honestly or with hostility.

It speaks the parts of the API the Vault backend uses: token `lookup-self` and
`renew-self`, AppRole `login`, and KV v2 `metadata` and `data` reads under the
`secret` mount. Honest answers have the real shapes (one KV map per version,
`created_time` per version); `misbehave(case)` makes every KV read hostile:

    oversize       a 200 whose body streams `oversize_bytes` (default 64 MiB) of JSON
    drip           a 200 whose body arrives one byte every 100 ms, for minutes
    hang           headers never come
    wrong_shape    a 200 whose JSON is valid but not KV's shape
    wrong_version  the data answer claims another version than asked
    wrong_name     the data answer is another secret's (a created_time that does not match)
    rollback       the metadata says the current version is an older one
    redirect       a 307 to another address (a standby's answer)
    storm          the token's TTL is 1 ms (lookup-self and login) and renewals give 1 ms

`token_ttl` / `renew_ttl` set the TTLs honest auth answers carry. `hits`
counts requests by kind ("lookup", "renew", "login", "metadata", "data").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tests.fakes.loopback_app import LoopbackApp

TOKEN = "hvs.fake-root-token"
DRIP_INTERVAL = 0.1
DRIP_SECONDS = 300.0
CHUNK = 64 * 1024
CASES = (
    "oversize",
    "drip",
    "hang",
    "wrong_shape",
    "wrong_version",
    "wrong_name",
    "rollback",
    "redirect",
    "storm",
)


class HostileVault(LoopbackApp):
    """See the module docstring. `async with HostileVault() as vault:` serves on vault.url."""

    def __init__(self) -> None:
        super().__init__()
        self.kv: dict[str, list[dict[str, Any]]] = {}
        self.created: dict[str, list[str]] = {}
        self.token_ttl = 3600.0
        self.renew_ttl: float | None = None  # None: the same as token_ttl
        self.case: str | None = None
        self.oversize_bytes = 64 * 1024 * 1024
        self.hits: collections.Counter[str] = collections.Counter()

    def put(self, path: str, data: dict[str, Any]) -> int:
        """Write a new KV version (it becomes current); its number."""
        versions = self.kv.setdefault(path, [])
        stamps = self.created.setdefault(path, [])
        versions.append(dict(data))
        base = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=len(stamps))
        stamps.append(base.isoformat().replace("+00:00", "Z"))
        return len(versions)

    def misbehave(self, case: str | None) -> None:
        if case is not None and case not in CASES:
            raise ValueError(f"unknown case {case!r}")
        self.case = case

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/auth/token/lookup-self", self._lookup)
        app.router.add_post("/v1/auth/token/renew-self", self._renew)
        app.router.add_post("/v1/auth/{mount}/login", self._login)
        app.router.add_get("/v1/secret/metadata/{path:.+}", self._metadata)
        app.router.add_get("/v1/secret/data/{path:.+}", self._data)
        return app

    # -- auth -------------------------------------------------------------

    def _ttl(self, renewing: bool = False) -> float:
        if self.case == "storm":
            return 0.001
        if renewing and self.renew_ttl is not None:
            return self.renew_ttl
        return self.token_ttl

    async def _lookup(self, request: web.Request) -> web.Response:
        self.hits["lookup"] += 1
        if request.headers.get("X-Vault-Token") != TOKEN:
            return web.json_response({"errors": ["permission denied"]}, status=403)
        return web.json_response({"data": {"ttl": self._ttl(), "renewable": True}})

    async def _renew(self, request: web.Request) -> web.Response:
        self.hits["renew"] += 1
        return web.json_response(self._auth(self._ttl(renewing=True)))

    async def _login(self, request: web.Request) -> web.Response:
        self.hits["login"] += 1
        return web.json_response(self._auth(self._ttl()))

    @staticmethod
    def _auth(ttl: float) -> dict[str, Any]:
        return {"auth": {"client_token": TOKEN, "lease_duration": ttl, "renewable": True}}

    # -- KV v2 ------------------------------------------------------------

    async def _metadata(self, request: web.Request) -> web.StreamResponse:
        return await self._kv_read(request, "metadata", self._honest_metadata)

    async def _data(self, request: web.Request) -> web.StreamResponse:
        return await self._kv_read(request, "data", self._honest_data)

    async def _kv_read(
        self,
        request: web.Request,
        kind: str,
        honest: Callable[[web.Request, str], web.StreamResponse],
    ) -> web.StreamResponse:
        """Count the hit; the hostile answer when a case is set, else 404 or `honest`."""
        self.hits[kind] += 1
        hostile = await self._hostile(request)
        if hostile is not None:
            return hostile
        path = request.match_info["path"]
        if path not in self.kv:
            return web.json_response({"errors": []}, status=404)
        return honest(request, path)

    def _honest_metadata(self, request: web.Request, path: str) -> web.StreamResponse:
        stamps = self.created[path]
        current = len(stamps) - 1 if self.case == "rollback" and len(stamps) > 1 else len(stamps)
        versions = {
            str(n): {"created_time": stamp, "deletion_time": "", "destroyed": False}
            for n, stamp in enumerate(stamps, start=1)
        }
        body = {"data": {"current_version": current, "versions": versions}}
        return web.json_response(body)

    def _honest_data(self, request: web.Request, path: str) -> web.StreamResponse:
        versions, stamps = self.kv[path], self.created[path]
        asked = int(request.query.get("version", len(versions)))
        if not 1 <= asked <= len(versions):
            return web.json_response({"errors": []}, status=404)
        claimed, stamp = asked, stamps[asked - 1]
        if self.case == "wrong_version":
            claimed = asked + 1
        elif self.case == "wrong_name":
            stamp = "2020-02-02T02:02:02Z"  # another secret's version: its own created_time
        metadata = {"version": claimed, "created_time": stamp, "deletion_time": ""}
        metadata["destroyed"] = False
        body = {"data": {"data": versions[asked - 1], "metadata": metadata}}
        return web.json_response(body)

    async def _hostile(self, request: web.Request) -> web.StreamResponse | None:
        case = self.case
        if case == "oversize":
            return await stream_body(request, self.oversize_bytes)
        if case == "drip":
            return await drip_body(request)
        if case == "hang":
            await asyncio.sleep(DRIP_SECONDS)
        if case == "wrong_shape":
            return web.json_response({"data": ["not", "kv"], "warnings": None})
        if case == "redirect":
            raise web.HTTPTemporaryRedirect("http://127.0.0.1:9/v1/elsewhere")
        return None


async def stream_body(
    request: web.Request, size: int, *, prefix: bytes = b'{"data": {"x": "'
) -> web.StreamResponse:
    """A 200 JSON answer of `size` bytes, generated as it is sent (never held whole)."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = size
    await response.prepare(request)
    suffix = b'"}}'
    await response.write(prefix)
    left = size - len(prefix) - len(suffix)
    filler = b"A" * CHUNK
    with contextlib.suppress(ConnectionError):
        while left > 0:
            piece = filler[: min(CHUNK, left)]
            await response.write(piece)
            left -= len(piece)
        await response.write(suffix)
    return response


async def drip_body(request: web.Request, prefix: bytes = b'{"data": ') -> web.StreamResponse:
    """A 200 whose body arrives one byte every DRIP_INTERVAL, for DRIP_SECONDS."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        await response.write(prefix)
        for _ in range(int(DRIP_SECONDS / DRIP_INTERVAL)):
            await asyncio.sleep(DRIP_INTERVAL)
            await response.write(b" ")
    return response
