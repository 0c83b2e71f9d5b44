"""The refresher: batched version checks, fetches only for moved versions, the
run loop on a fake clock, and survival of a failing pass."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence

from secretd.errors import BackendUnavailable
from secretd.events import Changed
from secretd.model import SecretName
from secretd.refresh.refresher import Refresher
from tests.fakes.cache_rig import make_rig
from tests.fakes.fake_clock import FakeClock


async def test_due_secrets_are_checked_in_batches_per_backend() -> None:
    rig = make_rig(refresh_interval="1m", mounts={"a": "", "b": "b/"})
    for i in range(250):
        rig.backends["a"].put(f"s{i}", "v")
        await rig.cache.read(SecretName(f"s{i}"))
    rig.backends["b"].put("x", "v")
    await rig.cache.read(SecretName("b/x"))
    refresher = rig.refresher(batch_size=100)
    rig.clock.advance(60)
    assert await refresher.poll_once() == 251
    assert rig.backends["a"].calls["versions"] == 3
    assert rig.backends["b"].calls["versions"] == 1
    assert rig.backends["a"].calls["fetch"] == 250  # only the initial loads
    assert await refresher.poll_once() == 0  # nothing is due twice


async def test_only_moved_versions_are_fetched() -> None:
    rig = make_rig(refresh_interval="1m")
    for name in ("a", "b", "c"):
        rig.backend.put(name, "v1")
        await rig.cache.read(SecretName(name))
    rig.backend.put("b", "v2")
    async with rig.hub.subscribe() as sub:
        rig.clock.advance(60)
        await rig.refresher().poll_once()
        assert sub.drain() == [Changed(SecretName("b"), "4")]
    assert rig.backend.fetches == {"a": 1, "b": 2, "c": 1}


async def test_a_secret_missing_from_a_version_check_is_confirmed_by_fetch_then_removed() -> None:
    rig = make_rig(refresh_interval="1m")
    rig.backend.put("gone", "v")
    await rig.cache.read(SecretName("gone"))
    rig.backend.delete("gone")
    rig.clock.advance(60)
    await rig.refresher().poll_once()
    assert rig.cache.snapshot() == []
    assert rig.backend.fetches["gone"] == 2


async def test_the_run_loop_sleeps_until_due_and_refreshes_on_its_own() -> None:
    rig = make_rig(refresh_interval="1m", idle_evict="1h")
    rig.backend.put("a", "v1")
    await rig.cache.read(SecretName("a"))
    # No watch here (the memory backend would announce the put at once): polling only.
    runner = asyncio.create_task(rig.refresher(watchables={}).run())
    try:
        await rig.clock.wait_for_sleepers(2)  # the poll and evict loops
        rig.backend.put("a", "v2")
        async with rig.hub.subscribe() as sub:
            for _ in range(10):  # at most 10 passes of at most 30 s each
                await rig.clock.advance_settled(30)
                if sub.drain():
                    break
        assert (await rig.cache.read(SecretName("a"))).version.version_id == "2"
        assert 48.0 <= rig.clock.monotonic() - 1000.0 <= 90.0
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_the_run_loop_watches_watchable_backends() -> None:
    rig = make_rig()
    rig.backend.put("a", "v1")
    await rig.cache.read(SecretName("a"))
    runner = asyncio.create_task(rig.run_loops())
    try:
        await rig.clock.settle()
        assert rig.backend.watchers == 1
        async with rig.hub.subscribe() as sub:
            rig.backend.put("a", "v2")
            await rig.clock.settle()
            assert sub.drain() == [Changed(SecretName("a"), "2")]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert rig.backend.watchers == 0


async def test_a_version_check_failure_marks_each_secret_of_the_batch() -> None:
    rig = make_rig(refresh_interval="1m")
    for name in ("a", "b"):
        rig.backend.put(name, "v")
        await rig.cache.read(SecretName(name))
    rig.backend.fail_next(BackendUnavailable("down"))
    rig.clock.advance(60)
    await rig.refresher().poll_once()
    assert [i.stale for i in rig.cache.snapshot()] == [True, True]
    assert rig.backend.calls["versions"] == 1
    assert rig.backend.calls["fetch"] == 2  # no fetch storm after a failed check


class _ExplodingTarget:
    """A RefreshTarget whose check() raises: the loop must keep going."""

    def __init__(self) -> None:
        self.checks = 0
        self.due_at = 0.0

    def next_check_at(self) -> float | None:
        return self.due_at

    def due_checks(self, now: float) -> Mapping[str, Sequence[SecretName]]:
        return {"m": [SecretName("a")]} if now >= self.due_at else {}

    async def check(self, backend: str, names: Sequence[SecretName]) -> None:
        self.checks += 1
        self.due_at += 10
        raise RuntimeError("bug")

    async def on_change(self, backend: str, stripped: str) -> None:
        raise RuntimeError("bug")

    def evict_idle(self) -> int:
        return 0


async def test_the_poll_loop_survives_a_failing_pass() -> None:
    clock = FakeClock()
    target = _ExplodingTarget()
    target.due_at = clock.monotonic() + 10
    refresher = Refresher(target, watchables={}, clock=clock, rng=random.Random(1))
    loop = asyncio.create_task(refresher.poll_forever())
    try:
        for _ in range(3):
            await clock.wait_for_sleepers(1)
            await clock.advance_settled(10)
        assert target.checks == 3
        assert not loop.done()
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_next_sleep_is_clamped() -> None:
    clock = FakeClock()
    target = _ExplodingTarget()
    refresher = Refresher(
        target, watchables={}, clock=clock, rng=random.Random(1), min_gap=0.5, max_gap=30
    )
    target.due_at = clock.monotonic() - 5
    assert refresher.next_sleep() == 0.5
    target.due_at = clock.monotonic() + 12
    assert refresher.next_sleep() == 12
    target.due_at = clock.monotonic() + 1000
    assert refresher.next_sleep() == 30


async def test_a_preload_and_the_refresher_load_each_pinned_secret_once() -> None:
    # At a short refresh interval the refresher wakes while the start-up
    # preload is still loading: the pins it finds due must not be loaded twice.
    rig = make_rig(refresh_interval="100ms")
    names = [SecretName(f"app/s{i}") for i in range(40)]
    for name in names:
        rig.backend.put(name, "v")
    runner = asyncio.create_task(rig.run_loops())
    try:
        await rig.clock.settle()
        rig.cache.pin(names)
        rig.backend.hold()  # the preload's first loads wait at the backend
        preload = asyncio.create_task(rig.cache.preload(names))
        await rig.clock.settle()
        await rig.clock.advance_settled(0.2)  # the refresher's pass comes meanwhile
        rig.backend.release()
        outcomes = await preload
        await rig.clock.settle()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert set(outcomes.values()) == {None}
    assert {rig.backend.fetches[name] for name in names} == {1}
    assert not rig.cache.failed_pins()
