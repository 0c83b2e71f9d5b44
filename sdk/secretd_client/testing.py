"""Test helpers for applications that use secretd_client.

`StaticSecrets` is an httpx transport that answers the secretd API from an
in-memory dict, for both `Client` and `AsyncClient`, with no agent running::

    from secretd_client.testing import StaticSecrets

    secrets = StaticSecrets({"db/app": '{"password": "s3cret"}'})
    client = secrets.client()
    assert client.get("db/app", field="password").value == "s3cret"

    secrets.rotate("db/app", '{"password": "n3w"}')   # a watch sees it at once
    secrets.forbid("db/app")                           # now 403 Forbidden
    secrets.fail_next(2, "backend_unavailable")        # the next 2 requests fail

Rotation follows docs/reference/http-api.md: the new version becomes current and the old current
becomes previous. Long-polls (`watch`) wait for real, up to their `wait`,
and wake as soon as `rotate` is called from any thread.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import httpx

from secretd_client._client import AsyncClient, Client
from secretd_client._errors import InvalidName
from secretd_client._models import rfc3339
from secretd_client._wire import check_name

__all__ = ["StaticSecrets"]

_PARAMS = frozenset({"field", "stage", "version", "refresh", "wait", "index", "format"})
_STATUS = {"invalid_name": 400, "invalid_request": 400, "forbidden": 403, "not_found": 404,
           "rate_limited": 429, "backend_unavailable": 503, "backend_timeout": 504}  # fmt: skip
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass
class _Version:
    version_id: str
    value: bytes
    created_at: datetime
    stages: set[str] = field(default_factory=set)


class StaticSecrets(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """The secretd API served from memory (an httpx transport)."""

    def __init__(
        self, secrets: Mapping[str, str | bytes] | None = None, *, forbidden: Iterable[str] = ()
    ) -> None:
        self._changed = threading.Condition()
        self._versions: dict[str, list[_Version]] = {}
        self._forbidden = set(forbidden)
        self._failures: list[str] = []
        self.requests = 0  # how many requests were answered (for assertions)
        for name, value in (secrets or {}).items():
            self.rotate(name, value)

    # -- what a test changes -------------------------------------------------

    def rotate(self, name: str, value: str | bytes, *, stage: str = "current") -> str:
        """Add a version of `name`; it becomes current unless `stage` says otherwise.
        Returns the new version id."""
        check_name(name)
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        with self._changed:
            versions = self._versions.setdefault(name, [])
            new = _Version(f"v{len(versions) + 1}", data, datetime.now(UTC))
            if stage == "current":
                for old in versions:
                    old.stages.discard("previous")
                    if "current" in old.stages:
                        old.stages.discard("current")
                        old.stages.add("previous")
            new.stages.add(stage)
            versions.append(new)
            self._changed.notify_all()
            return new.version_id

    put = rotate

    def remove(self, name: str) -> None:
        with self._changed:
            self._versions.pop(name, None)
            self._changed.notify_all()

    def forbid(self, name: str) -> None:
        with self._changed:
            self._forbidden.add(name)

    def fail_next(self, count: int, code: str = "backend_unavailable") -> None:
        """The next `count` requests answer with this API error code."""
        with self._changed:
            self._failures.extend([code] * count)

    def client(self, **kwargs: Any) -> Client:
        return Client("static-secrets", transport=self, **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncClient:
        return AsyncClient("static-secrets", transport=self, **kwargs)

    # -- the transport ---------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        waiting = self._long_poll(request)
        if waiting is not None:
            name, index, seconds = waiting
            with self._changed:
                self._changed.wait_for(lambda: self._current_id(name) != index, seconds)
        return self.answer(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        waiting = self._long_poll(request)
        if waiting is not None:
            name, index, seconds = waiting
            deadline = time.monotonic() + seconds
            # `rotate` may run on any thread, so no asyncio.Event can carry the
            # wake-up; a short poll bounded by the deadline does.
            while self._current_id(name) == index and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        return self.answer(request)

    def answer(self, request: httpx.Request) -> httpx.Response:
        """The response to `request` as it stands now (no waiting)."""
        with self._changed:
            self.requests += 1
            if self._failures:
                return _error(self._failures.pop(0), "injected failure")
            if request.method != "GET":
                return _error("invalid_request", "only GET is allowed", 405)
            path = request.url.path
            if path == "/v1/health":
                return _json(self._health())
            if path == "/v1/secrets":
                return self._list(request)
            if path.startswith("/v1/secrets/"):
                return self._read(unquote(path[len("/v1/secrets/") :]), request)
            return _error("not_found", "no such route")

    # -- the routes ------------------------------------------------------------

    def _health(self) -> dict[str, Any]:
        now = rfc3339(datetime.now(UTC))
        return {
            "status": "ok",
            "backends": {"static": {"ok": True, "last_error": None, "last_success": now}},
            "cache": {"entries": len(self._versions), "stale": 0},
        }

    def _list(self, request: httpx.Request) -> httpx.Response:
        prefix = request.url.params.get("prefix", "")
        rows = []
        for name in sorted(self._versions):
            current = self._current(name)
            if name.startswith(prefix) and name not in self._forbidden and current:
                age = (datetime.now(UTC) - current.created_at).total_seconds()
                rows.append({"name": name, "version_id": current.version_id, "age_seconds": age})
        return _json({"secrets": rows})

    def _read(self, name: str, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        unknown = [key for key in params if key not in _PARAMS]
        repeated = [key for key in params if len(params.get_list(key)) > 1]
        if unknown or repeated:
            return _error("invalid_request", "unknown or repeated query parameter")
        try:
            check_name(name)
        except InvalidName as exc:
            return _error("invalid_name", exc.message)
        if name in self._forbidden:
            return _error("forbidden", f"access to {name} is not allowed")
        version = self._select(name, params.get("stage"), params.get("version"))
        if version is None:
            return _error("not_found", f"no secret {name} (or no such version)")
        value = version.value
        if "field" in params:
            picked = _field(value, params["field"])
            if picked is None:
                return _error("invalid_request", f"{name} has no field {params['field']}")
            value = picked
        if params.get("format") == "raw":
            return _raw(value)
        return _json(_secret_body(name, version, value))

    def _select(self, name: str, stage: str | None, version_id: str | None) -> _Version | None:
        for version in self._versions.get(name, []):
            if version_id is not None and version.version_id == version_id:
                return version
            if version_id is None and (stage or "current") in version.stages:
                return version
        return None

    def _current(self, name: str) -> _Version | None:
        return self._select(name, None, None)

    def _current_id(self, name: str) -> str | None:
        current = self._current(name)
        return current.version_id if current else None

    def _long_poll(self, request: httpx.Request) -> tuple[str, str, float] | None:
        params = request.url.params
        path = request.url.path
        if "wait" not in params or "index" not in params or not path.startswith("/v1/secrets/"):
            return None
        seconds = _seconds(params["wait"])
        if seconds is None:
            return None
        return unquote(path[len("/v1/secrets/") :]), params["index"], seconds


def _secret_body(name: str, version: _Version, value: bytes) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "version_id": version.version_id,
        "stages": sorted(version.stages),
        "created_at": rfc3339(version.created_at),
    }
    try:
        body["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        body["value_b64"] = base64.b64encode(value).decode("ascii")
    body["stale"] = False
    return body


def _field(value: bytes, name: str) -> bytes | None:
    try:
        obj = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(obj, dict) or name not in obj:
        return None
    item = obj[name]
    if isinstance(item, str):
        return item.encode("utf-8")
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _seconds(text: str) -> float | None:
    for unit in ("ms", "s", "m", "h"):
        number = text.removesuffix(unit)
        if number != text and number.replace(".", "", 1).isdigit():
            return float(number) * _UNITS[unit]
    return None


def _json(body: dict[str, Any], status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=body)


def _raw(value: bytes) -> httpx.Response:
    try:
        value.decode("utf-8")
        kind = "text/plain; charset=utf-8"
    except UnicodeDecodeError:
        kind = "application/octet-stream"
    return httpx.Response(200, content=value, headers={"content-type": kind})


def _error(code: str, message: str, status: int | None = None) -> httpx.Response:
    return _json({"error": {"code": code, "message": message}}, status or _STATUS.get(code, 500))
