"""`build_app(deps)`: the aiohttp application behind the Unix socket (and TCP).

Routes (docs/api.md), all GET only but the rotation trigger (aiohttp answers
other methods 405, reshaped to the JSON error form by the error middleware):

    /v1/secrets/{name}   read one secret            api.secrets
    /v1/secrets          list readable names        api.secrets
    /v1/health           health document            api.health
    /metrics             Prometheus text            api.health
    /v1/rotation         rotate now (POST), schedule api.rotation
    /v1/usage            last read, reads per secret api.usage

    /secretsmanager/get  AWS agent compatible read  api.aws_compat
    /ping                "healthy"                  api.aws_compat

    /v1/<mount>/..., /v1/sys/..., /v1/auth/...         api.vault_compat
                         Vault-compatible reads, when `[vault_api]` is set

The loopback TCP listener's guard (api.tcp) is a middleware the composition
root adds with `install_tcp_guard` when `[tcp]` is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from secretd.api import aws_compat, rotation, usage
from secretd.api.errors import error_middleware
from secretd.api.fastread import FAST_READS_KEY, FastReads
from secretd.api.health import HealthRoutes
from secretd.api.ports import ApiDeps
from secretd.api.reads import ReadService
from secretd.api.secrets import SecretRoutes

if TYPE_CHECKING:  # the Vault-compatible routes are imported only when configured
    from secretd.api.vault_compat import VaultSettings

__all__ = ["DEPS_KEY", "ApiDeps", "build_app"]

DEPS_KEY = web.AppKey("secretd_deps", ApiDeps)
# Read routes take no body; anything bigger is refused before it is buffered.
CLIENT_MAX_SIZE = 1024


def build_app(deps: ApiDeps, *, vault: VaultSettings | None = None) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=CLIENT_MAX_SIZE,
    )
    app[DEPS_KEY] = deps
    reads = ReadService(deps)  # one read path, so one coalescing account, for every API
    secrets = SecretRoutes(deps, reads)
    # Plain reads of cached secrets on the Unix socket skip the router (api.fastread).
    app[FAST_READS_KEY] = FastReads(deps, reads)
    health = HealthRoutes(deps)
    app.router.add_get("/v1/secrets", secrets.list, allow_head=False)
    app.router.add_get("/v1/secrets/{name:.+}", secrets.read, allow_head=False)
    app.router.add_get("/v1/health", health.health, allow_head=False)
    app.router.add_get("/metrics", health.metrics, allow_head=False)
    # The AWS Secrets Manager Agent compatible routes: /secretsmanager/get, /ping (docs/aws.md).
    aws_compat.add_routes(app, deps, reads)
    if vault is not None:  # Vault/OpenBao-compatible KV v2 reads (docs/vault-api.md)
        from secretd.api import vault_compat

        vault_compat.add_routes(app, deps, reads, vault)
    rotation.add_routes(app, deps)
    usage.add_routes(app, deps)
    return app
