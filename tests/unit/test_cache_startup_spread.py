"""`[cache] startup_spread`: each cache draws once an offset in [0, startup_spread]
and schedules every new entry's first check that much earlier (80-100 % of
`refresh_interval - offset`): caches (agents) started together check at different
times, one cache's secrets stay together, nothing is checked later than the
interval, and the first loads themselves are never delayed."""

from __future__ import annotations

import asyncio
import random

import pytest

from secretd.config import CacheSection
from secretd.model import SecretName
from secretd.refresh.refresher import Refresher
from tests.fakes.cache_rig import make_rig

INTERVAL = 300.0
COUNT = 20
AGENTS = 30


async def first_check_delays(spread: str, seed: int) -> tuple[list[float], float, int]:
    """(first-check delays of COUNT secrets loaded at once, the cache's offset, fetches)."""
    rig = make_rig(refresh_interval="5m", startup_spread=spread, seed=seed)
    names = [SecretName(f"app/{i:03d}") for i in range(COUNT)]
    for name in names:
        rig.backend.put(name, f"v-{name}")
    loaded_at = rig.clock.monotonic()
    outcomes = await rig.cache.preload(names)
    assert all(problem is None for problem in outcomes.values())
    fetched = sum(rig.backend.fetches.values())  # every load happened now, none deferred
    entries = [rig.cache.core.table.get(n) for n in names]
    delays = [e.next_check - loaded_at for e in entries if e is not None]
    assert len(delays) == COUNT
    return delays, rig.cache.core.phase, fetched


async def test_without_spread_first_checks_fall_in_the_last_fifth() -> None:
    for seed in range(AGENTS):
        delays, phase, fetched = await first_check_delays("0s", seed)
        assert (fetched, phase) == (COUNT, 0.0)
        assert min(delays) >= 0.8 * INTERVAL and max(delays) <= INTERVAL


async def test_with_spread_agents_differ_and_each_keeps_its_secrets_together() -> None:
    latest: list[float] = []
    for seed in range(AGENTS):
        delays, phase, fetched = await first_check_delays("5m", seed)
        assert fetched == COUNT  # the loads are not spread
        assert 0.0 <= phase <= INTERVAL
        shortened = INTERVAL - phase
        assert all(0.8 * shortened <= d <= shortened for d in delays)  # together
        latest.append(max(delays))
    assert max(latest) <= INTERVAL
    # Thirty agents started at once: some check within the first half of the
    # interval, some in its last fifth (without the spread: all in the last fifth).
    assert min(latest) < 0.5 * INTERVAL
    assert max(latest) > 0.8 * INTERVAL


async def test_later_checks_are_in_the_last_fifth_again() -> None:
    rig = make_rig(refresh_interval="5m", startup_spread="5m")
    name = SecretName("app/one")
    rig.backend.put(name, "v")
    await rig.cache.read(name)
    entry = rig.cache.core.table.get(name)
    assert entry is not None
    for _ in range(20):
        rig.clock.advance(entry.next_check - rig.clock.monotonic())
        await rig.cache.refresh_target.check("memory", [name])
        assert 0.8 * INTERVAL <= entry.next_check - rig.clock.monotonic() <= INTERVAL


def test_the_spread_cannot_exceed_the_interval() -> None:
    with pytest.raises(ValueError, match="startup_spread"):
        CacheSection(refresh_interval="1m", startup_spread="2m")


async def test_a_spread_refresh_loop_starts_its_passes_at_a_random_point() -> None:
    """Loops started in the same instant would pass on the same grid of min_gap /
    max_gap sleeps; with the spread each starts at its own point within min_gap."""
    starts = set()
    for seed in range(5):
        rig = make_rig(refresh_interval="5m", startup_spread="5m")
        refresher = Refresher.for_interval(
            rig.cache.refresh_target,
            refresh_interval=INTERVAL,
            watchables={},
            clock=rig.clock,
            rng=random.Random(seed),
            desync=True,
        )
        loop = asyncio.create_task(refresher.poll_forever())
        await rig.clock.wait_for_sleepers(1)
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        first = rig.clock.slept[0]
        assert 0.0 <= first < INTERVAL / 20  # min_gap of a 5m interval: 15 s
        starts.add(first)
    assert len(starts) == 5
    plain = make_rig(refresh_interval="5m")
    refresher = Refresher.for_interval(
        plain.cache.refresh_target,
        refresh_interval=INTERVAL,
        watchables={},
        clock=plain.clock,
        rng=random.Random(1),
    )
    loop = asyncio.create_task(refresher.poll_forever())
    await plain.clock.wait_for_sleepers(1)
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
    assert plain.clock.slept[0] == 30.0  # without: straight onto the max_gap grid
