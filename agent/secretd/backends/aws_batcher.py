"""Coalesces concurrent reads of current versions into BatchGetSecretValue calls.

The cache loads declared secrets a few at a time (and single-flights each
name), so at start-up and after rotations several `fetch(name)` calls for
current versions are in flight together. Each waits one event-loop turn; those
that arrived together leave as one BatchGetSecretValue of up to 20 names (a
lone name goes as a plain GetSecretValue). A caller that is cancelled simply
stops waiting; the others get their answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from secretd.errors import (
    SOURCE_ERRORS,
    BadBackendAnswer,
    SourceError,
)
from secretd.model import Fetched, SecretName

Single = Callable[[SecretName], Awaitable[Fetched]]
Many = Callable[[Sequence[SecretName]], Awaitable[dict[SecretName, Fetched | SourceError]]]


class CurrentBatcher:
    """Batches concurrent current-version reads; see the module docstring."""

    def __init__(self, *, single: Single, many: Many, size: int) -> None:
        self._single = single
        self._many = many
        self._size = size
        self._waiting: dict[SecretName, list[asyncio.Future[Fetched]]] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def fetch(self, name: SecretName) -> Fetched:
        future: asyncio.Future[Fetched] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(name, []).append(future)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def aclose(self) -> None:
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done():
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
        self._settle(dict(self._waiting), {})
        self._waiting.clear()

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # one loop turn: callers arriving together join the batch
        while self._waiting:
            names = list(self._waiting)[: self._size]
            waiters = {name: self._waiting.pop(name) for name in names}
            try:
                results = await self._answer(names)
            except BaseException:
                self._settle(waiters, {})
                raise
            self._settle(waiters, results)

    async def _answer(self, names: list[SecretName]) -> dict[SecretName, Fetched | SourceError]:
        if len(names) > 1:
            return await self._many(names)
        try:
            return {names[0]: await self._single(names[0])}
        except SOURCE_ERRORS as exc:
            return {names[0]: exc}

    @staticmethod
    def _settle(
        waiters: dict[SecretName, list[asyncio.Future[Fetched]]],
        results: dict[SecretName, Fetched | SourceError],
    ) -> None:
        for name, futures in waiters.items():
            result = results.get(name)
            for future in futures:
                if future.done():  # its caller was cancelled
                    continue
                if isinstance(result, Fetched):
                    future.set_result(result)
                elif isinstance(result, SOURCE_ERRORS):
                    future.set_exception(result)
                else:
                    future.set_exception(
                        BadBackendAnswer(f"secret {name!r}: the read was abandoned")
                    )
