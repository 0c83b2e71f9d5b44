"""`build_app(deps)`: the aiohttp application behind the Unix socket (and TCP).

Routes (docs/api.md), all GET only but the rotation trigger (aiohttp answers
other methods 405, reshaped to the JSON error form by the error middleware):

    /v1/secrets/{name}   read one secret            api.secrets
    /v1/secrets          list readable names        api.secrets
    /v1/health           health document            api.health
    /metrics             Prometheus text            api.health
    /v1/rotation         rotate now (POST), schedule api.rotation

    /secretsmanager/get  AWS agent compatible read  api.aws_compat
    /ping                "healthy"                  api.aws_compat

The loopback TCP listener's guard (api.tcp) is a middleware the composition
root adds with `install_tcp_guard` when `[tcp]` is configured.
"""

from __future__ import annotations

from aiohttp import web

from secretd.api import aws_compat, rotation
from secretd.api.deps import ApiDeps
from secretd.api.errors import error_middleware
from secretd.api.health import HealthRoutes
from secretd.api.secrets import SecretRoutes

__all__ = ["DEPS_KEY", "ApiDeps", "build_app"]

DEPS_KEY = web.AppKey("secretd_deps", ApiDeps)
# Read routes take no body; anything bigger is refused before it is buffered.
CLIENT_MAX_SIZE = 1024


def build_app(deps: ApiDeps) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=CLIENT_MAX_SIZE,
    )
    app[DEPS_KEY] = deps
    secrets = SecretRoutes(deps)
    health = HealthRoutes(deps)
    app.router.add_get("/v1/secrets", secrets.list, allow_head=False)
    app.router.add_get("/v1/secrets/{name:.+}", secrets.read, allow_head=False)
    app.router.add_get("/v1/health", health.health, allow_head=False)
    app.router.add_get("/metrics", health.metrics, allow_head=False)
    # The AWS Secrets Manager Agent compatible routes: /secretsmanager/get, /ping (SPEC §5).
    aws_compat.add_routes(app, deps, arn_lookup=deps.arn_lookup)
    rotation.add_routes(app, deps)
    return app
