"""The Vault / OpenBao KV v2 write side for rotation (backends/rotatable.py).

KV v2 has no stages: every write to a path becomes its current version at
once. So a pending value cannot be a version of the secret itself without
switching every reader to it before `test` has run. secretd therefore keeps
the pending value beside the secret, at a staging path, and uses KV's
check-and-set for the single-writer rule:

    staging path   {kv}/data/secretd-pending/<path>
                   {"token": <rotation token>, "base": "<current version>",
                    "value": {<the new KV map>}}
    stage          written with cas=0: only when no rotation of the secret is
                   staged, so of two hosts only one stages; the other finds
                   the staged one and resumes it
    promote        the new map written to the secret with cas=<base>: it
                   becomes the next version (the old current becomes previous,
                   as KV's versions always do) only if nobody wrote in
                   between; then the staging path is deleted
                   (DELETE {kv}/metadata/secretd-pending/<path>)

A promotion that already happened (a crash before the staging path was
deleted) is recognised by the current map being the pending one. Readers of
the secret never see the pending value: `?stage=pending` of a rotating Vault
secret is not served (the staging path is a secret of its own,
`secretd-pending/<path>` under the same mount, if one needs to look).

The token needs, besides read on the secret: create/update on
`{kv}/data/<path>`, and create/read/update on `{kv}/data/secretd-pending/*`
plus delete on `{kv}/metadata/secretd-pending/*` (docs/rotation.md).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from secretd.backends.rotatable import Pending
from secretd.backends.vault import VaultBackend
from secretd.backends.vault_http import Reply
from secretd.errors import (
    BackendAuthError,
    BackendUnavailable,
    BadBackendAnswer,
    Conflict,
    UsageError,
)
from secretd.model import SecretName, SecretValue

STAGING_PREFIX = "secretd-pending"


class VaultStager:
    """A `Stager` over one VaultBackend's HTTP client and token."""

    def __init__(self, backend: VaultBackend) -> None:
        # The backend's own transport, token keeper and paths: writes share
        # its connection pool, retries, namespace and error mapping.
        self._backend = backend
        self._http = backend._http
        self._keeper = backend._keeper
        self._kv = backend._kv

    async def read_pending(self, name: SecretName) -> Pending | None:
        path = self._staging(name, "data")
        reply = await self._send("GET", path)
        if reply.status == 404:
            return None
        body = self._ok(reply, path)
        return _staged(body, where=self._http.where(path))

    async def stage_pending(self, name: SecretName, value: SecretValue, token: str) -> Pending:
        kv_map = _kv_map(value, name)
        base = str((await self._backend._metadata(name)).current_version)
        path = self._staging(name, "data")
        document = {"token": token, "base": base, "value": kv_map}
        reply = await self._send("POST", path, {"options": {"cas": 0}, "data": document})
        if _cas_failed(reply):
            found = await self.read_pending(name)
            if found is not None and found.token == token:
                return found  # our own earlier attempt
            raise Conflict(f"vault secret {name!r}: another rotation is staged")
        self._ok(reply, path)
        return Pending(token, token, SecretValue(orjson.dumps(kv_map)), base)

    async def promote_pending(self, name: SecretName, pending: Pending) -> str:
        meta = await self._backend._metadata(name)
        current = str(meta.current_version)
        if pending.base_version is None or current != pending.base_version:
            done = await self._already_current(name, pending)
            if done is None:
                raise Conflict(
                    f"vault secret {name!r} was written (version {current}) since the rotation "
                    "began; its pending value was not promoted"
                )
            await self.drop_pending(name, pending)
            return done
        path = self._backend._path("data", name)
        kv_map = orjson.loads(pending.value.reveal())
        reply = await self._send(
            "POST", path, {"options": {"cas": int(pending.base_version)}, "data": kv_map}
        )
        if _cas_failed(reply):
            return await self.promote_pending(name, pending)  # someone won: theirs or ours?
        body = self._ok(reply, path)
        version = _written_version(body, self._http.where(path))
        await self.drop_pending(name, pending)
        return str(version)

    async def drop_pending(self, name: SecretName, pending: Pending) -> None:
        found = await self.read_pending(name)
        if found is None or found.token != pending.token:
            return  # gone already, or another rotation's: not ours to delete
        path = self._staging(name, "metadata")
        reply = await self._send("DELETE", path)
        if reply.status not in (200, 204, 404):
            self._ok(reply, path)

    async def _already_current(self, name: SecretName, pending: Pending) -> str | None:
        """The current version's id if it holds the pending map, else None."""
        fetched = await self._backend.fetch(name)
        same = orjson.loads(fetched.version.value.reveal()) == orjson.loads(pending.value.reveal())
        return fetched.version.version_id if same else None

    def _staging(self, name: SecretName, kind: str) -> str:
        return f"{self._kv}/{kind}/{STAGING_PREFIX}/{quote(name, safe='/')}"

    async def _send(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Reply:
        """One request with the backend's token; one recovery after a 401/403."""
        token = await self._keeper.token()
        reply = await self._http.send(method, path, token=token, payload=payload)
        if reply.status not in (401, 403):
            return reply
        retry_with = await self._keeper.recover(token)
        if retry_with is not None:
            reply = await self._http.send(method, path, token=retry_with, payload=payload)
            if reply.status not in (401, 403):
                return reply
        raise BackendAuthError(f"{self._http.where(path)}: permission denied (writing)")

    def _ok(self, reply: Reply, path: str) -> dict[str, Any]:
        where = self._http.where(path)
        if reply.status in (200, 204) and reply.body is not None:
            return reply.body
        if reply.status == 429 or reply.status >= 500:
            raise BackendUnavailable(f"{where}: answered {reply.status} (after retries)")
        raise BadBackendAnswer(f"{where}: unexpected answer {reply.status}")


def _kv_map(value: SecretValue, name: SecretName) -> dict[str, Any]:
    text = value.text()
    try:
        doc = orjson.loads(text) if text is not None else None
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise UsageError(
            f"vault secret {name!r}: a KV value is a JSON object; rotate a `field` of it"
        )
    return doc


def _cas_failed(reply: Reply) -> bool:
    """KV's answer to a check-and-set that did not match (400 with its message)."""
    if reply.status != 400 or reply.body is None:
        return False
    errors = reply.body.get("errors")
    return isinstance(errors, list) and any("check-and-set" in str(e) for e in errors)


def _staged(body: dict[str, Any], *, where: str) -> Pending:
    data = body.get("data")
    doc = data.get("data") if isinstance(data, dict) else None
    if not isinstance(doc, dict):
        raise BadBackendAnswer(f"{where}: the staged rotation has no data")
    token, base, value = doc.get("token"), doc.get("base"), doc.get("value")
    if not isinstance(token, str) or not isinstance(base, str) or not isinstance(value, dict):
        raise BadBackendAnswer(f"{where}: the staged rotation is malformed")
    return Pending(token, token, SecretValue(orjson.dumps(value)), base)


def _written_version(body: dict[str, Any], where: str) -> int:
    data = body.get("data")
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BadBackendAnswer(f"{where}: the write answered no version")
    return version
