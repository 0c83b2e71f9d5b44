"""The parts of a rotation (docs/rotation.md): steps, roles and outcomes.

A rotation has four steps, each idempotent, so a run that stopped anywhere is
finished by running again:

    create   the rotator makes a new value; it is staged `pending` under a new
             rotation token (or an existing pending version is resumed)
    set      the rotator applies the pending value to its target (a database
             role's password, a command)
    test     the rotator tries the pending value (logs in with it)
    finish   the pending version becomes `current`; the old current `previous`
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from secretd.backends.rotatable import Pending
from secretd.model import SecretName, SecretValue, Version


class Step(StrEnum):
    CREATE = "create"
    SET = "set"
    TEST = "test"
    FINISH = "finish"


STEPS = (Step.CREATE, Step.SET, Step.TEST, Step.FINISH)


def steps_after(done: Step | None) -> tuple[Step, ...]:
    """The steps still to run once `done` (None: nothing) has been carried out."""
    if done is None:
        return STEPS
    return STEPS[STEPS.index(done) + 1 :]


@dataclass(frozen=True, slots=True)
class Context:
    """What a rotator may look at: the versions being served now."""

    name: SecretName
    current: Version
    previous: Version | None


class Rotator(Protocol):
    """Makes, applies and tries new values of one kind of secret."""

    kind: str
    # A superseded credential keeps working at least this long (seconds):
    # the engine holds `set` back until the current version is this old.
    grace: float

    async def create(self, context: Context) -> SecretValue:
        """A new value (the current one tells e.g. which database user is in use)."""
        ...

    async def set(self, context: Context, value: SecretValue) -> None:
        """Apply `value` to the target; idempotent. Raises RotationError."""
        ...

    async def test(self, context: Context, value: SecretValue) -> None:
        """Try `value`. Raises RotationTestFailed when it does not work."""
        ...


class Target(Protocol):
    """One secret on a writable backend, as the engine sees it."""

    async def current(self) -> Version: ...

    async def previous(self) -> Version | None: ...

    async def read_pending(self) -> Pending | None: ...

    async def stage_pending(self, value: SecretValue, token: str) -> Pending: ...

    async def promote_pending(self, pending: Pending) -> str:
        """Make it current; the id of the version now current."""
        ...

    async def drop_pending(self, pending: Pending) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one run ended (never a value)."""

    name: SecretName
    rotated: bool
    version_id: str | None  # the new current version, when rotated
    steps: tuple[Step, ...]  # the steps this run carried out
    resumed: bool  # it picked up a pending version left by an earlier run
    finished_at: datetime | None = None
