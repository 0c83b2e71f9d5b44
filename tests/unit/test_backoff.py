"""`Backoff` on a fake clock and seeded rngs: growth, cap, jitter bounds, reset."""

from __future__ import annotations

import random

import pytest

from secretd.backoff import Backoff
from tests.fakes.fake_clock import FakeClock


def make(clock: FakeClock | None = None, seed: int = 1, **options: float) -> Backoff:
    params = {"initial": 1.0, "maximum": 60.0, **options}
    return Backoff(rng=random.Random(seed), clock=clock or FakeClock(), **params)


@pytest.mark.parametrize("seed", range(20))
def test_delays_double_up_to_the_maximum_within_the_jitter_band(seed: int) -> None:
    backoff = make(seed=seed)
    for n in range(12):
        ceiling = min(60.0, 2.0**n)
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling  # equal jitter: never under half
    assert backoff.failures == 12


def test_full_jitter_reaches_below_half() -> None:
    backoff = make(seed=7, jitter=1.0, initial=10.0, maximum=10.0)
    delays = [backoff.next_delay() for _ in range(200)]
    assert min(delays) < 5.0 and max(delays) <= 10.0
    assert all(d >= 0 for d in delays)


def test_no_jitter_is_exact() -> None:
    backoff = make(jitter=0.0, initial=0.5, maximum=3.0, multiplier=3.0)
    assert [backoff.next_delay() for _ in range(4)] == [0.5, 1.5, 3.0, 3.0]


def test_reset_starts_again_from_initial() -> None:
    backoff = make(jitter=0.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0 and backoff.remaining() == 0.0
    assert backoff.next_delay() == 1.0


def test_remaining_counts_down_on_the_clock() -> None:
    clock = FakeClock()
    backoff = make(clock, jitter=0.0, initial=4.0)
    assert backoff.remaining() == 0.0  # nothing failed: due now
    backoff.next_delay()
    assert backoff.remaining() == 4.0
    clock.advance(3.0)
    assert backoff.remaining() == 1.0
    clock.advance(5.0)
    assert backoff.remaining() == 0.0


def test_many_failures_do_not_overflow() -> None:
    backoff = make(jitter=0.0, maximum=30.0)
    for _ in range(5000):
        delay = backoff.next_delay()
    assert delay == 30.0


@pytest.mark.parametrize(
    "options",
    [
        {"initial": 0.0},
        {"initial": 5.0, "maximum": 1.0},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_nonsense_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        make(**options)
