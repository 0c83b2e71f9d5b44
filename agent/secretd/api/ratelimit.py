"""Per-caller token buckets for requests that reach a backend.

Only `refresh=true`, cache misses and listings spend tokens: cached reads are
the fast path and are never limited. A caller is keyed by uid (Unix socket) or
as "tcp" (every token holder shares one bucket). The table of buckets is
bounded: when full, the buckets that have refilled completely are dropped (they
carry no state worth keeping), then the oldest.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from secretd.clock import Clock
from secretd.errors import RateLimited
from secretd.model import Caller

MAX_BUCKETS = 4096


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token bucket per caller: `rate` tokens a second, up to `burst`."""

    def __init__(
        self, *, rate: float, burst: int, clock: Clock, max_buckets: int = MAX_BUCKETS
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @staticmethod
    def key(caller: Caller) -> str:
        return "tcp" if caller.tcp else f"uid:{caller.uid}"

    def try_take(self, caller: Caller) -> bool:
        """Spend one token for `caller`; False when the bucket is empty."""
        now = self._clock.monotonic()
        key = self.key(caller)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = _Bucket(self._burst, now)
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def take(self, caller: Caller) -> None:
        """Spend one token or raise RateLimited (429)."""
        if not self.try_take(caller):
            raise RateLimited("too many requests that reach a backend; slow down and retry")

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self._max_buckets:
            return
        full_after = self._burst / self._rate
        for key in [k for k, b in self._buckets.items() if now - b.updated >= full_after]:
            del self._buckets[key]
        while len(self._buckets) >= self._max_buckets:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)
