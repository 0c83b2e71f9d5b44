"""The one backoff: the `Backoff` policy, `Retry` over time, jittered check intervals."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secretd.backoff import Backoff, Retry, jittered_interval
from tests.fakes.fake_clock import FakeClock


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


# -- Retry: one thing retried over time ----------------------------------------


def make(clock: FakeClock | None = None, seed: int = 1, **options: float) -> Retry:
    params = {"base": 1.0, "cap": 60.0, **options}
    return Retry(Backoff(**params), rng=random.Random(seed), clock=clock or FakeClock())


@pytest.mark.parametrize("seed", range(20))
def test_delays_double_up_to_the_maximum_within_the_jitter_band(seed: int) -> None:
    backoff = make(seed=seed)
    for n in range(12):
        ceiling = min(60.0, 2.0**n)
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling  # equal jitter: never under half
    assert backoff.failures == 12


def test_full_jitter_reaches_below_half() -> None:
    backoff = make(seed=7, jitter=1.0, base=10.0, cap=10.0)
    delays = [backoff.next_delay() for _ in range(200)]
    assert min(delays) < 5.0 and max(delays) <= 10.0
    assert all(d >= 0 for d in delays)


def test_no_jitter_is_exact() -> None:
    backoff = make(jitter=0.0, base=0.5, cap=3.0, factor=3.0)
    assert [backoff.next_delay() for _ in range(4)] == [0.5, 1.5, 3.0, 3.0]


def test_reset_starts_again_from_the_base() -> None:
    backoff = make(jitter=0.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0 and backoff.remaining() == 0.0
    assert backoff.next_delay() == 1.0


def test_remaining_counts_down_on_the_clock() -> None:
    clock = FakeClock()
    backoff = make(clock, jitter=0.0, base=4.0)
    assert backoff.remaining() == 0.0  # nothing failed: due now
    backoff.next_delay()
    assert backoff.remaining() == 4.0
    clock.advance(3.0)
    assert backoff.remaining() == 1.0
    clock.advance(5.0)
    assert backoff.remaining() == 0.0


def test_many_failures_do_not_overflow() -> None:
    backoff = make(jitter=0.0, cap=30.0)
    for _ in range(5000):
        delay = backoff.next_delay()
    assert delay == 30.0


@pytest.mark.parametrize(
    "options",
    [
        {"base": 0.0},
        {"base": 5.0, "cap": 1.0},
        {"factor": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_nonsense_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        make(**options)
