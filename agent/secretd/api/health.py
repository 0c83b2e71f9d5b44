"""`GET /v1/health` and `GET /metrics` (docs/api.md). Neither ever shows a value.

Health is `starting` (503) until the composition root flips `ServingState.ready`
after preloading declared secrets and first renders; then `ok` (200), or
`degraded` (200) when a backend's last call failed, a cached secret is stale, or
a template's last render failed.

Every client of the socket may ask for health, but error texts name secrets,
store paths and template files. So the document is cut to the caller
(docs/security.md, "Health and status"):

- root (and the agent's own uid) get every error text (`"detail": "full"`);
- anyone else (`"detail": "summary"`) gets, for a failed backend, only that it
  failed; for a failed template, the error's code and the secret it is about
  when a rule lets them read that secret, else that it is one they may not
  read. Counts (cache entries, stale, declared secrets not loaded) are shown to
  everyone: they name nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from secretd.api.ports import ApiDeps, TemplateStatusView
from secretd.api.secrets import request_caller
from secretd.errors import SecretdError
from secretd.model import Caller, SecretName, rfc3339

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
BACKEND_FAILED = "the last call failed (details are shown to root)"

Readable = Callable[[SecretName], bool]


class HealthRoutes:
    def __init__(self, deps: ApiDeps, *, agent_uid: int | None = None) -> None:
        self._deps = deps
        self._agent_uid = os.geteuid() if agent_uid is None else agent_uid

    async def health(self, request: web.Request) -> web.StreamResponse:
        document = self.document(self._viewer(request))
        status = 503 if document["status"] == "starting" else 200
        return web.Response(
            status=status,
            body=orjson.dumps(document),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    def _viewer(self, request: web.Request) -> Readable | None:
        """None: the caller sees everything; else what it may read."""
        try:
            caller: Caller | None = request_caller(request, self._deps)
        except SecretdError:  # no identity: health is still answered, summarised
            caller = None
        if caller is None:
            return lambda _name: False
        if not caller.tcp and caller.uid in (0, self._agent_uid):
            return None
        return self._deps.served().policy.readable_filter(caller)

    def document(self, readable: Readable | None = None) -> dict[str, Any]:
        """The health document; `readable` None is root's full view."""
        served = self._deps.served()
        cache = served.cache
        backends = {
            name: {
                "ok": h.ok,
                "state": h.state,
                "last_error": h.last_error if readable is None or h.ok else BACKEND_FAILED,
                "last_success": h.last_success,
                # Which Vault address / AWS region serves: addresses are root's to see.
                "endpoint": h.endpoint if readable is None else None,
                "on_primary": h.on_primary,
            }
            for name, h in sorted(cache.backend_health().items())
        }
        entries = cache.snapshot()
        stale = sum(1 for entry in entries if entry.stale)
        templates = [
            {
                "destination": str(t.destination),
                "ok": t.ok,
                "last_error": t.last_error if readable is None else _summary(t, readable),
                "last_rendered": _when(t.last_rendered),
            }
            for t in served.template_status()
        ]
        # How many declared secrets failed to load: a count, so health (open to
        # every client of the socket) says nothing about which names exist.
        unloaded = len(cache.failed_pins())
        refused = cache.persist_refused()  # tampered, foreign or rolled-back files
        rotations = self._rotations()
        if not self._deps.state.ready:
            status = "starting"
        elif (
            stale
            or unloaded
            or refused
            or not all(b["ok"] for b in backends.values())
            or not all(t["ok"] for t in templates)
            or rotations["failing"]
        ):
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "detail": "full" if readable is None else "summary",
            "backends": backends,
            "cache": {
                "entries": len(entries),
                "stale": stale,
                "declared_unloaded": unloaded,
                "persist_refused": refused,
            },
            "templates": templates,
            "rotations": rotations,
            "hardening": dict(self._deps.hardening),
        }

    def _rotations(self) -> dict[str, int]:
        """Counts only (health is open to every client): how many secrets are
        rotated, and how many of them failed their last rotation."""
        rotation = self._deps.served().rotations
        if rotation is None:
            return {"configured": 0, "failing": 0}
        rows = rotation.status()
        failing = sum(1 for row in rows if row.last_result == "failed")
        return {"configured": len(rows), "failing": failing}

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        del request
        cache = self._deps.served().cache
        entries = cache.snapshot()
        self._deps.metrics.set_secret_ages(entries)
        failovers = {name: h.failovers for name, h in cache.backend_health().items()}
        self._deps.metrics.set_failovers(failovers)
        pinned = [e.name for e in entries if e.pinned] + list(cache.failed_pins())
        records = self._deps.usage.records()
        self._deps.metrics.set_last_reads(
            {name: r.last_read if (r := records.get(name)) else None for name in pinned}
        )
        response = web.Response(body=self._deps.metrics.exposition())
        response.headers["Content-Type"] = PROMETHEUS_TEXT
        return response


def _summary(template: TemplateStatusView, readable: Readable) -> str | None:
    """A failed template's error for a caller who is not root: a code, and the
    secret it is about only when the caller may read it. No paths, no text."""
    if template.last_error is None:
        return None
    cause = template.error_cause or "render_failed"
    secret = template.error_secret
    if secret is None:
        about = ""
    elif readable(secret):
        about = f" (secret {secret})"
    else:
        about = " (about a secret you may not read)"
    return f"render failed: {cause}{about}; details are shown to root"


def _when(moment: datetime | str | None) -> str | None:
    if isinstance(moment, datetime):
        return rfc3339(moment)
    return moment
