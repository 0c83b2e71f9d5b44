"""The refresh loops: *when* to check; the cache decides *what* a check does.

- The poll loop wakes when the earliest check is due, takes every name due by
  then, and asks each backend about them in batches of `batch_size` through
  `RefreshTarget.check` (one `current_versions` call per batch, then fetches
  only for names whose version moved). It sleeps at least `min_gap` between
  passes so that checks falling due close together share one batch, and at
  most `max_gap`, so newly pinned names are picked up soon.
- A watch loop per `WatchableBackend` turns each `changes()` name into
  `RefreshTarget.on_change`; if the watch stream fails or ends it is reopened
  after a jittered backoff.
- The evict loop calls `RefreshTarget.evict_idle` every `evict_every` seconds.

Every loop survives the failures of one pass and runs until cancelled.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import Protocol

import structlog

from secretd.backends.base import WatchableBackend
from secretd.backoff import Backoff
from secretd.clock import Clock
from secretd.model import SecretName

log = structlog.get_logger(__name__)

# Change events handled at once per watched backend.
WATCH_CONCURRENCY = 16


class RefreshTarget(Protocol):
    """What the refresher drives (the cache implements it)."""

    def next_check_at(self) -> float | None:
        """Monotonic time of the earliest scheduled check, None when nothing is scheduled."""
        ...

    def due_checks(self, now: float) -> Mapping[str, Sequence[SecretName]]:
        """Names due for a check at `now`, by backend name (and marked as taken)."""
        ...

    async def check(self, backend: str, names: Sequence[SecretName]) -> None:
        """Check one batch of names on one backend; records its own failures."""
        ...

    async def on_change(self, backend: str, stripped: str) -> None:
        """A watched backend reported that `stripped` may have changed."""
        ...

    def evict_idle(self) -> int:
        """Drop idle entries; returns how many went."""
        ...


class Refresher:
    """Runs the poll, watch and evict loops for one `RefreshTarget`."""

    def __init__(
        self,
        target: RefreshTarget,
        *,
        watchables: Mapping[str, WatchableBackend],
        clock: Clock,
        rng: random.Random,
        batch_size: int = 100,
        min_gap: float = 0.5,
        max_gap: float = 30.0,
        start_jitter: float = 0.0,
    ) -> None:
        self._target = target
        self._watchables = dict(watchables)
        self._clock = clock
        self._rng = rng
        self._batch_size = max(batch_size, 1)
        self._min_gap = min_gap
        self._max_gap = max(max_gap, min_gap)
        self._start_jitter = start_jitter
        self._watch_backoff = Backoff(base=0.1, cap=30.0)

    @classmethod
    def for_interval(
        cls,
        target: RefreshTarget,
        *,
        refresh_interval: float,
        watchables: Mapping[str, WatchableBackend],
        clock: Clock,
        rng: random.Random,
        desync: bool = False,
    ) -> Refresher:
        """A refresher tuned to the cache's `refresh_interval`.

        Checks falling due within `min_gap` share one pass (one batch per
        backend), scaled with the interval so fast settings stay fast and slow
        ones batch well. With nothing scheduled yet (the loop starts before the
        first loads) it looks again within one interval, so newly loaded
        secrets are never checked late. `desync` (`[cache] startup_spread`)
        starts the passes at a random point within `min_gap`: agents started
        at the same instant would otherwise pass on the same grid."""
        min_gap = min(max(refresh_interval / 20, 0.05), 15.0)
        max_gap = max(min(refresh_interval, 30.0), min_gap)
        return cls(
            target,
            watchables=watchables,
            clock=clock,
            rng=rng,
            min_gap=min_gap,
            max_gap=max_gap,
            start_jitter=min_gap if desync else 0.0,
        )

    async def run(self, *, evict_every: float = 60.0) -> None:
        """All loops, until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.poll_forever())
            group.create_task(self.evict_forever(evict_every))
            for name, backend in self._watchables.items():
                group.create_task(self.watch_forever(name, backend))

    async def poll_once(self) -> int:
        """Check everything due now; returns how many names were checked."""
        due = self._target.due_checks(self._clock.monotonic())
        jobs = [self._check_backend(backend, list(names)) for backend, names in due.items()]
        await asyncio.gather(*jobs)
        return sum(len(names) for names in due.values())

    async def _check_backend(self, backend: str, names: list[SecretName]) -> None:
        for start in range(0, len(names), self._batch_size):
            batch = names[start : start + self._batch_size]
            try:
                await self._target.check(backend, batch)
            except Exception as exc:  # a bug in one batch must not stop refreshing
                log.error("refresh.batch_failed", backend=backend, error=type(exc).__name__)

    def next_sleep(self) -> float:
        """Seconds until the next pass: the earliest check, within [min_gap, max_gap]."""
        earliest = self._target.next_check_at()
        if earliest is None:
            return self._max_gap
        wait = earliest - self._clock.monotonic()
        return min(max(wait, self._min_gap), self._max_gap)

    async def poll_forever(self) -> None:
        if self._start_jitter > 0:
            await self._clock.sleep(self._rng.uniform(0.0, self._start_jitter))
        while True:
            await self._clock.sleep(self.next_sleep())
            try:
                await self.poll_once()
            except Exception as exc:  # never let one bad pass stop refreshing
                log.error("refresh.pass_failed", error=type(exc).__name__)

    async def evict_forever(self, every: float) -> None:
        while True:
            await self._clock.sleep(every)
            try:
                self._target.evict_idle()
            except Exception as exc:
                log.error("cache.evict_failed", error=type(exc).__name__)

    async def watch_forever(self, name: str, backend: WatchableBackend) -> None:
        """Follow one backend's change stream; reopen it (with backoff) when it fails."""
        failures = 0
        while True:
            opened = self._clock.monotonic()
            try:
                await self.watch_once(name, backend)
                log.warning("backend.watch_ended", backend=name)
            except Exception as exc:
                log.warning("backend.watch_failed", backend=name, error=type(exc).__name__)
            # A stream that ran for a while earned a fresh start on the backoff.
            healthy = self._clock.monotonic() - opened >= self._watch_backoff.cap
            failures = 1 if healthy else failures + 1
            await self._clock.sleep(self._watch_backoff.delay(failures, self._rng))

    async def watch_once(self, name: str, backend: WatchableBackend) -> None:
        """Consume one change stream until it ends, handling events concurrently
        (the cache collapses repeated events for one name into one fetch)."""
        gate = asyncio.Semaphore(WATCH_CONCURRENCY)
        async with asyncio.TaskGroup() as group:
            async for stripped in backend.changes():
                await gate.acquire()
                task = group.create_task(self._handle_change(name, stripped))
                task.add_done_callback(lambda _: gate.release())

    async def _handle_change(self, backend: str, stripped: str) -> None:
        try:
            await self._target.on_change(backend, stripped)
        except Exception as exc:
            log.error("refresh.change_failed", backend=backend, error=type(exc).__name__)
