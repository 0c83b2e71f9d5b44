"""How long to wait before trying again: the one backoff of the agent.

- `Backoff` is the policy: after `failures` consecutive failures the delay's
  ceiling is ``min(cap, base * factor**(failures - 1))``, and the delay used is
  drawn from ``[ceiling * (1 - jitter), ceiling]``. The default `jitter=0.5`
  is "equal jitter": never less than half the ceiling, which keeps a floor
  under the retry rate however the dice fall, while many things that failed
  together (secrets, agents) do not retry together. It is a frozen value:
  the cache keeps a failure count per secret and asks `delay(failures, rng)`.
- `Retry` is one thing being retried over time (a Vault login, a watch
  stream, a supervised task): it counts its own failures, remembers when the
  next attempt is due, and starts again on `reset()` after a success.
- `jittered_interval`: a healthy secret is checked again after a delay drawn
  uniformly from ``[interval * (1 - spread), interval]``. Jitter only ever
  makes the check earlier, so a secret is never checked later than
  `refresh_interval`, and secrets loaded together drift apart instead of
  hitting the backend in a thundering herd.

Randomness and time are injected (a seeded `random.Random`, a `Clock`), so
tests pin every delay without sleeping.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from secretd.clock import Clock

DEFAULT_SPREAD = 0.2
MAX_EXPONENT = 64  # 2**64 times any base delay is past every sane cap


def jittered_interval(interval: float, rng: random.Random, spread: float = DEFAULT_SPREAD) -> float:
    """The delay before the next routine check of a healthy secret."""
    if interval <= 0:
        return 0.0
    spread = min(max(spread, 0.0), 1.0)
    return interval * (1.0 - spread * rng.random())


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter, capped."""

    base: float = 1.0
    cap: float = 300.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError("backoff: need 0 < base <= cap")
        if self.factor < 1 or not 0 <= self.jitter <= 1:
            raise ValueError("backoff: need factor >= 1 and 0 <= jitter <= 1")

    def ceiling(self, failures: int) -> float:
        """The un-jittered delay after `failures` consecutive failures (>= 1)."""
        if failures < 1:
            return 0.0
        # Cap the exponent first: factor ** 10_000 would overflow a float.
        exponent = min(failures - 1, MAX_EXPONENT)
        return min(self.cap, self.base * self.factor**exponent)

    def delay(self, failures: int, rng: random.Random) -> float:
        """The jittered delay after `failures` consecutive failures."""
        ceiling = self.ceiling(failures)
        return ceiling * (1.0 - self.jitter) + rng.random() * ceiling * self.jitter

    @classmethod
    def for_interval(cls, refresh_interval: float) -> Backoff:
        """Retries start at 1 s (or the interval, if shorter) and never wait
        longer than the routine interval, nor longer than 5 minutes: a failing
        secret is retried at least as often as a healthy one is checked."""
        cap = max(min(refresh_interval, 300.0), 0.05)
        return cls(base=min(1.0, cap), cap=cap)


class Retry:
    """One thing retried over time under a `Backoff` policy."""

    def __init__(self, policy: Backoff, *, rng: random.Random, clock: Clock) -> None:
        self.policy = policy
        self._rng = rng
        self._clock = clock
        self._failures = 0
        self._due = 0.0

    @property
    def failures(self) -> int:
        """Failures since the last `reset`."""
        return self._failures

    def next_delay(self) -> float:
        """Count one failure; the jittered delay before the next attempt."""
        self._failures += 1
        delay = self.policy.delay(self._failures, self._rng)
        self._due = self._clock.monotonic() + delay
        return delay

    def remaining(self) -> float:
        """Seconds until the attempt after the last failure is due (0 when due)."""
        if self._failures == 0:
            return 0.0
        return max(0.0, self._due - self._clock.monotonic())

    def reset(self) -> None:
        """After a success: the next failure starts again from the policy's base."""
        self._failures = 0
        self._due = 0.0
