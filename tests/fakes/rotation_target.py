"""Real in-memory implementations of the rotation roles (secretd.rotation.model),
for tests of the step state machine without a backend or a database.

`MemoryTarget` keeps versions with current / previous / pending as the file
store does (one pending at a time, promoted only while still pending), and
lets a test play "another host": `stage_behind_our_back()` stages a rival
pending value between our read and our write.

`RecordingRotator` makes values "v1", "v2", ..., applies them to a
`FakeService` (the thing whose password changes) and tests them against it;
`fail_at` makes one step fail, `block_at` parks a step until released.

`MemoryRig` puts them together for one secret on a `FakeClock`; `backend_rotation`
and `start_blocked` rotate a real backend's secret instead.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from secretd.backends.base import Backend
from secretd.backends.rotatable import Pending, stager_for
from secretd.clock import SystemClock
from secretd.errors import BackendUnavailable, Conflict
from secretd.model import CURRENT, PENDING, PREVIOUS, SecretName, SecretValue, Version
from secretd.rotation.engine import Checkpoint, Rotation, new_token
from secretd.rotation.errors import RotationError, RotationTestFailed
from secretd.rotation.journal import Journal
from secretd.rotation.model import Context, Outcome
from secretd.rotation.state import StateDir
from secretd.rotation.target import BackendTarget
from tests.fakes.fake_clock import FakeClock


@dataclass
class _Stored:
    version_id: str
    value: bytes
    created_at: datetime


@dataclass
class MemoryTarget:
    """One secret with versions and stages; a `Target`."""

    versions: dict[str, _Stored] = field(default_factory=dict)
    stages: dict[str, str] = field(default_factory=dict)
    now: datetime = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    writes: list[str] = field(default_factory=list)
    rival: bytes | None = None  # staged by "another host" at our next stage_pending
    promote_failures: int = 0  # the next promotions that fail as an outage would

    @classmethod
    def with_value(cls, value: bytes, *, created_at: datetime | None = None) -> MemoryTarget:
        target = cls()
        when = created_at or target.now - timedelta(days=60)
        target.versions["v0"] = _Stored("v0", value, when)
        target.stages[CURRENT] = "v0"
        return target

    def value(self, stage: str = CURRENT) -> bytes | None:
        vid = self.stages.get(stage)
        return self.versions[vid].value if vid is not None else None

    def _version(self, vid: str) -> Version:
        stored = self.versions[vid]
        stages = frozenset(label for label, held in self.stages.items() if held == vid)
        return Version(vid, stages, stored.created_at, SecretValue(stored.value))

    async def current(self) -> Version:
        return self._version(self.stages[CURRENT])

    async def previous(self) -> Version | None:
        vid = self.stages.get(PREVIOUS)
        return self._version(vid) if vid is not None else None

    async def read_pending(self) -> Pending | None:
        vid = self.stages.get(PENDING)
        if vid is None or vid == self.stages[CURRENT]:
            return None
        return Pending(vid, vid, SecretValue(self.versions[vid].value))

    def stage_behind_our_back(self, value: bytes) -> None:
        self.rival = value

    async def stage_pending(self, value: SecretValue, token: str) -> Pending:
        if self.rival is not None:
            rival, self.rival = self.rival, None
            await self.stage_pending(SecretValue(rival), "rival-token")
        held = self.stages.get(PENDING)
        if held == token:
            return Pending(token, token, value)
        if held is not None and held != self.stages[CURRENT]:
            raise Conflict(f"{held} is pending")
        self.versions[token] = _Stored(token, value.reveal(), self.now)
        self.stages[PENDING] = token
        self.writes.append(f"stage {token}")
        return Pending(token, token, value)

    async def promote_pending(self, pending: Pending) -> str:
        if self.promote_failures:
            self.promote_failures -= 1
            raise BackendUnavailable("the backend is down")
        if self.stages[CURRENT] == pending.version_id:
            return pending.version_id
        if self.stages.get(PENDING) != pending.version_id:
            raise Conflict("no longer pending")
        self.stages[PREVIOUS] = self.stages[CURRENT]
        self.stages[CURRENT] = pending.version_id
        del self.stages[PENDING]
        self.writes.append(f"promote {pending.version_id}")
        return pending.version_id

    async def drop_pending(self, pending: Pending) -> None:
        if self.stages.get(PENDING) == pending.version_id:
            del self.stages[PENDING]
            self.writes.append(f"drop {pending.version_id}")


@dataclass
class FakeService:
    """What a rotator changes: it accepts exactly one password at a time."""

    password: bytes = b"v0"
    refuse_logins: bool = False

    def log_in(self, password: bytes) -> bool:
        return not self.refuse_logins and password == self.password


class RecordingRotator:
    """A `Rotator` over a FakeService, recording every call as (step, value)."""

    kind = "fake"

    def __init__(
        self, service: FakeService, *, grace: float = 0.0, prefix: str = "v", as_json: bool = False
    ) -> None:
        self.service = service
        self.grace = grace
        self.prefix = prefix
        self.as_json = as_json  # {"key": "v1"}: what a KV (Vault) secret can hold
        self.calls: list[tuple[str, bytes]] = []
        self.fail_at: str | None = None
        self.block_at: str | None = None
        self.unblock = asyncio.Event()
        self.blocked = asyncio.Event()
        self._numbers = itertools.count(1)

    async def _step(self, step: str, value: bytes) -> None:
        self.calls.append((step, value))
        if self.block_at == step:
            self.blocked.set()
            await self.unblock.wait()
        if self.fail_at == step:
            if step == "test":
                raise RotationTestFailed("the service refused the new value")
            raise RotationError(f"{step} refused")

    async def create(self, context: Context) -> SecretValue:
        text = f"{self.prefix}{next(self._numbers)}"
        value = orjson.dumps({"key": text}) if self.as_json else text.encode()
        await self._step("create", value)
        return SecretValue(value)

    async def set(self, context: Context, value: SecretValue) -> None:
        await self._step("set", value.reveal())
        self.service.password = value.reveal()

    async def test(self, context: Context, value: SecretValue) -> None:
        await self._step("test", value.reveal())
        if not self.service.log_in(value.reveal()):
            raise RotationTestFailed("logging in with the new value failed")


class ListAudit:
    """An `AuditSink` keeping every line in memory."""

    def __init__(self) -> None:
        self.lines: list[dict[str, object]] = []

    def record(self, event: str, **fields: object) -> None:
        self.lines.append({"event": event, **fields})


class CountingMetrics:
    """A `RotationMetrics` that counts."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str]] = []
        self.rotations: list[str] = []

    def rotation_step(self, step: str, result: str) -> None:
        self.steps.append((step, result))

    def rotation(self, result: str) -> None:
        self.rotations.append(result)


