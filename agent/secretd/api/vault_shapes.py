"""The documents of the Vault-compatible API (docs/vault-api.md), as pure functions.

Everything here builds the JSON Vault and OpenBao answer with, key for key, so
unmodified clients (the `vault`/`bao` CLI, hvac, Vault/OpenBao Agent templates)
read secretd's cached values:

- `envelope`: the outer `{"request_id", "lease_id", "renewable",
  "lease_duration", "data", "wrap_info", "warnings", "auth"}`;
- `kv_data`: a value as KV v2 `data.data` (a JSON object as itself, other text
  as `{"value": ...}`, binary as `{"value_b64": ...}`);
- `version_number`: the integer `metadata.version` of a version (Vault's own
  number for Vault-backed secrets, else the creation time in milliseconds);
- `VaultResponse` and `vault_error`: answers with `Content-Type` exactly
  `application/json` (hvac reads `errors` only then).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from secretd.backends.vault_kv import parse_version_id
from secretd.model import CURRENT, PENDING, PREVIOUS, SecretValue, Version

Document = dict[str, Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STAGE_ORDER = {CURRENT: 0, PREVIOUS: 1, PENDING: 2}
_NO_STORE = {"Cache-Control": "no-store"}
PERMISSION_DENIED = "permission denied"


class VaultResponse(web.Response):
    """An answer already in Vault's shape: the error reshaping leaves it alone."""


def vault_json(document: Mapping[str, Any], *, status: int = 200) -> VaultResponse:
    return VaultResponse(
        status=status,
        body=orjson.dumps(document),
        content_type="application/json",
        headers=_NO_STORE,
    )


def vault_error(status: int, errors: Sequence[str] = ()) -> VaultResponse:
    """`{"errors": [...]}` as Vault sends it (404 carries an empty list)."""
    return vault_json({"errors": list(errors)}, status=status)


def go_time(moment: datetime) -> str:
    """Go's RFC 3339 with nanoseconds as Vault prints it: '2026-12-02T10:03:31.8929Z'."""
    utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    fraction = f"{utc.microsecond:06d}".rstrip("0")
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def created_millis(moment: datetime) -> int:
    """Milliseconds since the epoch (at least 1: Vault versions start at 1)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return max((aware - _EPOCH) // timedelta(milliseconds=1), 1)


def version_number(version: Version, *, kv_numbered: bool) -> int:
    """The `metadata.version` of `version`.

    A Vault/OpenBao backend's version id is KV's own number. The file store and
    AWS have opaque ids and keep only part of their history, so an ordinal
    would change as old versions are dropped; the creation time in
    milliseconds is stable (every agent, every restart) and grows with each
    new version.
    """
    if kv_numbered:
        number = parse_version_id(version.version_id)
        if number is not None:
            return number
    return created_millis(version.created_at)


def stage_list(stages: frozenset[str]) -> list[str]:
    return sorted(stages, key=lambda s: (_STAGE_ORDER.get(s, 3), s))


def kv_data(value: SecretValue) -> Document:
    """The KV v2 `data.data` for a value."""
    text = value.text()
    if text is None:
        return {"value_b64": value.b64()}
    if text.lstrip()[:1] == "{":  # only an object can be data.data; skip parsing the rest
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    return {"value": text}


def envelope(
    data: Any, *, lease_seconds: int = 0, warnings: Sequence[str] | None = None
) -> Document:
    """Vault's outer document around `data`."""
    return {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": lease_seconds,
        "data": data,
        "wrap_info": None,
        "warnings": list(warnings) if warnings else None,
        "auth": None,
    }


def version_metadata(version: Version, number: int) -> Document:
    """`data.metadata` of a read; secretd's own id and stages in `custom_metadata`."""
    return {
        "created_time": go_time(version.created_at),
        "custom_metadata": {
            "version_id": version.version_id,
            "stages": ",".join(stage_list(version.stages)),
        },
        "deletion_time": "",
        "destroyed": False,
        "version": number,
    }


def metadata_document(numbered: Mapping[int, Version], current: int) -> Document:
    """`data` of GET /v1/<mount>/metadata/<name>: the versions secretd can reach
    (those holding a stage), their times, never a value. `custom_metadata` maps
    each stage (`stage:LABEL`) and each version number (`version_id:N`) to
    secretd's names for them."""
    custom: dict[str, str] = {}
    for number, version in sorted(numbered.items()):
        custom[f"version_id:{number}"] = version.version_id
        for stage in stage_list(version.stages):
            custom[f"stage:{stage}"] = str(number)
    oldest = numbered[min(numbered)]
    return {
        "cas_required": False,
        "created_time": go_time(oldest.created_at),
        "current_version": current,
        "custom_metadata": custom,
        "delete_version_after": "0s",
        "max_versions": 0,
        "oldest_version": 0,
        "updated_time": go_time(numbered[current].created_at),
        "versions": {
            str(number): {
                "created_time": go_time(version.created_at),
                "deletion_time": "",
                "destroyed": False,
            }
            for number, version in sorted(numbered.items())
        },
    }


def mount_document(mount: str) -> Document:
    """`data` of the preflight GET /v1/sys/internal/ui/mounts/<path>: a KV v2 mount."""
    return {
        "path": f"{mount}/",
        "type": "kv",
        "options": {"version": "2"},
        "description": "secretd: cached secrets, read-only",
        "local": True,
        "seal_wrap": False,
        "external_entropy_access": False,
        "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": False},
    }


def health_document(*, ready: bool, now: datetime, version: str) -> Document:
    """GET /v1/sys/health of an initialised, active node (sealed while starting)."""
    return {
        "initialized": True,
        "sealed": not ready,
        "standby": False,
        "performance_standby": False,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": int(now.timestamp()),
        "version": version,
        "cluster_name": "secretd",
        "cluster_id": "",
    }


def seal_document(*, ready: bool, version: str) -> Document:
    """GET /v1/sys/seal-status (what `bao status` asks): unsealed once serving."""
    return {
        "type": "shamir",
        "initialized": True,
        "sealed": not ready,
        "t": 1,
        "n": 1,
        "progress": 0,
        "nonce": "",
        "recovery_seal": False,
        "version": version,
        "migration": False,
        "cluster_name": "secretd",
        "cluster_id": "",
        "storage_type": "secretd",
    }


def list_keys(names: Iterable[str], prefix: str) -> list[str]:
    """A KV list of `prefix` ("" or ending in "/"): the next segment of each name,
    with a trailing "/" where it is a folder, sorted and unique."""
    keys = set()
    for name in names:
        if name.startswith(prefix) and len(name) > len(prefix):
            head, slash, _ = name[len(prefix) :].partition("/")
            keys.add(head + slash)
    return sorted(keys)


def token_document(*, token: str, who: str, issued: datetime) -> Document:
    """`data` of GET /v1/auth/token/lookup-self: a token that never expires and
    cannot be renewed (what Vault/OpenBao Agent's `token_file` auto-auth needs)."""
    return {
        "accessor": f"secretd-{who}",
        "creation_time": int(issued.timestamp()),
        "creation_ttl": 0,
        "display_name": f"secretd-{who}",
        "entity_id": "",
        "expire_time": None,
        "explicit_max_ttl": 0,
        "id": token,
        "issue_time": go_time(issued),
        "meta": None,
        "num_uses": 0,
        "orphan": True,
        "path": "",
        "policies": ["secretd"],
        "renewable": False,
        "ttl": 0,
        "type": "service",
    }
