"""`POST /v1/rotation/{name}` (rotate now) and `GET /v1/rotation` (schedule), docs/rotation.md.

Who may rotate: a caller on the Unix socket whose uid is 0 or the agent's own
uid - the same people who could run `secretd rotate -c CONFIG` against the
store and backends directly. Nobody over TCP (the token proves nothing about
who asks), and the `[[allow]]` rules do not grant it: reading a secret is not
changing it. Everyone else gets `403`, before the name is even looked at, so
the answer says nothing about which secrets are rotated.

`GET /v1/rotation` lists the rotated secrets the caller may read (by the
`[[allow]]` rules; operators see all): rotator, last rotation and its result,
next due time. Never a value.

A rotation runs to its end (or its `timeout`) even if the client goes away:
it is shielded from the request's cancellation.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from secretd.api.params import parse_bool, single_values
from secretd.api.ports import ApiDeps, RotationView, Served
from secretd.api.secrets import request_caller
from secretd.errors import Forbidden, NotFound
from secretd.model import Caller, SecretName, rfc3339

ROTATE_PARAMS = frozenset({"fresh"})


def add_routes(app: web.Application, deps: ApiDeps) -> None:
    """Add the rotation routes (they answer 404 while the config has no rotation service)."""
    routes = RotationRoutes(deps)
    app.router.add_post("/v1/rotation/{name:.+}", routes.rotate)
    app.router.add_get("/v1/rotation", routes.status, allow_head=False)


class RotationRoutes:
    def __init__(self, deps: ApiDeps, operators: Collection[int] | None = None) -> None:
        self._deps = deps
        self._operators = frozenset(operators if operators is not None else {0, os.geteuid()})

    def _is_operator(self, caller: Caller) -> bool:
        return not caller.tcp and caller.uid is not None and caller.uid in self._operators

    async def rotate(self, request: web.Request) -> web.StreamResponse:
        caller = request_caller(request, self._deps)
        if not self._is_operator(caller):
            raise Forbidden("only root or the agent's own user may rotate secrets")
        name = SecretName(request.match_info["name"])
        values = single_values(request.query, ROTATE_PARAMS)
        fresh = parse_bool("fresh", values["fresh"]) if "fresh" in values else False
        rotation = self._rotation()
        if name not in rotation.names:
            raise NotFound(f"no [[rotation]] entry rotates secret {name!r}")
        work = asyncio.ensure_future(rotation.rotate_now(name, caller=caller, fresh=fresh))
        outcome = await asyncio.shield(work)
        return _json(
            {
                "name": outcome.name,
                "rotated": outcome.rotated,
                "version_id": outcome.version_id,
                "steps": [step.value for step in outcome.steps],
                "resumed": outcome.resumed,
                "finished_at": _when(outcome.finished_at),
            }
        )

    async def status(self, request: web.Request) -> web.StreamResponse:
        single_values(request.query, ())
        caller = request_caller(request, self._deps)
        operator = self._is_operator(caller)
        served = self._deps.served()
        readable = served.policy.readable_filter(caller)
        rotation = self._rotation(served)
        rows = [
            {
                "name": row.name,
                "rotator": row.rotator,
                "every_seconds": row.every,
                "last_rotated_at": _when(row.last_rotated_at),
                "last_result": row.last_result,
                "last_error": row.last_error,
                "failures": row.failures,
                "next_at": _when(row.next_at),
                "running": row.running,
            }
            for row in rotation.status()
            if operator or readable(row.name)
        ]
        return _json({"rotations": rows})

    def _rotation(self, served: Served | None = None) -> RotationView:
        rotation = (served or self._deps.served()).rotations
        if rotation is None:
            raise NotFound("this agent has no rotation service")
        return rotation


def _when(moment: datetime | None) -> str | None:
    return rfc3339(moment) if moment is not None else None


def _json(document: dict[str, Any]) -> web.Response:
    return web.Response(
        body=orjson.dumps(document),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
