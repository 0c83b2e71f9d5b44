"""Version and stage rules (docs/reference/http-api.md), as pure functions over `SecretRecord`.

- Exactly one version is `current`. When another becomes current, the old
  current becomes `previous` and the old previous loses that stage.
- A stage label sits on at most one version; putting it on a new version moves it.
- `put` makes the new version current, unless its stage is `pending`; a custom
  label goes on the new version, which also becomes current.
- `promote` makes a version current (and takes `pending` off it).
- Rotation (docs/rotation.md) stages one `pending` version at a time, its id
  being the rotation's token: `stage_pending` refuses a second token while
  one is pending, `finish_pending` promotes only the version still pending (or
  answers "already done"), `drop_pending` takes the label off.
- History is bounded: every version holding a stage is kept, plus the
  `MAX_UNSTAGED_VERSIONS` newest holding none; older ones are dropped, and with
  them their wrapped data keys.
"""

from __future__ import annotations

from datetime import datetime

from secretd.errors import Conflict, NotFound, UsageError
from secretd.model import CURRENT, PENDING, PREVIOUS, SecretName
from secretd.store.format import STAGE_LABEL, SealedVersion, SecretRecord

MAX_UNSTAGED_VERSIONS = 10
MAX_CUSTOM_STAGES = 16


def check_put_stage(stage: str | None) -> str | None:
    """Validate `--stage`: None/current, pending, or a custom label (not previous)."""
    if stage is None or stage == CURRENT:
        return None
    if stage == PREVIOUS:
        raise UsageError("'previous' is set automatically; put a version as current or pending")
    if STAGE_LABEL.fullmatch(stage) is None:
        raise UsageError("a stage label is 1-64 characters of A-Z a-z 0-9 _ . -")
    return stage


def add_version(
    record: SecretRecord | None, name: SecretName, new: SealedVersion, stage: str | None
) -> SecretRecord:
    """`record` with `new` added under `stage` (already checked by check_put_stage)."""
    if record is None:
        if stage == PENDING:
            raise UsageError(
                f"secret {name!r} has no versions yet; its first version must be current"
            )
        stages = (
            {CURRENT: new.version_id}
            if stage is None
            else {CURRENT: new.version_id, stage: new.version_id}
        )
        return SecretRecord(name, first_generation(new.created_at), (new,), stages)
    if record.version(new.version_id) is not None:
        raise UsageError(f"secret {name!r} already has version {new.version_id}")
    stages = dict(record.stages)
    if stage is not None:
        custom = {s for s in stages if s not in (CURRENT, PREVIOUS, PENDING)}
        if stage not in stages and stage != PENDING and len(custom) >= MAX_CUSTOM_STAGES:
            raise UsageError(f"secret {name!r} already has {MAX_CUSTOM_STAGES} custom stages")
        stages[stage] = new.version_id
    if stage != PENDING:
        _make_current(stages, new.version_id)
    grown = SecretRecord(name, record.generation + 1, (*record.versions, new), stages)
    return prune(grown)


def first_generation(created_at: datetime) -> int:
    """A new record's generation: its creation time in milliseconds, not 1. A
    name deleted (`secretd store delete`) and put again then starts above every
    generation it had before, so an agent that served the old record accepts
    the new one instead of calling it a rollback."""
    return max(1, int(created_at.timestamp() * 1000))


def promote(record: SecretRecord, version_id: str) -> SecretRecord:
    """`record` with `version_id` current. Unchanged (same generation) if it already is."""
    if record.version(version_id) is None:
        raise NotFound(f"secret {record.name!r} has no version {version_id!r}")
    if record.stages[CURRENT] == version_id:
        return record
    stages = dict(record.stages)
    _make_current(stages, version_id)
    if stages.get(PENDING) == version_id:
        del stages[PENDING]
    return prune(SecretRecord(record.name, record.generation + 1, record.versions, stages))


def _make_current(stages: dict[str, str], version_id: str) -> None:
    old = stages.get(CURRENT)
    if old is not None and old != version_id:
        stages[PREVIOUS] = old
    stages[CURRENT] = version_id


def prune(record: SecretRecord) -> SecretRecord:
    """Drop unstaged versions beyond the newest MAX_UNSTAGED_VERSIONS."""
    staged = set(record.stages.values())
    unstaged = [v.version_id for v in record.versions if v.version_id not in staged]
    drop = set(unstaged[: max(0, len(unstaged) - MAX_UNSTAGED_VERSIONS)])
    if not drop:
        return record
    kept = tuple(v for v in record.versions if v.version_id not in drop)
    return SecretRecord(record.name, record.generation, kept, dict(record.stages))


def stage_pending(
    record: SecretRecord | None, name: SecretName, new: SealedVersion
) -> SecretRecord:
    """`record` with `new` staged as pending. Unchanged when `new`'s id already is
    the pending one (a retry); Conflict when another version is pending."""
    if record is None:
        raise NotFound(f"secret {name!r} is not in the store; put its first version first")
    held = record.stages.get(PENDING)
    if held == new.version_id:
        return record
    if held is not None and held != record.stages[CURRENT]:
        raise Conflict(f"secret {name!r} already has a pending version ({held})")
    if record.version(new.version_id) is not None:
        raise Conflict(f"secret {name!r} already has a version {new.version_id!r}")
    stages = dict(record.stages)
    stages[PENDING] = new.version_id
    grown = SecretRecord(name, record.generation + 1, (*record.versions, new), stages)
    return prune(grown)


def finish_pending(record: SecretRecord, version_id: str) -> SecretRecord:
    """`record` with pending `version_id` made current. Unchanged when it already
    is current (a retry); Conflict when it is no longer the pending version."""
    if record.stages[CURRENT] == version_id:
        if record.stages.get(PENDING) != version_id:
            return record
        stages = dict(record.stages)
        del stages[PENDING]
        return SecretRecord(record.name, record.generation + 1, record.versions, stages)
    if record.stages.get(PENDING) != version_id:
        raise Conflict(f"secret {record.name!r}: version {version_id} is no longer pending")
    return promote(record, version_id)


def drop_pending(record: SecretRecord, version_id: str) -> SecretRecord:
    """`record` without the pending label on `version_id` (unchanged if it has none)."""
    if record.stages.get(PENDING) != version_id:
        return record
    stages = dict(record.stages)
    del stages[PENDING]
    return prune(SecretRecord(record.name, record.generation + 1, record.versions, stages))
