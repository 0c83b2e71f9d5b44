"""The rotation schedule (secretd.rotation.scheduler) on a fake clock: what is
due when, that a restart does not rotate again, jitter bounds, and backoff
after failures."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from secretd.config.rotation import RandomRotation
from secretd.model import CURRENT, SecretName
from secretd.rotation.errors import NotRotated
from secretd.rotation.scheduler import Scheduler
from secretd.rotation.state import RotationState, StateDir
from tests.fakes.fake_clock import FakeClock
from tests.fakes.rotation_target import MemoryRig

NAME = SecretName("svc/key")
DAY = 86400.0


class Rig(MemoryRig):
    """A MemoryRig of NAME, rotated every `every` by a Scheduler on its clock."""

    def __init__(self, tmp_path: Path, *, age_days: float, every: str = "30d") -> None:
        super().__init__(NAME, tmp_path, age_days=age_days)
        self.entry = RandomRotation(secret=NAME, rotator="random", every=every, jitter="1h")
        self.task: asyncio.Task[None] | None = None
        self.refreshed: list[SecretName] = []

    async def refresh(self, name: SecretName) -> None:
        self.refreshed.append(name)

    def scheduler(self, seed: int = 1) -> Scheduler:
        return Scheduler(
            {NAME: self.new_rotation()},
            {NAME: self.entry},
            state=self.state,
            clock=self.clock,
            rng=random.Random(seed),
            refresh=self.refresh,
        )

    async def start(self, scheduler: Scheduler) -> None:
        self.task = asyncio.create_task(scheduler.run())
        await self.clock.wait_for_sleepers(1)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self.task


class Rigs:
    """The rigs a test started; every one is stopped at its end."""

    def __init__(self) -> None:
        self.started: list[Rig] = []

    async def start(self, rig: Rig, seed: int = 1) -> Scheduler:
        """A new scheduler of `rig`, running until it first sleeps."""
        self.started.append(rig)
        scheduler = rig.scheduler(seed)
        await rig.start(scheduler)
        return scheduler


@pytest.fixture
async def rigs() -> AsyncIterator[Rigs]:
    made = Rigs()
    yield made
    for rig in made.started:
        await rig.stop()


async def test_a_secret_older_than_every_is_rotated_at_start(tmp_path: Path, rigs: Rigs) -> None:
    rig = Rig(tmp_path, age_days=45)
    scheduler = await rigs.start(rig)
    assert rig.target.value(CURRENT) == b"v1"
    [row] = scheduler.status()
    assert row.last_rotated_at == rig.clock.now() and row.last_result == "rotated"
    assert row.next_at is not None
    wait = (row.next_at - rig.clock.now()).total_seconds()
    assert 30 * DAY <= wait < 30 * DAY + 3600  # every + an offset within the jitter


async def test_a_young_secret_waits_for_its_age_to_reach_every(tmp_path: Path, rigs: Rigs) -> None:
    rig = Rig(tmp_path, age_days=10)
    scheduler = await rigs.start(rig)
    assert rig.target.value(CURRENT) == b"v0"
    [row] = scheduler.status()
    assert row.last_rotated_at is None and row.next_at is not None
    due_in = (row.next_at - rig.clock.now()).total_seconds()
    assert 20 * DAY <= due_in < 20 * DAY + 3600
    rig.clock.advance(due_in)
    await rig.clock.wait_for_sleepers(1)
    assert rig.target.value(CURRENT) == b"v1"


async def test_a_restart_does_not_rotate_again(tmp_path: Path, rigs: Rigs) -> None:
    first = Rig(tmp_path, age_days=45)
    await rigs.start(first, seed=1)
    await first.stop()
    assert first.target.value(CURRENT) == b"v1"

    # A new agent (new scheduler, other jitter) on the same state dir and secret.
    again = Rig(tmp_path, age_days=45)
    again.target = first.target
    again.clock = first.clock
    again.clock.advance(3600)
    scheduler = await rigs.start(again, seed=2)
    assert again.target.value(CURRENT) == b"v1"
    assert again.rotator.calls == []
    [row] = scheduler.status()
    assert row.next_at is not None and (row.next_at - again.clock.now()).total_seconds() > 29 * DAY


async def test_failures_are_retried_with_backoff_not_every(tmp_path: Path, rigs: Rigs) -> None:
    rig = Rig(tmp_path, age_days=45)
    rig.rotator.fail_at = "set"
    scheduler = await rigs.start(rig)
    [row] = scheduler.status()
    assert row.last_result == "failed" and row.failures == 1
    assert row.next_at == rig.clock.now() + timedelta(seconds=60)
    rig.clock.advance(60)
    await rig.clock.wait_for_sleepers(1)
    [row] = scheduler.status()
    assert row.failures == 2
    assert row.next_at == rig.clock.now() + timedelta(seconds=120)
    rig.rotator.fail_at = None
    rig.clock.advance(120)
    await rig.clock.wait_for_sleepers(1)
    [row] = scheduler.status()
    assert row.last_result == "rotated" and row.failures == 0
    assert rig.target.value(CURRENT) == b"v1"  # the pending value staged first, resumed


async def test_rotate_now_runs_at_once_and_refuses_unknown_names(
    tmp_path: Path, rigs: Rigs
) -> None:
    rig = Rig(tmp_path, age_days=1)
    scheduler = await rigs.start(rig)
    outcome = await scheduler.rotate_now(NAME)
    assert outcome.rotated and rig.target.value(CURRENT) == b"v1"
    assert rig.refreshed == [NAME]  # the agent's cache is told to read it again
    with pytest.raises(NotRotated):
        await scheduler.rotate_now(SecretName("other/secret"))
    await rig.clock.wait_for_sleepers(1)
    [row] = scheduler.status()
    assert row.next_at is not None and (row.next_at - rig.clock.now()).total_seconds() > 29 * DAY


async def test_an_unwritable_state_dir_does_not_make_the_schedule_spin(
    tmp_path: Path, rigs: Rigs
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    rig = Rig(blocker, age_days=45)  # <state_dir>/rotation cannot be created
    await rigs.start(rig)
    assert rig.rotator.calls == []
    assert rig.clock.slept[-1] == 60.0  # tried once, then waits: no busy loop
    rig.clock.advance(60)
    await rig.clock.wait_for_sleepers(1)
    assert len(rig.clock.slept) == 2


def test_state_files_round_trip_and_hold_no_value(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    clock = FakeClock()
    saved = RotationState().succeeded(clock.now())
    state.save(NAME, saved)
    assert state.load(NAME) == saved
    assert state.load(SecretName("never/seen")) == RotationState()
    [path] = (tmp_path / "rotation").glob("*.json")
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("{not json")
    assert state.load(NAME) == RotationState()  # unreadable state: start afresh, do not crash
