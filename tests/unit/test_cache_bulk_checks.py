"""A backend that checks versions in bulk (AWS's ListSecrets answers many names in
one call): when one of its secrets is due, a pass also checks those due within the
jitter window, and the ones confirmed together keep one next check - so an agent's
secrets stay one call per interval instead of drifting into a call each."""

from __future__ import annotations

import random

from secretd.model import SecretName
from secretd.refresh.refresher import Refresher
from tests.fakes.cache_rig import CacheRig, make_rig

INTERVAL = 300.0
NAMES = [SecretName(f"app/{i}") for i in range(10)]


async def version_calls_over(rig: CacheRig, intervals: int) -> int:
    """Load the names 5 s apart, then run the poll loop's passes for `intervals`."""
    for name in NAMES:
        rig.backend.put(name, f"v-{name}")
        await rig.cache.read(name)
        rig.clock.advance(5)
    refresher = Refresher(
        rig.cache.refresh_target, watchables={}, clock=rig.clock, rng=random.Random(2)
    )
    before = rig.backend.calls["versions"]
    end = rig.clock.monotonic() + intervals * INTERVAL
    while rig.clock.monotonic() < end:
        rig.clock.advance(max(refresher.next_sleep(), 0.0))
        await refresher.poll_once()
    return rig.backend.calls["versions"] - before


async def test_a_bulk_backend_checks_an_agents_secrets_together() -> None:
    bulk = make_rig(refresh_interval="5m")
    bulk.backend.checks_in_bulk = True  # type: ignore[attr-defined]
    single = make_rig(refresh_interval="5m")
    bulk_calls = await version_calls_over(bulk, 6)
    single_calls = await version_calls_over(single, 6)
    assert bulk_calls <= 8  # one call per pass, a pass at least every 0.8 interval: 6 / 0.8
    assert single_calls > 2 * bulk_calls
    checks = {entry.next_check for entry in bulk.cache.core.table}
    assert len(checks) == 1  # confirmed together, scheduled together


async def test_no_secret_of_a_bulk_backend_is_checked_later_than_the_interval() -> None:
    rig = make_rig(refresh_interval="5m")
    rig.backend.checks_in_bulk = True  # type: ignore[attr-defined]
    await version_calls_over(rig, 1)
    now = rig.clock.monotonic()
    for entry in rig.cache.core.table:
        assert entry.next_check - now <= INTERVAL
