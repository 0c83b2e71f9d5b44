"""Supervised background work: every long-running task of the agent lives here.

A `Supervisor` starts coroutines as tasks of the composition root's
`asyncio.TaskGroup`, so nothing runs unowned and a stop cancels everything.
A supervised coroutine that crashes (raises) is logged by type - never by
message, which could carry anything - and started again after a jittered,
growing delay; one that returns is done. `stop()` cancels one task and waits
for it, for work whose owner goes away (a backend retired by a reload).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import structlog

from secretd.backoff import Backoff
from secretd.clock import Clock

log = structlog.get_logger(__name__)

Work = Callable[[], Awaitable[None]]
# A run that lasted this long earns a fresh start on the backoff.
HEALTHY_RUN = 60.0


class Supervisor:
    """Starts, restarts and stops background tasks inside one TaskGroup."""

    def __init__(
        self,
        group: asyncio.TaskGroup,
        *,
        clock: Clock,
        rng: random.Random,
        backoff: Backoff | None = None,
    ) -> None:
        self._group = group
        self._clock = clock
        self._rng = rng
        self._backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, name: str, work: Work) -> asyncio.Task[None]:
        """Run `work()` until it returns or is cancelled, restarting it when it crashes."""
        task = self._group.create_task(self._keep_running(name, work), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Cancel `task` and wait until it has ended."""
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def stop_all(self) -> None:
        """Cancel every task started here and wait until all have ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep_running(self, name: str, work: Work) -> None:
        failures = 0
        while True:
            started = self._clock.monotonic()
            try:
                await work()
                return
            except Exception as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # it failed while being stopped: stopped it is
                healthy = self._clock.monotonic() - started >= HEALTHY_RUN
                failures = 1 if healthy else failures + 1
                delay = self._backoff.delay(failures, self._rng)
                log.error(
                    "task.crashed",
                    task=name,
                    error=type(exc).__name__,
                    restart_in=round(delay, 3),
                )
            await self._clock.sleep(delay)
