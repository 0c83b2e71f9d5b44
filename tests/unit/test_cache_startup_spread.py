"""`[cache] startup_spread`: a new entry's first routine check is drawn from the last
`startup_spread` of refresh_interval (never later than the interval); later checks
keep the usual last fifth; the first loads themselves are never delayed."""

from __future__ import annotations

import pytest

from secretd.config import CacheSection
from secretd.model import SecretName
from tests.fakes.cache_rig import make_rig

INTERVAL = 300.0
COUNT = 200


async def first_check_delays(spread: str) -> tuple[list[float], int]:
    rig = make_rig(refresh_interval="5m", startup_spread=spread)
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
    return delays, fetched


async def test_without_spread_first_checks_fall_in_the_last_fifth() -> None:
    delays, fetched = await first_check_delays("0s")
    assert fetched == COUNT
    assert min(delays) >= 0.8 * INTERVAL
    assert max(delays) <= INTERVAL


async def test_with_spread_first_checks_cover_the_spread_never_later_than_the_interval() -> None:
    delays, fetched = await first_check_delays("5m")
    assert fetched == COUNT  # the loads are not spread
    assert max(delays) <= INTERVAL
    assert min(delays) < 0.2 * INTERVAL  # 200 draws over the whole interval
    early = sum(1 for d in delays if d < 0.8 * INTERVAL)
    assert early > COUNT // 2  # most now fall before the last fifth


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
