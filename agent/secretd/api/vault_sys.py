"""The Vault-compatible API's node and token routes (docs/vault-api.md).

    GET  /v1/sys/internal/ui/mounts/<path>    preflight: <mount> is KV version 2
    GET  /v1/sys/health                       an unsealed, active node (HEAD too)
    GET  /v1/sys/seal-status, /v1/sys/leader  unsealed, no HA (`bao status`)
    GET  /v1/auth/token/lookup-self           a token that never expires (POST too)
    PUT  /v1/auth/token/renew-self            400 "lease is not renewable" (POST too)

None of these reveals a secret or a name. The preflight is what the CLI and
consul-template ask before a read: without it they fall back to KV v1 paths.
`lookup-self` is what Vault/OpenBao Agent's `token_file` auto-auth asks before
it uses a token.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aiohttp import web
from multidict import MultiMapping

from secretd import __version__
from secretd.api.params import single_values
from secretd.api.ports import ApiDeps
from secretd.api.secrets import request_caller
from secretd.api.vault_shapes import (
    envelope,
    health_document,
    mount_document,
    seal_document,
    token_document,
    vault_error,
    vault_json,
)
from secretd.errors import Forbidden, InvalidRequest

LOOKUP_SELF = "/v1/auth/token/lookup-self"
RENEW_SELF = "/v1/auth/token/renew-self"
NOT_RENEWABLE = "lease is not renewable"  # Vault's words for a token that cannot be renewed
VERSION = f"{__version__}+secretd"
_HEALTH_FLAGS = frozenset({"standbyok", "perfstandbyok"})
_HEALTH_CODES = frozenset(
    {
        "activecode",
        "standbycode",
        "drsecondarycode",
        "haunhealthycode",
        "performancestandbycode",
        "removedcode",
        "sealedcode",
        "uninitcode",
    }
)


class VaultSysRoutes:
    """Handlers for the mount preflight, node health and token routes."""

    def __init__(self, deps: ApiDeps, mount: str, now: Callable[[], datetime]) -> None:
        self._deps = deps
        self._mount = mount
        self._now = now
        self._started = now()

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/sys/internal/ui/mounts/{path:.+}", self.preflight, allow_head=False)
        router.add_get("/v1/sys/health", self.health)  # HEAD too, as load balancers use it
        router.add_get("/v1/sys/seal-status", self.seal_status, allow_head=False)
        router.add_get("/v1/sys/leader", self.leader, allow_head=False)
        for method in ("GET", "POST"):
            router.add_route(method, LOOKUP_SELF, self.lookup_self)
        for method in ("PUT", "POST"):
            router.add_route(method, RENEW_SELF, self.renew_self)

    async def preflight(self, request: web.Request) -> web.StreamResponse:
        single_values(request.query, ())
        path = request.match_info["path"].strip("/")
        if path != self._mount and not path.startswith(self._mount + "/"):
            raise Forbidden("no such mount")  # what Vault answers for a path outside any mount
        return vault_json(envelope(mount_document(self._mount)))

    async def health(self, request: web.Request) -> web.StreamResponse:
        ready = self._deps.state.ready
        status = parse_health(request.query, ready=ready)
        document = health_document(ready=ready, now=self._now(), version=VERSION)
        return vault_json(document, status=status)

    async def seal_status(self, request: web.Request) -> web.StreamResponse:
        single_values(request.query, ())
        return vault_json(seal_document(ready=self._deps.state.ready, version=VERSION))

    async def leader(self, request: web.Request) -> web.StreamResponse:
        single_values(request.query, ())
        return vault_json({"ha_enabled": False})

    async def lookup_self(self, request: web.Request) -> web.StreamResponse:
        caller = request_caller(request, self._deps)
        # Over TCP the guard has checked it; on the socket it is ignored (the peer
        # is the caller) and only handed back to the client that sent it.
        token = request.headers.get("X-Vault-Token", "")
        who = "tcp" if caller.tcp else f"uid-{caller.uid}"
        return vault_json(envelope(token_document(token=token, who=who, issued=self._started)))

    async def renew_self(self, request: web.Request) -> web.StreamResponse:
        request_caller(request, self._deps)
        return vault_error(400, [NOT_RENEWABLE])


def parse_health(query: MultiMapping[str], *, ready: bool) -> int:
    """The status Vault's health flags ask for an active node (or a sealed one while
    secretd is starting): `activecode` (200) / `sealedcode` (503)."""
    values = single_values(query, _HEALTH_FLAGS | _HEALTH_CODES)
    for flag in _HEALTH_FLAGS & values.keys():
        if values[flag].lower() not in ("true", "false", "1", "0", "t", "f"):
            raise InvalidRequest(f"bad value for {flag} parameter")
    codes = {}
    for key in _HEALTH_CODES & values.keys():
        raw = values[key]
        if not raw.isascii() or not raw.isdigit() or not 100 <= int(raw) <= 599:
            raise InvalidRequest(f"{key} must be an HTTP status code")
        codes[key] = int(raw)
    return codes.get("activecode", 200) if ready else codes.get("sealedcode", 503)
