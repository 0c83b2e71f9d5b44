"""The pure schedule: jittered intervals and capped exponential backoff."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from secretd.backoff import Backoff, jittered_interval


def test_jittered_interval_stays_within_bounds_and_varies() -> None:
    rng = random.Random(42)
    draws = [jittered_interval(300.0, rng) for _ in range(1000)]
    assert all(240.0 <= d <= 300.0 for d in draws)
    assert max(draws) - min(draws) > 30.0  # really spread, not a constant
    assert len(set(draws)) > 900


def test_jittered_interval_is_reproducible_with_a_seed() -> None:
    first = [jittered_interval(60.0, random.Random(5)) for _ in range(3)]
    second = [jittered_interval(60.0, random.Random(5)) for _ in range(3)]
    assert first == second


def test_zero_interval_means_now() -> None:
    assert jittered_interval(0.0, random.Random(1)) == 0.0


def test_backoff_grows_exponentially_until_the_cap() -> None:
    backoff = Backoff(base=1.0, cap=60.0)
    assert [backoff.ceiling(n) for n in range(0, 9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]


def test_backoff_jitter_keeps_half_the_delay() -> None:
    backoff = Backoff(base=1.0, cap=60.0)
    rng = random.Random(9)
    for failures in range(1, 12):
        ceiling = backoff.ceiling(failures)
        delays = [backoff.delay(failures, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed


@given(st.integers(min_value=1, max_value=10**9))
def test_backoff_never_overflows_or_exceeds_the_cap(failures: int) -> None:
    backoff = Backoff(base=0.5, cap=300.0)
    assert 0 < backoff.delay(failures, random.Random(failures)) <= 300.0


def test_backoff_for_interval_never_waits_longer_than_the_interval() -> None:
    assert Backoff.for_interval(20.0).cap == 20.0
    assert Backoff.for_interval(3600.0).cap == 300.0
    short = Backoff.for_interval(0.2)
    assert short.base == short.cap == 0.2
