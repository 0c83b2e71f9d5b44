"""A read memo shared by every template of one runner.

When a secret changes, every template that uses it re-renders; they should
not each ask the cache (and, on a miss, the backend) again. The memo keeps one
read per (name, stage) - in flight or done - and hands it to everyone who asks
until that name changes (`invalidate`). Failed reads are shared by whoever
waited on them but not kept, so the next attempt asks again.

It holds the same values the cache holds, for the names templates use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from secretd.model import CURRENT, SecretName, SecretReader, SecretValue
from secretd.usage import UsageSink

_Key = tuple[SecretName, str]


class ReadMemo:
    """Single-flight, change-invalidated reads of secret values through a SecretReader."""

    def __init__(self, reader: SecretReader, *, usage: UsageSink | None = None) -> None:
        self._reader = reader
        self._usage = usage  # each render's read of a secret counts (`secretd unused`)
        self._reads: dict[_Key, asyncio.Task[SecretValue]] = {}
        self.reader_calls = 0  # how many reads reached the reader (tests, bench)

    async def value(self, name: SecretName, stage: str = CURRENT) -> SecretValue:
        key = (name, stage)
        task = self._reads.get(key)
        if task is None:
            task = asyncio.create_task(self._read(name, stage))
            self._reads[key] = task
            task.add_done_callback(lambda done: self._forget_failure(key, done))
        # shield: one template being cancelled must not cancel the read the others share
        value = await asyncio.shield(task)
        if self._usage is not None:
            self._usage.note(name)
        return value

    async def _read(self, name: SecretName, stage: str) -> SecretValue:
        self.reader_calls += 1
        cached = await self._reader.read(name, stage=None if stage == CURRENT else stage)
        return cached.version.value

    def _forget_failure(self, key: _Key, task: asyncio.Task[SecretValue]) -> None:
        failed = task.cancelled() or task.exception() is not None
        if failed and self._reads.get(key) is task:
            del self._reads[key]

    def invalidate(self, names: Iterable[SecretName]) -> None:
        """Forget every stage of `names`: their next read goes to the reader."""
        changed = set(names)
        for key in [k for k in self._reads if k[0] in changed]:
            del self._reads[key]

    def clear(self) -> None:
        self._reads.clear()

    async def aclose(self) -> None:
        """Cancel reads still in flight (shutdown)."""
        pending = [t for t in self._reads.values() if not t.done()]
        self._reads.clear()
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(BaseException):
                await task
