"""Single-flight: concurrent requests for the same key share one call.

The shared call runs as its own task, and each caller awaits it through
`asyncio.shield`: a caller that gives up (its HTTP client went away) does not
cancel the call the other callers are waiting for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """At most one in-flight call per key; late arrivals join it."""

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def in_flight(self, key: Hashable) -> bool:
        return key in self._tasks

    async def run(self, key: Hashable, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """The result of `call()`, shared with everyone asking for `key` meanwhile."""
        task = self._tasks.get(key)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(call())
            self._tasks[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    async def wait_idle(self, key: Hashable) -> None:
        """Wait until no call for `key` is in flight (its outcome is ignored)."""
        earlier = self._tasks.get(key)
        if earlier is not None and not earlier.done():
            await asyncio.wait([earlier])

    def _finished(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have gone away

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for the calls in flight now to finish."""
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace)

    async def aclose(self) -> None:
        """Cancel every in-flight call and wait for them to end."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
