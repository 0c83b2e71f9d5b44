"""How long to wait before trying again: pure functions of an interval, a
failure count and a seeded `random.Random` (so tests can pin every delay). The
one backoff of the agent: the cache's refreshes, the template runner's retries,
the backends' logins and retries, and the supervisor's restarts all use it.

- `jittered_interval`: a healthy secret is checked again after a delay drawn
  uniformly from ``[interval * (1 - spread), interval]``. Jitter only ever makes
  the check earlier, so a secret is never checked later than `refresh_interval`,
  and secrets loaded together drift apart instead of hitting the backend in a
  thundering herd.
- `Backoff`: a failing secret is retried after an exponentially growing delay,
  ``min(cap, base * factor**(failures - 1))``, with "equal jitter": a delay drawn
  from ``[d / 2, d]``. Half of the delay is guaranteed, so retries really do back
  off; the other half is random, so many failing secrets do not retry in step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_SPREAD = 0.2


def jittered_interval(interval: float, rng: random.Random, spread: float = DEFAULT_SPREAD) -> float:
    """The delay before the next routine check of a healthy secret."""
    if interval <= 0:
        return 0.0
    spread = min(max(spread, 0.0), 1.0)
    return interval * (1.0 - spread * rng.random())


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with equal jitter, capped."""

    base: float = 1.0
    cap: float = 300.0
    factor: float = 2.0

    def ceiling(self, failures: int) -> float:
        """The un-jittered delay after `failures` consecutive failures (>= 1)."""
        if failures < 1:
            return 0.0
        # Cap the exponent first: factor ** 10_000 would overflow a float.
        exponent = min(failures - 1, 64)
        return min(self.cap, self.base * self.factor**exponent)

    def delay(self, failures: int, rng: random.Random) -> float:
        """The jittered delay after `failures` consecutive failures, in [ceiling/2, ceiling]."""
        ceiling = self.ceiling(failures)
        return ceiling / 2.0 + rng.random() * ceiling / 2.0

    @classmethod
    def for_interval(cls, refresh_interval: float) -> Backoff:
        """Retries start at 1 s (or the interval, if shorter) and never wait
        longer than the routine interval, nor longer than 5 minutes: a failing
        secret is retried at least as often as a healthy one is checked."""
        cap = max(min(refresh_interval, 300.0), 0.05)
        return cls(base=min(1.0, cap), cap=cap)
