"""`GET /v1/health` and `GET /metrics` (SPEC §4). Neither ever shows a value or a secret name.

Health is `starting` (503) until the composition root flips `ServingState.ready`
after preloading declared secrets and first renders; then `ok` (200), or
`degraded` (200) when a backend's last call failed, a cached secret is stale, or
a template's last render failed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from secretd.api.deps import ApiDeps
from secretd.model import rfc3339

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class HealthRoutes:
    def __init__(self, deps: ApiDeps) -> None:
        self._deps = deps

    async def health(self, request: web.Request) -> web.StreamResponse:
        del request
        document = self.document()
        status = 503 if document["status"] == "starting" else 200
        return web.Response(
            status=status,
            body=orjson.dumps(document),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    def document(self) -> dict[str, Any]:
        cache = self._deps.cache
        backends = {
            name: {"ok": h.ok, "last_error": h.last_error, "last_success": h.last_success}
            for name, h in sorted(cache.backend_health().items())
        }
        entries = cache.snapshot()
        stale = sum(1 for entry in entries if entry.stale)
        templates = [
            {
                "destination": str(t.destination),
                "ok": t.ok,
                "last_error": t.last_error,
                "last_rendered": _when(t.last_rendered),
            }
            for t in self._deps.templates()
        ]
        # How many declared secrets failed to load: a count, so health (open to
        # every client of the socket) says nothing about which names exist.
        unloaded = len(cache.failed_pins())
        rotations = self._rotations()
        if not self._deps.state.ready:
            status = "starting"
        elif (
            stale
            or unloaded
            or not all(b["ok"] for b in backends.values())
            or not all(t["ok"] for t in templates)
            or rotations["failing"]
        ):
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "backends": backends,
            "cache": {"entries": len(entries), "stale": stale, "declared_unloaded": unloaded},
            "templates": templates,
            "rotations": rotations,
            "hardening": dict(self._deps.hardening),
        }

    def _rotations(self) -> dict[str, int]:
        """Counts only (health is open to every client): how many secrets are
        rotated, and how many of them failed their last rotation."""
        if self._deps.rotation is None:
            return {"configured": 0, "failing": 0}
        rows = self._deps.rotation.status()
        failing = sum(1 for row in rows if row.last_result == "failed")
        return {"configured": len(rows), "failing": failing}

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        del request
        self._deps.metrics.set_secret_ages(self._deps.cache.snapshot())
        response = web.Response(body=self._deps.metrics.exposition())
        response.headers["Content-Type"] = PROMETHEUS_TEXT
        return response


def _when(moment: datetime | str | None) -> str | None:
    if isinstance(moment, datetime):
        return rfc3339(moment)
    return moment
