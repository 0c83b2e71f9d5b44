"""`Backoff`: jittered exponential delays between retries, one policy for the agent.

Each failure makes the next delay `multiplier` times longer, from `initial` up
to `maximum`; the delay actually used is drawn from
``[ceiling * (1 - jitter), ceiling]``, so many agents (or many secrets) that
failed together do not retry together. `jitter=1.0` is "full jitter", `0.5`
(the default) "equal jitter": never less than half the ceiling, which keeps a
floor under the retry rate however the dice fall.

    backoff = Backoff(initial=1.0, maximum=60.0, rng=rng, clock=clock)
    delay = backoff.next_delay()   # after a failure: how long to wait
    backoff.remaining()            # seconds until the next attempt is due (0: now)
    backoff.reset()                # after a success

The clock and rng are injected, so tests see exact delays without sleeping.
"""

from __future__ import annotations

import random

from secretd.clock import Clock

MAX_EXPONENT = 64  # 2**64 times any initial delay is past every sane maximum


class Backoff:
    """Jittered exponential backoff; see the module docstring."""

    def __init__(
        self,
        *,
        initial: float,
        maximum: float,
        rng: random.Random,
        clock: Clock,
        multiplier: float = 2.0,
        jitter: float = 0.5,
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError("backoff: need 0 < initial <= maximum")
        if multiplier < 1 or not 0 <= jitter <= 1:
            raise ValueError("backoff: need multiplier >= 1 and 0 <= jitter <= 1")
        self._initial = initial
        self._maximum = maximum
        self._multiplier = multiplier
        self._jitter = jitter
        self._rng = rng
        self._clock = clock
        self._failures = 0
        self._due = 0.0

    @property
    def failures(self) -> int:
        """Failures since the last `reset`."""
        return self._failures

    def ceiling(self) -> float:
        """The largest delay the next failure can give."""
        exponent = min(self._failures, MAX_EXPONENT)
        return min(self._maximum, self._initial * self._multiplier**exponent)

    def next_delay(self) -> float:
        """Count one failure; the jittered delay before the next attempt."""
        ceiling = self.ceiling()
        delay = ceiling * (1 - self._jitter * self._rng.random())
        self._failures += 1
        self._due = self._clock.monotonic() + delay
        return delay

    def remaining(self) -> float:
        """Seconds until the attempt after the last failure is due (0 when due)."""
        if self._failures == 0:
            return 0.0
        return max(0.0, self._due - self._clock.monotonic())

    def reset(self) -> None:
        """After a success: the next failure starts again from `initial`."""
        self._failures = 0
        self._due = 0.0
