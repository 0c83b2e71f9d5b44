"""Vault/OpenBao-compatible reads (docs/vault-api.md), enabled by `[vault_api]`.

    GET  /v1/<mount>/data/<name>[?version=N]  a read, in Vault's KV v2 shape
    GET  /v1/<mount>/metadata/<name>          versions and times, never a value
    GET  /v1/<mount>/metadata/<path>?list=true   the names below <path> one may read
    and the node and token routes of api.vault_sys (preflight, health, lookup-self).

Reads go through `ReadService` (access rules, audit, limits, cache) exactly as
`/v1/secrets` does. On TCP the guard (api.tcp) takes `X-Vault-Token` as the
token header; on the Unix socket the caller is the socket's peer and the token
header is ignored.

Every answer under /v1/<mount>/, /v1/sys/ and /v1/auth/ is Vault-shaped,
whichever layer gave it: `vault_shape`, the outermost middleware, rewrites the
JSON error form of the other layers (guard, router, error middleware) into
`{"errors": [...]}` - 401/403 become 403 `permission denied` (one body whether
or not a secret exists), 404 and 405 carry an empty list. Writes are refused
with 405 before anything else runs: nothing here stores.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import MultiMapping

from secretd.api.errors import Handler
from secretd.api.params import parse_bool, single_values
from secretd.api.ports import ApiDeps, Served
from secretd.api.reads import ReadService
from secretd.api.secrets import request_caller
from secretd.api.vault_shapes import (
    PERMISSION_DENIED,
    VaultResponse,
    envelope,
    kv_data,
    list_keys,
    metadata_document,
    vault_error,
    vault_json,
    version_metadata,
    version_number,
)
from secretd.api.vault_sys import LOOKUP_SELF, NOT_RENEWABLE, RENEW_SELF, VaultSysRoutes
from secretd.errors import BackendError, InvalidRequest, NotFound
from secretd.model import PENDING, PREVIOUS, CachedSecret, Caller, SecretName, Version, utc_now

_READ_METHODS = frozenset({"GET", "HEAD"})
# Methods each path takes; every other Vault path takes only _READ_METHODS.
_METHODS = {RENEW_SELF: frozenset({"PUT", "POST"}), LOOKUP_SELF: frozenset({"GET", "POST"})}
_OTHER_STAGES = (PREVIOUS, PENDING)
_STALE_WARNING = (
    "secretd could not refresh this secret from its backend: this is the last good value"
)


@dataclass(frozen=True)
class VaultSettings:
    """What the Vault routes need, from `[vault_api]` and the live graph."""

    mount: str
    # The cache's refresh interval, read per request (a reload may change it).
    refresh_interval: Callable[[], float]
    # Whether backend `name` numbers versions as KV v2 does (the vault type).
    kv_numbered: Callable[[str], bool]


def add_routes(
    app: web.Application,
    deps: ApiDeps,
    reads: ReadService,
    settings: VaultSettings,
    *,
    now: Callable[[], datetime] = utc_now,
) -> None:
    """Add the Vault routes to `app` and make `vault_shape` its outermost middleware."""
    kv = VaultKvRoutes(deps, reads, settings)
    base = f"/v1/{settings.mount}"
    app.router.add_get(base + "/data/{name:.+}", kv.read, allow_head=False)
    app.router.add_get(base + "/metadata", kv.metadata, allow_head=False)  # list the root
    app.router.add_get(base + "/metadata/{path:.*}", kv.metadata, allow_head=False)
    VaultSysRoutes(deps, settings.mount, now).add_to(app.router)
    app.middlewares.insert(0, vault_shape(settings.mount))


class VaultKvRoutes:
    """The KV v2 handlers, bound to their dependencies."""

    def __init__(self, deps: ApiDeps, reads: ReadService, settings: VaultSettings) -> None:
        self._deps = deps
        self._reads = reads
        self._settings = settings

    async def read(self, request: web.Request) -> web.StreamResponse:
        name = SecretName(request.match_info["name"])
        wanted = parse_version(request.query)
        refuse_unsupported(request)
        caller = request_caller(request, self._deps)

        async def select(served: Served) -> CachedSecret:
            return await self._select(served, caller, name, wanted)

        return await self._reads.read_with(caller, name, select, self._answer, api="vault")

    def _answer(self, secret: CachedSecret) -> web.Response:
        version = secret.version
        data = {
            "data": kv_data(version.value),
            "metadata": version_metadata(version, self._number(secret)),
        }
        document = envelope(
            data,
            lease_seconds=self._lease_seconds(),
            warnings=[_STALE_WARNING] if secret.stale else None,
        )
        response = vault_json(document)
        if secret.stale:
            response.headers["X-Secretd-Stale"] = "true"
        return response

    async def _select(
        self, served: Served, caller: Caller, name: SecretName, wanted: int | None
    ) -> CachedSecret:
        """The current version, or the one numbered `wanted` (see `version_number`)."""
        fetch = self._reads.fetch
        current = await fetch(served, caller, name)
        if wanted is None or self._number(current) == wanted:
            return current
        if self._settings.kv_numbered(current.backend):
            return await fetch(served, caller, name, version_id=str(wanted))
        # Other backends are reached by stage: a number is found among the versions
        # holding one; older versions are not reachable through the cache.
        for stage in _OTHER_STAGES:
            with contextlib.suppress(NotFound):
                other = await fetch(served, caller, name, stage=stage)
                if self._number(other) == wanted:
                    return other
        raise NotFound(f"secret {name!r} has no version {wanted} holding a stage")

    async def metadata(self, request: web.Request) -> web.StreamResponse:
        values = single_values(request.query, ("list",))
        refuse_unsupported(request)
        path = request.match_info.get("path", "").strip("/")
        if "list" in values and parse_bool("list", values["list"]):
            return await self._list(request, path)
        if not path:
            raise NotFound("no secret named")  # as Vault: the mount's root is no secret
        name = SecretName(path)
        caller = request_caller(request, self._deps)
        found: list[tuple[dict[int, Version], list[str]]] = []

        async def select(served: Served) -> CachedSecret:
            current = await self._reads.fetch(served, caller, name)
            found.append(await self._staged_versions(served, caller, name, current))
            return current

        def answer(current: CachedSecret) -> web.Response:
            versions, warnings = found[0]
            document = metadata_document(versions, self._number(current))
            return vault_json(envelope(document, warnings=warnings))

        return await self._reads.read_with(caller, name, select, answer, api="vault", op="metadata")

    async def _staged_versions(
        self, served: Served, caller: Caller, name: SecretName, current: CachedSecret
    ) -> tuple[dict[int, Version], list[str]]:
        """Current, previous and pending, by number; a warning for each unreadable one."""
        versions = {self._number(current): current.version}
        warnings = [_STALE_WARNING] if current.stale else []
        for stage in _OTHER_STAGES:
            try:
                other = await self._reads.fetch(served, caller, name, stage=stage)
            except NotFound:
                continue
            except BackendError:
                warnings.append(f"the {stage} version could not be read from the backend")
                continue
            versions.setdefault(self._number(other), other.version)
        return versions, warnings

    async def _list(self, request: web.Request, path: str) -> web.StreamResponse:
        """`bao kv list`: as `GET /v1/secrets?prefix=`, only names the caller may read."""
        prefix = SecretName(path) + "/" if path else ""
        caller = request_caller(request, self._deps)
        self._deps.limiter.take(caller)
        served = self._deps.served()
        readable = served.policy.readable_filter(caller)
        names = [n for n in await served.cache.list_names(prefix) if readable(n)]
        keys = list_keys(names, prefix)
        if not keys:
            raise NotFound("nothing to list")
        return vault_json(envelope({"keys": keys}))

    def _number(self, secret: CachedSecret) -> int:
        numbered = self._settings.kv_numbered(secret.backend)
        return version_number(secret.version, kv_numbered=numbered)

    def _lease_seconds(self) -> int:
        # Non-zero, so consul-template (Vault Agent templates) re-reads within a
        # refresh interval rather than after its 5-minute default.
        return max(1, math.ceil(self._settings.refresh_interval()))


def vault_shape(mount: str) -> Middleware:
    """The outermost middleware: Vault-shaped answers on Vault paths, writes refused."""
    prefixes = (f"/v1/{mount}/", "/v1/sys/", "/v1/auth/")
    exact = frozenset({f"/v1/{mount}", "/v1/sys", "/v1/auth"})

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not path.startswith(prefixes) and path not in exact:
            return await handler(request)
        if request.method not in _METHODS.get(path, _READ_METHODS):
            return _read_only()
        if path == RENEW_SELF and (request.body_exists or "Transfer-Encoding" in request.headers):
            # Vault's Go client sends {"increment": N}; bodies are refused unread, so
            # this answer, like the refusal of any body, comes before the TCP guard.
            return _not_renewable()
        return reshape(await handler(request))

    return middleware


def refuse_unsupported(request: web.Request) -> None:
    """A client asking for response wrapping or a namespace expects what secretd does not
    do (a wrapped answer; another tree of paths): say so rather than answer otherwise."""
    if request.headers.get("X-Vault-Wrap-TTL"):
        raise InvalidRequest("response wrapping is not supported by secretd")
    if request.headers.get("X-Vault-Namespace", "").strip("/"):
        raise InvalidRequest("namespaces are not supported by secretd")


def parse_version(query: MultiMapping[str]) -> int | None:
    """`?version=N`: None for the current version (no parameter, or N <= 0 as in Vault)."""
    raw = single_values(query, ("version",)).get("version")
    if raw is None:
        return None
    try:
        number = int(raw, 10)
    except ValueError:
        raise InvalidRequest("'version' must be an integer") from None
    if number >= 2**63:
        raise InvalidRequest("'version' is too large")
    return number if number > 0 else None


def reshape(response: web.StreamResponse) -> web.StreamResponse:
    """Another layer's JSON error as Vault's `{"errors": [...]}` (same status, but
    Vault answers 403 where secretd's TCP guard says 401)."""
    if not isinstance(response, web.Response) or isinstance(response, VaultResponse):
        return response
    if response.status < 400 or response.prepared:
        return response
    status = 403 if response.status == 401 else response.status
    if status == 403:
        errors = [PERMISSION_DENIED]
    elif status in (404, 405):
        errors = []
    else:
        errors = [_message(response)]
    response.set_status(status)
    response.body = orjson.dumps({"errors": errors})
    response.content_type = "application/json"
    return response


def _message(response: web.Response) -> str:
    """The message of secretd's `{"error": {"code", "message"}}` body."""
    body = response.body
    try:
        document = orjson.loads(body) if isinstance(body, bytes) else None
    except orjson.JSONDecodeError:
        document = None
    error = document.get("error") if isinstance(document, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else response.reason


def _not_renewable() -> web.Response:
    response = vault_error(400, [NOT_RENEWABLE])
    response.force_close()
    return response


def _read_only() -> web.Response:
    # Given before the TCP guard and without reading a body: it reveals nothing.
    response = vault_error(405, ["secretd's Vault-compatible API is read-only"])
    response.headers["Allow"] = "GET"
    response.force_close()
    return response
