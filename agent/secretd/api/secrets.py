"""`GET /v1/secrets/{name}` and `GET /v1/secrets` (docs/api.md).

Order of checks for a read, so that nothing leaks and nothing is wasted:
name and parameters (400) -> the read service (api.reads: access rules, 403
identical whether or not the secret exists; the per-caller limit, 429; the
cache; audit and metrics) -> long-poll -> the answer. Values leave only here,
through `SecretValue.reveal()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from secretd.api.params import PLAIN_READ, SecretQuery, parse_list_query, parse_secret_query
from secretd.api.ports import ApiDeps, Served
from secretd.api.reads import ReadService
from secretd.errors import Forbidden
from secretd.model import (
    CURRENT,
    PENDING,
    PREVIOUS,
    CachedSecret,
    Caller,
    SecretName,
    SecretValue,
    rfc3339,
)

CALLER_KEY = web.RequestKey("secretd_caller", Caller)
_STAGE_ORDER = {CURRENT: 0, PREVIOUS: 1, PENDING: 2}
_NO_STORE = {"Cache-Control": "no-store"}
_PLAIN = "v1/json"  # the key of a plain read's answer in CachedSecret.answers


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

    def __init__(self, deps: ApiDeps, reads: ReadService) -> None:
        self._deps = deps
        self._reads = reads

    async def read(self, request: web.Request) -> web.StreamResponse:
        name = SecretName(request.match_info["name"])
        query = parse_secret_query(request.query)
        caller = request_caller(request, self._deps)
        follow = None
        if query.wait is not None and query.index is not None:
            follow = functools.partial(self._long_poll, index=query.index, wait=query.wait)
        return await self._reads.read(
            caller,
            name,
            functools.partial(_serialize, query=query),
            stage=query.stage,
            version_id=query.version,
            refresh=query.refresh,
            follow=follow,
        )

    async def list(self, request: web.Request) -> web.StreamResponse:
        prefix = parse_list_query(request.query)
        caller = request_caller(request, self._deps)
        self._deps.limiter.take(caller)
        served = self._deps.served()
        readable = served.policy.readable_filter(caller)
        names = sorted({n for n in await served.cache.list_names(prefix) if readable(n)})
        cached = {entry.name: entry for entry in served.cache.snapshot()}
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

    async def _long_poll(
        self, served: Served, secret: CachedSecret, *, index: str, wait: float
    ) -> CachedSecret:
        """Answer when the current version differs from `index`, or after `wait`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        name = secret.name
        while secret.version.version_id == index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # Registered synchronously before the first suspension: a change
            # published after the read above cannot slip between the two.
            with contextlib.suppress(TimeoutError):
                await self._deps.hub.wait_for(name, remaining)
            # The configuration current now: a reload while parked swaps the cache.
            secret = await self._deps.served().cache.read(name)
        return secret


def plain_body(secret: CachedSecret) -> bytes:
    """The JSON body answering a plain read (no query), serialised once per
    cached view (`CachedSecret.answers`)."""
    body = secret.answers.get(_PLAIN)
    if body is None:
        # Copied: orjson's bytes keep the room it reserved while writing (16 KiB
        # for a 1 KiB value), harmless for an answer but not for one kept.
        serialised = orjson.dumps(_document(secret, secret.version.value))
        body = secret.answers[_PLAIN] = bytes(memoryview(serialised))
    return body


# A plain read's headers (api.fastread writes the same ones itself).
PLAIN_HEADERS = {"Cache-Control": "no-store", "Content-Type": "application/json"}
_PLAIN_HEADERS = CIMultiDict(PLAIN_HEADERS)


def _serialize(secret: CachedSecret, *, query: SecretQuery) -> web.Response:
    if query is PLAIN_READ:
        return web.Response(body=plain_body(secret), headers=_PLAIN_HEADERS)
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
    return _json(_document(secret, value))


def _document(secret: CachedSecret, value: SecretValue) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": secret.name,
        "version_id": secret.version.version_id,
        "stages": sorted(secret.version.stages, key=lambda s: (_STAGE_ORDER.get(s, 3), s)),
        "created_at": rfc3339(secret.version.created_at),
    }
    text = value.text()
    if text is not None:
        document["value"] = text
    else:
        document["value_b64"] = value.b64()
    document["stale"] = secret.stale
    return document


def _header_safe(text: str) -> str:
    return text if text.isascii() and text.isprintable() else "-"


def _json(document: Mapping[str, Any]) -> web.Response:
    return web.Response(
        body=orjson.dumps(document), content_type="application/json", headers=_NO_STORE
    )
