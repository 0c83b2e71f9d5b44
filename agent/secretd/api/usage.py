"""`GET /v1/usage`: when each secret was last read and how often (docs/client.md).

The rows cover every secret the agent knows of - read ones (usage.py keeps
them across restarts), declared and template/credential ones, cached ones and
every name a listable backend (the file store) holds - so a secret nobody ever
read shows up too, with `"last_read": null` and `"reads": 0`. `secretd unused`
and `secretd status --json` read it. Never a value.

Who sees which rows is decided as for `GET /v1/rotation`: root and the agent's
own uid on the Unix socket see every secret; anyone else only the ones an
`[[allow]]` rule lets them read.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from secretd.api.params import single_values
from secretd.api.ports import ApiDeps
from secretd.api.secrets import request_caller
from secretd.model import SecretName, rfc3339


def add_routes(app: web.Application, deps: ApiDeps) -> None:
    app.router.add_get("/v1/usage", UsageRoutes(deps).usage, allow_head=False)


class UsageRoutes:
    def __init__(self, deps: ApiDeps, operators: Collection[int] | None = None) -> None:
        self._deps = deps
        self._operators = frozenset(operators if operators is not None else {0, os.geteuid()})

    async def usage(self, request: web.Request) -> web.StreamResponse:
        single_values(request.query, ())
        caller = request_caller(request, self._deps)
        operator = not caller.tcp and caller.uid is not None and caller.uid in self._operators
        served = self._deps.served()
        readable = None if operator else served.policy.readable_filter(caller)
        records = self._deps.usage.records()
        names: set[SecretName] = set(records)
        names.update(await served.cache.list_names(""))
        rows: list[dict[str, Any]] = []
        for name in sorted(names):
            if readable is not None and not readable(name):
                continue
            record = records.get(name)
            rows.append(
                {
                    "name": name,
                    "last_read": None if record is None else _when(record.last_read),
                    "reads": 0 if record is None else record.reads,
                }
            )
        document = {
            "now": rfc3339(datetime.now(UTC)),
            "since": _when(self._deps.usage.since),
            "secrets": rows,
        }
        return web.Response(
            body=orjson.dumps(document),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )


def _when(epoch: float) -> str:
    return rfc3339(datetime.fromtimestamp(epoch, UTC))
