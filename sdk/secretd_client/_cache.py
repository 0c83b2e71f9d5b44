"""The optional in-process cache: current-version reads kept in memory and
refreshed by a long-poll watch per (name, field).

While the agent is unreachable the cache keeps serving the last value it saw,
marked `stale=True`; an error that retrying cannot fix (the secret was removed,
access was revoked) drops the entry, so the next read asks the agent and raises.
`WatchCache` runs in the caller's event loop (AsyncClient); `ThreadedCache`
gives the blocking Client the same cache on a private loop in one thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from secretd_client import _wire
from secretd_client._errors import RequestTimeout, SecretdClientError
from secretd_client._models import Secret

if TYPE_CHECKING:
    from secretd_client._client import AsyncClient

T = TypeVar("T")
Key = tuple[str, str | None]
MAX_ENTRIES = 1024  # beyond this, reads go to the agent uncached
WATCH_WAIT = 30.0


class WatchCache:
    """Current versions by (name, field), each followed by a watch task."""

    def __init__(self, client: AsyncClient, *, wait: float = WATCH_WAIT) -> None:
        self._client = client
        self._wait = wait
        self._entries: dict[Key, Secret] = {}
        self._loading: dict[Key, asyncio.Future[Secret]] = {}
        self._watchers: dict[Key, asyncio.Task[None]] = {}

    def peek(self, name: str, field: str | None) -> Secret | None:
        """The cached entry, if any, without waiting (safe from another thread:
        one dict read, atomic in CPython)."""
        return self._entries.get((name, field))

    async def get(self, name: str, field: str | None) -> Secret:
        key = (name, field)
        entry = self._entries.get(key)
        if entry is not None:
            return entry
        loading = self._loading.get(key)
        if loading is not None:  # single-flight: concurrent misses share one request
            return await asyncio.shield(loading)
        future: asyncio.Future[Secret] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            secret = await self._client._fetch(name, _wire.secret_params(field=field), None)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._loading[key]
        future.set_result(secret)
        if len(self._entries) < MAX_ENTRIES:
            self._entries[key] = secret
            self._watchers[key] = asyncio.create_task(self._follow(key, secret.version_id))
        return secret

    async def _follow(self, key: Key, index: str) -> None:
        name, field = key

        def mark_stale(_: SecretdClientError) -> None:
            entry = self._entries.get(key)
            if entry is not None and not entry.stale:
                self._entries[key] = dataclasses.replace(entry, stale=True)

        watch = self._client.watch(
            name, field=field, wait=self._wait, index=index, on_error=mark_stale
        )
        try:
            async for secret in watch:
                self._entries[key] = secret
        except SecretdClientError:
            self._entries.pop(key, None)
            self._watchers.pop(key, None)

    async def aclose(self) -> None:
        watchers = list(self._watchers.values())
        self._watchers.clear()
        self._entries.clear()
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


class ThreadedCache:
    """A `WatchCache` on a private event loop in a daemon thread, for `Client`."""

    def __init__(self, make_client: Callable[[], AsyncClient], *, timeout: float) -> None:
        self._timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="secretd-client-cache", daemon=True
        )
        self._thread.start()
        self._client = self._run(self._make(make_client))
        assert self._client._cache is not None
        self._cache: WatchCache = self._client._cache

    @staticmethod
    async def _make(make_client: Callable[[], AsyncClient]) -> AsyncClient:
        client = make_client()
        client._cache = WatchCache(client)
        return client

    def get(self, name: str, field: str | None) -> Secret:
        hit = self._cache.peek(name, field)  # the hot path stays on the caller's thread
        return hit if hit is not None else self._run(self._cache.get(name, field))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=self._timeout * 2 + 1)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RequestTimeout("the client's cache did not answer in time") from None

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
