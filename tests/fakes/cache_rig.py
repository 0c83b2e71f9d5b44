"""A `SecretCache` wired to `MemoryBackend`s, a `FakeClock`, a seeded rng and a
recording observer: the engine's test bench, reusable by other areas' tests.
`cache_over(backend)` is the plain cache over any one backend (real or fake)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from secretd.backends.base import Backend, WatchableBackend
from secretd.backends.registry import close_backends
from secretd.backends.router import Router
from secretd.cache.observer import CacheObserver, NullObserver
from secretd.cache.secret_cache import SecretCache, build_cache
from secretd.clock import Clock, SystemClock
from secretd.config import CacheSection
from secretd.events import Hub
from secretd.model import SecretName
from secretd.refresh.refresher import Refresher
from tests.fakes.fake_clock import FakeClock
from tests.fakes.memory_backend import MemoryBackend


@dataclass
class RecordingObserver:
    """A `CacheObserver` that remembers everything it is told."""

    lookups: Counter[str] = field(default_factory=Counter)
    backend_calls: list[tuple[str, str, bool]] = field(default_factory=list)
    refreshed: list[tuple[SecretName, str, str | None, str]] = field(default_factory=list)

    def cache_lookup(self, result: str) -> None:
        self.lookups[result] += 1

    def backend_call(self, backend: str, op: str, seconds: float, ok: bool) -> None:
        assert seconds >= 0
        self.backend_calls.append((backend, op, ok))

    def secret_refreshed(
        self, name: SecretName, backend: str, version_id: str | None, result: str
    ) -> None:
        self.refreshed.append((name, backend, version_id, result))

    def results(self, name: str) -> list[str]:
        return [r for n, _, _, r in self.refreshed if n == name]


@dataclass
class CacheRig:
    cache: SecretCache
    backend: MemoryBackend
    backends: dict[str, MemoryBackend]
    clock: FakeClock
    hub: Hub
    observer: RecordingObserver
    router: Router
    settings: CacheSection

    def refresher(self, **kwargs: Any) -> Refresher:
        watchables = kwargs.pop("watchables", dict(self.backends))
        return Refresher(
            self.cache.refresh_target,
            watchables=watchables,
            clock=self.clock,
            rng=random.Random(7),
            **kwargs,
        )

    async def run_loops(self) -> None:
        """The refresh, watch and evict loops as the agent runs them, until cancelled."""
        await refresh_loops(self.cache, self.settings, self.clock, dict(self.backends))


async def refresh_loops(
    cache: SecretCache,
    settings: CacheSection,
    clock: Clock,
    watchables: Mapping[str, WatchableBackend] | None = None,
) -> None:
    """Run `cache`'s refresher tuned as the agent tunes it, until cancelled."""
    refresher = Refresher.for_interval(
        cache.refresh_target,
        refresh_interval=settings.refresh_interval,
        watchables=watchables or {},
        clock=clock,
        rng=random.Random(7),
    )
    await refresher.run(evict_every=min(max(settings.idle_evict / 4, 1.0), 60.0))


def cache_over(
    backend: Backend,
    settings: CacheSection | None = None,
    *,
    seed: int,
    clock: Clock | None = None,
    observer: CacheObserver | None = None,
    max_secret_bytes: int = 65536,
    **more: Any,
) -> SecretCache:
    """A cache over `backend` alone, mounted at "" (secret names are its own), on a
    fresh hub; `more`: build_cache's other options (call_timeout, persister)."""
    return build_cache(
        router=Router({backend.name: backend}, {backend.name: ""}),
        hub=Hub(),
        settings=settings or CacheSection(),
        max_secret_bytes=max_secret_bytes,
        observer=observer or NullObserver(),
        clock=clock or SystemClock(),
        rng=random.Random(seed),
        **more,
    )


async def close_cache(cache: SecretCache) -> None:
    """Close `cache` and the backends behind it (the agent's graph does both)."""
    await cache.aclose()
    await close_backends(cache.core.gateway.router.backends)


def make_rig(
    *,
    mounts: dict[str, str] | None = None,
    max_secret_bytes: int = 65536,
    backend_max_bytes: int = 65536,
    call_timeout: float = 60.0,
    seed: int = 1234,
    **cache_settings: Any,
) -> CacheRig:
    """A cache over one MemoryBackend per mount (default: one named 'memory' at '')."""
    mounts = mounts or {"memory": ""}
    clock = FakeClock()
    backends = {
        name: MemoryBackend(name, max_secret_bytes=backend_max_bytes, clock=clock)
        for name in mounts
    }
    as_protocol: dict[str, Backend] = dict(backends)
    router = Router(as_protocol, mounts)
    settings = CacheSection(**cache_settings)
    hub = Hub()
    observer = RecordingObserver()
    cache = build_cache(
        router=router,
        hub=hub,
        settings=settings,
        max_secret_bytes=max_secret_bytes,
        observer=observer,
        clock=clock,
        rng=random.Random(seed),
        call_timeout=call_timeout,
    )
    first = next(iter(backends.values()))
    return CacheRig(cache, first, backends, clock, hub, observer, router, settings)
