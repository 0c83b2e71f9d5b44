"""The agent's rotation task: run each [[rotation]] when it falls due.

A secret is due `every` after its last rotation (recorded in the state dir,
so a restart does not rotate everything again; for a secret never rotated
here, after its current version was created), plus a fixed per-secret offset
drawn once from [0, jitter). A rotation that failed, or that stopped with a
pending version, is retried after 1 minute, doubling to at most 1 hour (never
later than `every`). Due rotations run one at a time; `rotate_now` (the API)
runs one at once, and a busy lock (another process rotating) is retried after
`BUSY_RETRY` seconds. After a rotation the agent's cache is told to read the
secret again (`refresh`), so remote backends' new values are served at once.

`status()` says, per secret, when it was last rotated, how that went and when
it is next due - for /v1/rotation, health and `secretd status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from secretd.clock import Clock
from secretd.config.rotation import RotationBase
from secretd.errors import SecretdError
from secretd.model import Caller, SecretName
from secretd.rotation.engine import Rotation
from secretd.rotation.errors import NotRotated, RotationBusy
from secretd.rotation.model import Outcome
from secretd.rotation.state import StateDir

log = structlog.get_logger(__name__)

RETRY_FIRST = 60.0
RETRY_MAX = 3600.0
BUSY_RETRY = 30.0
MAX_SLEEP = 3600.0  # wake at least this often (wall-clock jumps, state written by others)

Refresh = Callable[[SecretName], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class RotationStatus:
    """One rotated secret as status shows it (never a value)."""

    name: SecretName
    rotator: str
    every: float
    last_rotated_at: datetime | None
    last_result: str | None
    last_error: str | None
    failures: int
    next_at: datetime | None
    running: bool


class Scheduler:
    """Runs due rotations; answers `rotate_now` and `status`."""

    def __init__(
        self,
        rotations: Mapping[SecretName, Rotation],
        entries: Mapping[SecretName, RotationBase],
        *,
        state: StateDir,
        clock: Clock,
        rng: random.Random,
        refresh: Refresh | None = None,
    ) -> None:
        self._rotations = dict(rotations)
        self._refresh = refresh
        self._entries = dict(entries)
        self._state = state
        self._clock = clock
        self._offsets = {name: rng.uniform(0, entries[name].spread) for name in rotations}
        self._created: dict[SecretName, datetime] = {}
        self._hold: dict[SecretName, datetime] = {}
        self._next: dict[SecretName, datetime] = {}
        self._running: set[SecretName] = set()
        self._wake = asyncio.Event()

    @property
    def names(self) -> list[SecretName]:
        return list(self._rotations)

    async def run(self) -> None:
        """Forever: sleep until the earliest due rotation, run it."""
        if not self._rotations:
            return
        while True:
            name, due = await self._earliest()
            delay = (due - self._clock.now()).total_seconds()
            if delay > 0:
                await self._sleep(min(delay, MAX_SLEEP))
                continue
            await self._run_due(name)

    async def rotate_now(
        self, name: SecretName, *, caller: Caller | None = None, fresh: bool = False
    ) -> Outcome:
        """Rotate `name` now (the API and `secretd rotate`)."""
        rotation = self._rotations.get(name)
        if rotation is None:
            raise NotRotated(f"no [[rotation]] entry rotates secret {name!r}")
        self._running.add(name)
        try:
            outcome = await rotation.run(caller=caller, fresh=fresh)
        finally:
            self._running.discard(name)
            self._wake.set()
        await self._refreshed(name)
        return outcome

    async def _refreshed(self, name: SecretName) -> None:
        """Have the agent's cache read the new current now, so long-polls,
        templates and `exec` children get it at once, not at the next check."""
        if self._refresh is None:
            return
        try:
            await self._refresh(name)
        except SecretdError as exc:
            log.warning("rotation.refresh_failed", secret=name, error=exc.message)

    def status(self) -> list[RotationStatus]:
        rows = []
        for name, rotation in self._rotations.items():
            state = self._state.load(name)
            rows.append(
                RotationStatus(
                    name=name,
                    rotator=rotation.rotator.kind,
                    every=self._entries[name].every,
                    last_rotated_at=state.last_rotated_at,
                    last_result=state.last_result,
                    last_error=state.last_error,
                    failures=state.failures,
                    next_at=self._next.get(name),
                    running=name in self._running,
                )
            )
        return rows

    async def _earliest(self) -> tuple[SecretName, datetime]:
        for name in self._rotations:
            self._next[name] = await self._due(name)
        return min(self._next.items(), key=lambda item: item[1])

    async def _due(self, name: SecretName) -> datetime:
        state = self._state.load(name)
        every = self._entries[name].every
        if state.token is not None or state.last_result == "failed":
            retry = min(RETRY_FIRST * 2 ** max(0, state.failures - 1), RETRY_MAX, every)
            due = (state.last_attempt_at or self._clock.now()) + timedelta(seconds=retry)
        else:
            base = state.last_rotated_at or await self._created_at(name)
            due = base + timedelta(seconds=every + self._offsets[name])
        hold = self._hold.get(name)
        return max(due, hold) if hold is not None else due

    async def _created_at(self, name: SecretName) -> datetime:
        known = self._created.get(name)
        if known is None:
            try:
                known = await self._rotations[name].current_created_at()
            except SecretdError as exc:
                # Cannot tell how old it is: look again later rather than rotate blind.
                log.warning("rotation.schedule_unknown", secret=name, error=exc.message)
                self._hold[name] = self._clock.now() + timedelta(seconds=RETRY_FIRST)
                return self._clock.now()
            self._created[name] = known
        return known

    async def _run_due(self, name: SecretName) -> None:
        self._hold.pop(name, None)
        now = self._clock.now()
        try:
            await self.rotate_now(name)
        except RotationBusy:
            self._hold[name] = now + timedelta(seconds=BUSY_RETRY)
        except SecretdError as exc:
            # The engine records a failed step (state, audit, metrics) and so
            # backs off; a failure before it could record (an unwritable state
            # dir) must not make the schedule spin either.
            log.warning("rotation.run_failed", secret=name, error=exc.message)
            retry = min(RETRY_FIRST, self._entries[name].every)
            self._hold[name] = now + timedelta(seconds=retry)
        self._created.pop(name, None)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, or less when `rotate_now` (or a stop) wakes us."""
        self._wake.clear()
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