def backend_rotation(
    backend: Backend, name: str, rotator: RecordingRotator, state_dir: Path
) -> tuple[Rotation, ListAudit]:
    """A Rotation of `name` on a real backend's write side; each state dir is one "host"."""
    stager = stager_for(backend)
    assert stager is not None
    audit = ListAudit()
    rotation = Rotation(
        SecretName(name),
        BackendTarget(backend, stager, SecretName(name)),
        rotator,
        state=StateDir(state_dir),
        journal=Journal(audit, CountingMetrics()),
        clock=SystemClock(),
        timeout=30.0,
    )
    return rotation, audit


async def start_blocked(
    backend: Backend, name: str, rotator: RecordingRotator, state_dir: Path, *, at: str
) -> tuple[asyncio.Task[Outcome], ListAudit]:
    """A rotation of `name` running until it is parked at step `at`; it goes on
    once `rotator.unblock` is set."""
    rotator.block_at = at
    rotation, audit = backend_rotation(backend, name, rotator, state_dir)
    running = asyncio.create_task(rotation.run())
    await asyncio.wait_for(rotator.blocked.wait(), 15)
    return running, audit


class MemoryRig:
    """One secret, `name`, in memory: its MemoryTarget (value b"v0", `age_days`
    old), the FakeService a RecordingRotator changes, a state dir, an audit and
    metrics that keep everything, all on one FakeClock."""

    def __init__(
        self, name: SecretName, state_dir: Path, *, age_days: float = 60, grace: float = 0.0
    ) -> None:
        self.name = name
        self.clock = FakeClock()
        created = self.clock.now() - timedelta(days=age_days)
        self.target = MemoryTarget.with_value(b"v0", created_at=created)
        self.service = FakeService()
        self.rotator = RecordingRotator(self.service, grace=grace)
        self.state = StateDir(state_dir)
        self.audit = ListAudit()
        self.metrics = CountingMetrics()

    def new_rotation(
        self, *, checkpoint: Checkpoint | None = None, token: Callable[[], str] = new_token
    ) -> Rotation:
        """A Rotation over this rig's parts (read when called: a test may swap them)."""
        return Rotation(
            self.name,
            self.target,
            self.rotator,
            state=self.state,
            journal=Journal(self.audit, self.metrics),
            clock=self.clock,
            timeout=30.0,
            checkpoint=checkpoint,
            token=token,
        )
