"""The change hub: the cache publishes `Changed` when a secret's current version
moves; long-polls, sinks and `exec` supervisors subscribe.

Subscribers get their own bounded queue. A subscriber that falls behind loses
the oldest events, never blocks the publisher: every consumer re-reads the
cache on wake-up, so a dropped duplicate costs nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from secretd.model import SecretName


@dataclass(frozen=True, slots=True)
class Changed:
    """A secret's current version is now `version_id` (None: it was removed)."""

    name: SecretName
    version_id: str | None


class Subscription:
    """One subscriber's queue of changes."""

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[Changed] = asyncio.Queue(maxsize)

    def offer(self, event: Changed) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # drop the oldest; consumers re-read the cache
        self._queue.put_nowait(event)

    async def get(self) -> Changed:
        return await self._queue.get()

    def drain(self) -> list[Changed]:
        """Every event queued right now, without waiting."""
        events: list[Changed] = []
        while not self._queue.empty():
            events.append(self._queue.get_nowait())
        return events

    def __aiter__(self) -> AsyncIterator[Changed]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Changed]:
        while True:
            yield await self._queue.get()


class Hub:
    """Fan-out of `Changed` events to subscribers and long-pollers."""

    def __init__(self, queue_size: int = 1024) -> None:
        self._subscribers: set[Subscription] = set()
        self._waiters: dict[SecretName, set[asyncio.Future[str | None]]] = {}
        self._queue_size = queue_size

    def publish(self, event: Changed) -> None:
        for sub in list(self._subscribers):
            sub.offer(event)
        for fut in self._waiters.pop(event.name, set()):
            if not fut.done():
                fut.set_result(event.version_id)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        sub = Subscription(self._queue_size)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    async def wait_for(self, name: SecretName, within: float) -> str | None:
        """Wait up to `within` seconds for the next change of `name`.

        Returns the new version id, or raises TimeoutError.
        """
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(name, set()).add(fut)
        try:
            async with asyncio.timeout(within):
                return await fut
        finally:
            waiters = self._waiters.get(name)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    del self._waiters[name]

    @property
    def waiting(self) -> int:
        """How many long-polls are parked (for metrics)."""
        return sum(len(w) for w in self._waiters.values())
