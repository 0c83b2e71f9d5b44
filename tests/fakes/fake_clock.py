"""A `Clock` whose time moves only when a test says so.

`sleep()` parks the caller until `advance()` moves time past its deadline, so
schedules, backoff and staleness are tested without real sleeps or timing
flakes. `settle()` lets every runnable task take its turn (bounded rounds).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta

DEFAULT_WALL = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """Monotonic and wall time advanced by hand; `sleep` waits for `advance`."""

    def __init__(self, start: float = 1000.0, wall: datetime = DEFAULT_WALL) -> None:
        self._start = start
        self._now = start
        self._wall = wall
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.slept: list[float] = []  # every requested sleep, in order

    def monotonic(self) -> float:
        return self._now

    def now(self) -> datetime:
        return self._wall + timedelta(seconds=self._now - self._start)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def sleepers(self) -> int:
        """How many tasks are parked in `sleep` right now."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    def next_deadline(self) -> float | None:
        live = [deadline for deadline, _, future in self._sleepers if not future.done()]
        return min(live, default=None)

    async def settle(self, rounds: int = 50) -> None:
        """Give every runnable task `rounds` turns of the event loop."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance_settled(self, seconds: float, rounds: int = 50) -> None:
        self.advance(seconds)
        await self.settle(rounds)

    async def wait_for_sleepers(self, count: int, rounds: int = 1000) -> None:
        """Let tasks run until at least `count` are parked in `sleep` (bounded)."""
        for _ in range(rounds):
            if self.sleepers >= count:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"expected {count} sleeper(s), have {self.sleepers}")
