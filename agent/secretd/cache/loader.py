"""`SecretCache`: the `SecretReader` everything above the backends reads through.

Rules (SPEC §7, docs/cache.md):

- A miss loads the secret once, however many readers ask at the same time
  (single-flight); ``refresh=True`` joins the same flight, so concurrent
  refreshes share one backend call.
- A name the backend says does not exist is remembered for `negative_ttl`.
- A failed refresh keeps the last good value, served with ``stale=True`` until
  `max_stale` has passed since the backend last confirmed it; then reads raise
  `BackendUnavailable` (503) until a refresh succeeds again.
- An answer older than the cached current version (by number for numeric ids,
  else by `created_at`) is ignored and counts as a failed refresh: the current
  version never moves backwards.
- When the current version moves (refresh, watch event, or a read that found a
  newer one) the entry is updated first, then `events.Changed` is published.
- Unpinned entries go after `idle_evict` without reads, or least recently read
  first when `max_entries` / `max_bytes` would be exceeded. Pinned (declared and
  used) secrets are never evicted and are retried until they load.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

import structlog

from secretd.backends.base import WatchableBackend
from secretd.backends.registry import close_backends
from secretd.backends.router import Router
from secretd.cache.entries import (
    BackendHealth,
    Entry,
    EntryInfo,
    EntryTable,
    NegativeCache,
    PendingPin,
    VersionCache,
)
from secretd.cache.gateway import BackendGateway
from secretd.cache.refreshing import RefreshingCache
from secretd.clock import Clock
from secretd.config import CacheSection
from secretd.errors import BackendNotFound, BackendUnavailable, NotFound, SecretdError
from secretd.events import Hub
from secretd.model import CURRENT, CachedSecret, SecretName, Version
from secretd.observe import CacheObserver
from secretd.refresh.refresher import Refresher
from secretd.refresh.schedule import Backoff

log = structlog.get_logger(__name__)

# Non-current versions (?stage=, ?version=) are kept at most this long.
OTHER_VERSION_TTL = 60.0
# A preload asks the backends for this many secrets at a time.
PRELOAD_CONCURRENCY = 16
# At most this many names are taken from one backend's listing.
LIST_LIMIT = 100_000


class SecretCache(RefreshingCache):
    """The cache and loader: implements `model.SecretReader`."""

    def __init__(
        self,
        *,
        router: Router,
        hub: Hub,
        settings: CacheSection,
        max_secret_bytes: int,
        observer: CacheObserver,
        clock: Clock,
        rng: random.Random,
        call_timeout: float = 60.0,
    ) -> None:
        gateway = BackendGateway(
            router=router,
            observer=observer,
            clock=clock,
            max_secret_bytes=max_secret_bytes,
            call_timeout=call_timeout,
        )
        super().__init__(
            gateway=gateway,
            hub=hub,
            settings=settings,
            observer=observer,
            clock=clock,
            rng=rng,
            table=EntryTable(max_entries=settings.max_entries, max_bytes=settings.max_bytes),
            negative=NegativeCache(ttl=settings.negative_ttl, capacity=settings.max_entries),
            others=VersionCache(ttl=min(settings.refresh_interval, OTHER_VERSION_TTL)),
            backoff=Backoff.for_interval(settings.refresh_interval),
            call_timeout=call_timeout,
        )
        self._router = router

    # -- SecretReader ---------------------------------------------------------

    async def read(
        self,
        name: SecretName,
        *,
        stage: str | None = None,
        version_id: str | None = None,
        refresh: bool = False,
    ) -> CachedSecret:
        """The requested version (current by default)."""
        name = SecretName(name)
        if stage == CURRENT and version_id is None:
            stage = None
        if stage is not None or version_id is not None:
            return await self._read_other(name, stage, version_id, refresh=refresh)
        if refresh:
            return await self._read_refreshed(name)
        entry = self._table.get(name)
        if entry is not None:
            return self._serve(entry, observe=True)
        if self._negative.contains(name, self._clock.monotonic()):
            self._observer.cache_lookup("negative")
            raise NotFound(f"secret {name!r} not found")
        self._observer.cache_lookup("miss")
        entry = await self._load(name, announce_new=False)
        return self._serve(entry, observe=False)

    async def _read_refreshed(self, name: SecretName) -> CachedSecret:
        try:
            entry = await self._load(name, announce_new=False)
        except SecretdError:
            cached = self._table.get(name)
            if cached is None or not cached.failing:
                raise
            entry = cached  # the refresh failed: the last good value, marked stale
        return self._serve(entry, observe=False)

    def _serve(self, entry: Entry, *, observe: bool) -> CachedSecret:
        now = self._clock.monotonic()
        self._table.touch(entry, now)
        if entry.failing:
            if now - entry.last_success > self._settings.max_stale:
                raise BackendUnavailable(
                    f"secret {entry.name!r}: backend {entry.backend!r} has failed to refresh it "
                    "for longer than max_stale, so the cached value is no longer served"
                )
            if observe:
                self._observer.cache_lookup("stale")
        elif observe:
            self._observer.cache_lookup("hit")
        return CachedSecret(
            name=entry.name,
            version=entry.version,
            stale=entry.failing,
            fetched_at=entry.last_success,
            backend=entry.backend,
        )

    async def _read_other(
        self, name: SecretName, stage: str | None, version_id: str | None, *, refresh: bool
    ) -> CachedSecret:
        entry = self._table.get(name)
        held_current = entry is not None and entry.version.version_id == version_id
        if entry is not None and held_current and not refresh:
            return self._serve(entry, observe=True)
        selector = f"version:{version_id}" if version_id is not None else f"stage:{stage}"
        key = (name, selector)
        now = self._clock.monotonic()
        if not refresh:
            held = self._others.get(key, now)
            if held is not None:
                self._observer.cache_lookup("hit")
                backend, version, fetched_at = held
                return CachedSecret(
                    name, version, stale=False, fetched_at=fetched_at, backend=backend
                )
            if self._negative.contains(key, now):
                self._observer.cache_lookup("negative")
                raise NotFound(f"secret {name!r} has no {_describe(stage, version_id)}")
        self._observer.cache_lookup("miss")
        try:
            backend, version = await self._other_flights.run(
                key, lambda: self._gateway.fetch(name, version_id=version_id, stage=stage)
            )
        except BackendNotFound:
            self._negative.add(key, self._clock.monotonic())
            raise NotFound(f"secret {name!r} has no {_describe(stage, version_id)}") from None
        now = self._clock.monotonic()
        self._others.put(key, backend, version, now)
        self._notice_current(name, backend, version)
        return CachedSecret(name, version, stale=False, fetched_at=now, backend=backend)

    def _notice_current(self, name: SecretName, backend: str, version: Version) -> None:
        """A non-current read found the current version: if it is newer, take it."""
        entry = self._table.get(name)
        if entry is None or not version.is_current:
            return
        if version.version_id != entry.version.version_id:
            self._move(entry, backend, version)

    # -- pinning and preloading -------------------------------------------------

    def pin(self, names: Iterable[SecretName]) -> None:
        """Keep these secrets loaded and fresh, never idle-evicted; unloaded ones
        are loaded by the refresh loop (and retried with backoff)."""
        now = self._clock.monotonic()
        for raw in names:
            name = SecretName(raw)
            self._pinned.add(name)
            entry = self._table.get(name)
            if entry is not None:
                entry.pinned = True
                continue
            if name not in self._pending:
                try:
                    backend, _ = self._router.locate(name)
                except NotFound:
                    log.warning("secret.unroutable", secret=name)
                    continue
                self._pending[name] = PendingPin(backend=backend, next_check=now)

    async def preload(self, names: Iterable[SecretName]) -> dict[SecretName, Exception | None]:
        """Load each name now; the outcome per name (None = loaded)."""
        unique = list(dict.fromkeys(names))
        gate = asyncio.Semaphore(PRELOAD_CONCURRENCY)

        async def one(name: SecretName) -> Exception | None:
            async with gate:
                try:
                    await self._load(SecretName(name), announce_new=False)
                except Exception as exc:
                    return exc
                return None

        outcomes = await asyncio.gather(*(one(n) for n in unique))
        return dict(zip(unique, outcomes, strict=True))

    # -- what status, health and listings see -----------------------------------

    def snapshot(self) -> list[EntryInfo]:
        """Every cached secret, without values, sorted by name."""
        now = self._clock.monotonic()
        infos = [
            EntryInfo(
                name=e.name,
                backend=e.backend,
                version_id=e.version.version_id,
                age_seconds=max(now - e.last_success, 0.0),
                stale=e.failing,
                pinned=e.pinned,
                created_at=e.version.created_at,
                last_error=e.last_error,
            )
            for e in self._table
        ]
        return sorted(infos, key=lambda info: info.name)

    def is_cached(self, name: SecretName) -> bool:
        """Whether a read of `name`'s current version is answered without a
        backend call (a cached entry, or a remembered "not found")."""
        if name in self._table:
            return True
        return self._negative.contains(name, self._clock.monotonic())

    def failed_pins(self) -> dict[SecretName, str]:
        """Pinned secrets that are not loaded, with the reason."""
        return {n: p.last_error or "not loaded yet" for n, p in sorted(self._pending.items())}

    def backend_health(self) -> dict[str, BackendHealth]:
        return self._gateway.health()

    async def list_names(self, prefix: str) -> list[SecretName]:
        """Pinned and cached names, and those listable backends hold, under `prefix`."""
        found = {n for n in self._pinned if n.startswith(prefix)}
        found.update(e.name for e in self._table if e.name.startswith(prefix))
        for backend_name in self._router.backends:
            mount = self._router.mount_of(backend_name)
            if prefix.startswith(mount):
                sub = prefix[len(mount) :]
            elif mount.startswith(prefix):
                sub = ""
            else:
                continue
            try:
                listed = await self._gateway.list_names(backend_name, sub)
            except SecretdError as exc:
                log.warning("backend.list_failed", backend=backend_name, error=exc.message)
                continue
            for stripped in listed[:LIST_LIMIT]:
                full = self._router.full_name(backend_name, stripped)
                if full is not None and full.startswith(prefix):
                    found.add(full)
        return sorted(found)

    # -- lifecycle --------------------------------------------------------------

    async def run(self) -> None:
        """Refresh, watch and evict until cancelled."""
        watchables = {
            name: backend
            for name, backend in self._router.backends.items()
            if isinstance(backend, WatchableBackend)
        }
        # Checks falling due within min_gap share one pass (one batch per backend);
        # scaled with the interval so fast settings stay fast and slow ones batch well.
        interval = self._settings.refresh_interval
        min_gap = min(max(interval / 20, 0.05), 15.0)
        # With nothing scheduled yet (the loop starts before the first loads), look
        # again within one interval so newly loaded secrets are never checked late.
        max_gap = max(min(interval, 30.0), min_gap)
        refresher = Refresher(
            self,
            watchables=watchables,
            clock=self._clock,
            rng=self._rng,
            min_gap=min_gap,
            max_gap=max_gap,
        )
        await refresher.run(evict_every=min(max(self._settings.idle_evict / 4, 1.0), 60.0))

    async def aclose(self) -> None:
        """Cancel in-flight loads and close every backend of the router."""
        await self._flights.aclose()
        await self._other_flights.aclose()
        await close_backends(self._router.backends)


def _describe(stage: str | None, version_id: str | None) -> str:
    if version_id is not None:
        return f"version {version_id!r}"
    return f"version at stage {stage!r}"
