"""`GET /v1/secrets/{name}` and `GET /v1/secrets` (SPEC §4).

Order of checks for a read, so that nothing leaks and nothing is wasted:
name and parameters (400) -> access rules (403, audited, identical whether or
not the secret exists) -> per-caller limit on requests that reach a backend
(429) -> the cache. Values leave only here, through `SecretValue.reveal()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from secretd.api.deps import ApiDeps
from secretd.api.params import SecretQuery, parse_list_query, parse_secret_query
from secretd.errors import Forbidden, SecretdError
from secretd.model import CURRENT, PENDING, PREVIOUS, CachedSecret, Caller, SecretName, rfc3339

CALLER_KEY = web.RequestKey("secretd_caller", Caller)
_STAGE_ORDER = {CURRENT: 0, PREVIOUS: 1, PENDING: 2}
_NO_STORE = {"Cache-Control": "no-store"}


def request_caller(request: web.Request, deps: ApiDeps) -> Caller:
    """Who is asking: set by a transport guard (TCP) or read from the socket's peer."""
    caller = request.get(CALLER_KEY)
    if caller is None:
        caller = deps.identify(request)
    if caller is None:
        raise Forbidden("the caller's identity could not be established")
    return caller


class SecretRoutes:
    """The handlers of the secret routes, bound to their dependencies."""

    def __init__(self, deps: ApiDeps) -> None:
        self._deps = deps
        # Reads under way that reach a backend, by (name, stage, version): joiners are free.
        self._loading: dict[tuple[SecretName, str | None, str | None], int] = {}

    async def read(self, request: web.Request) -> web.StreamResponse:
        name = SecretName(request.match_info["name"])
        query = parse_secret_query(request.query)
        caller = request_caller(request, self._deps)
        self._authorize(caller, name)
        try:
            secret = await self._fetch(caller, name, query)
            body = _serialize(secret, query)
        except SecretdError as exc:
            self._record(caller, name, None, exc.code)
            raise
        self._record(caller, name, secret.version.version_id, "stale" if secret.stale else "ok")
        return body

    async def list(self, request: web.Request) -> web.StreamResponse:
        prefix = parse_list_query(request.query)
        caller = request_caller(request, self._deps)
        self._deps.limiter.take(caller)
        readable = self._deps.policy.readable_filter(caller)
        names = sorted({n for n in await self._deps.cache.list_names(prefix) if readable(n)})
        cached = {entry.name: entry for entry in self._deps.cache.snapshot()}
        items = []
        for name in names:
            entry = cached.get(name)
            items.append(
                {
                    "name": name,
                    "version_id": entry.version_id if entry else None,
                    "age_seconds": round(entry.age_seconds, 3) if entry else None,
                    "stale": entry.stale if entry else False,
                }
            )
        return _json({"secrets": items})

    def _authorize(self, caller: Caller, name: SecretName) -> None:
        if self._deps.policy.allows(caller, name):
            return
        # Every denial is counted in metrics and answered 403; the audit log bounds
        # a caller's deny lines and summarises the rest (secretd.denials).
        self._deps.audit.record("deny", secret=name, version_id=None, caller=caller, result="deny")
        self._deps.metrics.read("forbidden")
        # The same answer for every denied name: it must not reveal existence.
        raise Forbidden(f"not allowed to read {name}")

    async def _fetch(self, caller: Caller, name: SecretName, query: SecretQuery) -> CachedSecret:
        cache = self._deps.cache
        key = (name, query.stage, query.version)
        if query.refresh:
            self._deps.limiter.take(caller)  # an explicit ask of the backend: always counted
            secret = await cache.read(
                name, stage=query.stage, version_id=query.version, refresh=True
            )
        elif query.stage is None and query.version is None and cache.is_cached(name):
            secret = await cache.read(name)  # the fast path: never limited
        else:
            # A miss (or another version) reaches a backend, unless it joins a load
            # already under way (the cache coalesces them): only the first is counted.
            if key not in self._loading:
                self._deps.limiter.take(caller)
            self._loading[key] = self._loading.get(key, 0) + 1
            try:
                secret = await cache.read(name, stage=query.stage, version_id=query.version)
            finally:
                self._loading[key] -= 1
                if not self._loading[key]:
                    del self._loading[key]
        if query.wait is not None and query.index is not None:
            secret = await self._long_poll(name, secret, query.index, query.wait)
        return secret

    async def _long_poll(
        self, name: SecretName, secret: CachedSecret, index: str, wait: float
    ) -> CachedSecret:
        """Answer when the current version differs from `index`, or after `wait`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while secret.version.version_id == index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # Registered synchronously before the first suspension: a change
            # published after the read above cannot slip between the two.
            with contextlib.suppress(TimeoutError):
                await self._deps.hub.wait_for(name, remaining)
            secret = await self._deps.cache.read(name)
        return secret

    def _record(
        self, caller: Caller, name: SecretName, version_id: str | None, result: str
    ) -> None:
        self._deps.audit.record(
            "read", secret=name, version_id=version_id, caller=caller, result=result
        )
        self._deps.metrics.read(result)


def _serialize(secret: CachedSecret, query: SecretQuery) -> web.Response:
    value = secret.version.value
    if query.field is not None:
        value = value.field(query.field)
    text = value.text()
    if query.raw:
        headers = {**_NO_STORE, "X-Secretd-Version-Id": _header_safe(secret.version.version_id)}
        if secret.stale:
            headers["X-Secretd-Stale"] = "true"
        if text is not None:
            return web.Response(
                body=value.reveal(), headers=headers, content_type="text/plain", charset="utf-8"
            )
        return web.Response(
            body=value.reveal(), headers=headers, content_type="application/octet-stream"
        )
    document: dict[str, Any] = {
        "name": secret.name,
        "version_id": secret.version.version_id,
        "stages": sorted(secret.version.stages, key=lambda s: (_STAGE_ORDER.get(s, 3), s)),
        "created_at": _created_at(secret.version.created_at),
    }
    if text is not None:
        document["value"] = text
    else:
        document["value_b64"] = value.b64()
    document["stale"] = secret.stale
    return _json(document)


@functools.lru_cache(maxsize=4096)
def _created_at(moment: datetime) -> str:
    # Formatting a datetime costs as much as the rest of the body; versions repeat.
    return rfc3339(moment)


def _header_safe(text: str) -> str:
    return text if text.isascii() and text.isprintable() else "-"


def _json(document: Mapping[str, Any]) -> web.Response:
    return web.Response(
        body=orjson.dumps(document), content_type="application/json", headers=_NO_STORE
    )
