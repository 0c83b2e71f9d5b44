"""KV version 2 answers, read strictly: metadata, versions, stages and data.

Stages are computed from the metadata endpoint:

- `current`: the metadata's `current_version` (if that version is deleted or
  destroyed, the secret has no current value: not found);
- `previous`: the newest version below current that is neither deleted nor
  destroyed;
- custom labels, `pending` included: KV v2 has no stages, so a secret's
  `custom_metadata` may carry them as ``"stage:LABEL" = "VERSION"``
  (``bao kv metadata put -custom-metadata=stage:pending=7 secret/app``).
  `stage:current` and `stage:previous` are ignored: those two always follow
  KV's own versions.

KV v2 answers do not carry their path, so a data answer is bound to its
request by its version number and by the version's `created_time`, which must
equal the one the metadata answer listed for that version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from secretd.errors import BadBackendAnswer, NotFound
from secretd.model import CURRENT, PREVIOUS

STAGE_KEY_PREFIX = "stage:"
MAX_VERSION = 2**63 - 1


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One version as the metadata endpoint lists it."""

    created_time: str
    created_at: datetime
    deletion_time: datetime | None
    destroyed: bool

    def live(self, now: datetime) -> bool:
        """Neither destroyed nor (already) soft-deleted."""
        if self.destroyed:
            return False
        return self.deletion_time is None or self.deletion_time > now


@dataclass(frozen=True, slots=True)
class KvMetadata:
    """The metadata of one KV v2 secret."""

    current_version: int
    versions: Mapping[int, VersionInfo]
    custom_stages: Mapping[str, int]

    def is_live(self, version: int, now: datetime) -> bool:
        info = self.versions.get(version)
        return info is not None and info.live(now)

    def live_current(self, now: datetime) -> int | None:
        """The current version, or None when it is deleted/destroyed (or there is none)."""
        if self.current_version > 0 and self.is_live(self.current_version, now):
            return self.current_version
        return None

    def previous_version(self, now: datetime) -> int | None:
        older = [v for v in self.versions if v < self.current_version and self.is_live(v, now)]
        return max(older, default=None)

    def resolve_stage(self, stage: str, now: datetime) -> int | None:
        if stage == CURRENT:
            return self.live_current(now)
        if stage == PREVIOUS:
            return self.previous_version(now)
        version = self.custom_stages.get(stage)
        if version is None or not self.is_live(version, now):
            return None
        return version

    def stages_of(self, version: int, now: datetime) -> frozenset[str]:
        stages = {label for label, v in self.custom_stages.items() if v == version}
        if version == self.live_current(now):
            stages.add(CURRENT)
        if version == self.previous_version(now):
            stages.add(PREVIOUS)
        return frozenset(stages)


def parse_version_id(version_id: str) -> int | None:
    """A KV version number from our version id, or None when it cannot be one."""
    if not version_id.isascii() or not version_id.isdigit() or len(version_id) > 19:
        return None
    number = int(version_id)
    return number if 1 <= number <= MAX_VERSION else None


def parse_metadata(body: Mapping[str, Any], *, where: str) -> KvMetadata:
    """The `data` of a GET {kv}/metadata/{path} answer."""
    data = _object(body.get("data"), where, "data")
    current = _version_number(data.get("current_version"), where, "data.current_version")
    raw_versions = _object(data.get("versions"), where, "data.versions")
    versions: dict[int, VersionInfo] = {}
    for key, entry in raw_versions.items():
        number = parse_version_id(key)
        if number is None:
            raise BadBackendAnswer(f"{where}: data.versions has a key that is not a version")
        versions[number] = _version_info(_object(entry, where, "data.versions[]"), where)
    if current > 0 and current not in versions:
        raise BadBackendAnswer(f"{where}: current_version {current} is not among the versions")
    return KvMetadata(current, versions, _custom_stages(data.get("custom_metadata"), where))


def parse_data(
    body: Mapping[str, Any],
    *,
    requested: int,
    listed: VersionInfo,
    now: datetime,
    where: str,
) -> bytes:
    """The value (the KV map as compact JSON) of a GET {kv}/data/{path}?version=N answer.

    Raises NotFound when that version is deleted or destroyed, and
    BadBackendAnswer when the answer is for another version than requested.
    """
    data = _object(body.get("data"), where, "data")
    meta = _object(data.get("metadata"), where, "data.metadata")
    got = _version_number(meta.get("version"), where, "data.metadata.version")
    if got != requested:
        raise BadBackendAnswer(f"{where}: asked for version {requested}, answer is version {got}")
    info = _version_info(meta, where)
    if info.created_time != listed.created_time:
        raise BadBackendAnswer(
            f"{where}: version {requested}'s created_time differs from its metadata"
        )
    if not info.live(now) or data.get("data") is None:
        raise NotFound(f"{where}: version {requested} is deleted or destroyed")
    kv = _object(data.get("data"), where, "data.data")
    return orjson.dumps(kv)


def _version_info(entry: Mapping[str, Any], where: str) -> VersionInfo:
    created = entry.get("created_time")
    if not isinstance(created, str):
        raise BadBackendAnswer(f"{where}: a version has no created_time")
    deletion = entry.get("deletion_time", "")
    if not isinstance(deletion, str):
        raise BadBackendAnswer(f"{where}: a version's deletion_time is not a string")
    destroyed = entry.get("destroyed", False)
    if not isinstance(destroyed, bool):
        raise BadBackendAnswer(f"{where}: a version's destroyed flag is not a boolean")
    return VersionInfo(
        created_time=created,
        created_at=_timestamp(created, where),
        deletion_time=_timestamp(deletion, where) if deletion else None,
        destroyed=destroyed,
    )


def _custom_stages(raw: Any, where: str) -> dict[str, int]:
    if raw is None:
        return {}
    meta = _object(raw, where, "data.custom_metadata")
    stages: dict[str, int] = {}
    for key, value in meta.items():
        if not key.startswith(STAGE_KEY_PREFIX):
            continue
        label = key[len(STAGE_KEY_PREFIX) :]
        number = parse_version_id(value) if isinstance(value, str) else None
        if not label or label in (CURRENT, PREVIOUS) or number is None:
            continue  # operator metadata we cannot use; KV's own stages stay authoritative
        stages[label] = number
    return stages


def _timestamp(text: str, where: str) -> datetime:
    """Go's RFC 3339 (nanoseconds allowed; Python keeps microseconds)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadBackendAnswer(f"{where}: a timestamp is not RFC 3339") from None
    if moment.tzinfo is None:
        raise BadBackendAnswer(f"{where}: a timestamp has no time zone")
    return moment.astimezone(UTC)


def _version_number(raw: Any, where: str, key: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_VERSION:
        raise BadBackendAnswer(f"{where}: {key} is not a version number")
    return raw


def _object(raw: Any, where: str, key: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadBackendAnswer(f"{where}: {key} is not a JSON object")
    return raw
