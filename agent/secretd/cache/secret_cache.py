"""`SecretCache`: the `SecretReader` everything above the backends reads through.

It is the reader-facing side of a `CacheCore` (core.py holds the state and the
rules that change it; refreshing.py the hooks the refresher drives). Rules
(docs/cache.md):

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
import math
import random
from collections.abc import Iterable

import structlog

from secretd.backends.router import Router
from secretd.backoff import Backoff
from secretd.cache.core import CacheCore
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
from secretd.cache.observer import CacheObserver
from secretd.cache.persist import DiskPersister, Persister
from secretd.cache.refreshing import RefreshHooks
from secretd.clock import Clock
from secretd.config import CacheSection
from secretd.errors import BackendUnavailable, InvalidName, NotFound, SecretdError
from secretd.events import Hub
from secretd.model import CURRENT, CachedSecret, SecretName, Version

log = structlog.get_logger(__name__)

# Non-current versions (?stage=, ?version=) are kept at most this long.
OTHER_VERSION_TTL = 60.0
# A preload asks the backends for this many secrets at a time.
PRELOAD_CONCURRENCY = 16
# At most this many names are taken from one backend's listing.
LIST_LIMIT = 100_000


def build_cache(
    *,
    router: Router,
    hub: Hub,
    settings: CacheSection,
    max_secret_bytes: int,
    observer: CacheObserver,
    clock: Clock,
    rng: random.Random,
    call_timeout: float = 60.0,
    persister: Persister | None = None,
) -> SecretCache:
    """A `SecretCache` over `router`'s backends, with its core and gateway;
    `persister` keeps its current versions on disk (cache/persist.py)."""
    gateway = BackendGateway(
        router=router,
        observer=observer,
        clock=clock,
        max_secret_bytes=max_secret_bytes,
        call_timeout=call_timeout,
    )
    core = CacheCore(
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
        persister=persister,
    )
    return SecretCache(core, RefreshHooks(core, call_timeout=call_timeout))


class SecretCache:
    """The reader-facing cache: implements `model.SecretReader`."""

    def __init__(self, core: CacheCore, hooks: RefreshHooks) -> None:
        self._core = core
        self._hooks = hooks
        self._router = core.gateway.router

    @property
    def core(self) -> CacheCore:
        """The state and rules (a reload hands it to the next cache's `adopt`)."""
        return self._core

    @property
    def refresh_target(self) -> RefreshHooks:
        """What a `Refresher` drives for this cache."""
        return self._hooks

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
        entry = self._core.table.get(name)
        if entry is not None:
            return self._serve(entry, observe=True)
        return await self._read_missing(name)

    def read_held(self, name: SecretName) -> CachedSecret | None:
        """The current version when the cache holds it (a hit, or stale within
        `max_stale`), without suspending; None when only `read` can answer (a
        miss, a remembered "not found"). Counted as `read` counts a hit."""
        entry = self._core.table.get(name)
        return None if entry is None else self._serve(entry, observe=True)

    async def _read_missing(self, name: SecretName) -> CachedSecret:
        if self._core.negative.contains(name, self._core.clock.monotonic()):
            self._core.observer.cache_lookup("negative")
            raise NotFound(f"secret {name!r} not found")
        self._core.observer.cache_lookup("miss")
        entry = await self._core.load(name, announce_new=False)
        return self._serve(entry, observe=False)

    async def _read_refreshed(self, name: SecretName) -> CachedSecret:
        try:
            entry = await self._core.load(name, announce_new=False)
        except SecretdError:
            cached = self._core.table.get(name)
            if cached is None or not cached.failing:
                raise
            entry = cached  # the refresh failed: the last good value, marked stale
        return self._serve(entry, observe=False)

    def _serve(self, entry: Entry, *, observe: bool) -> CachedSecret:
        now = self._core.clock.monotonic()
        self._core.table.touch(entry, now)
        if entry.failing:
            if now - entry.last_success > self._core.settings.max_stale:
                raise BackendUnavailable(
                    f"secret {entry.name!r}: backend {entry.backend!r} has failed to refresh it "
                    "for longer than max_stale, so the cached value is no longer served"
                )
            if observe:
                self._core.observer.cache_lookup("stale")
        elif observe:
            self._core.observer.cache_lookup("hit")
        return _view(entry)

    async def _read_other(
        self, name: SecretName, stage: str | None, version_id: str | None, *, refresh: bool
    ) -> CachedSecret:
        entry = self._core.table.get(name)
        held_current = entry is not None and entry.version.version_id == version_id
        if entry is not None and held_current and not refresh:
            return self._serve(entry, observe=True)
        selector = f"version:{version_id}" if version_id is not None else f"stage:{stage}"
        key = (name, selector)
        now = self._core.clock.monotonic()
        if not refresh:
            held = self._core.others.get(key, now)
            if held is not None:
                self._core.observer.cache_lookup("hit")
                backend, version, fetched_at = held
                return CachedSecret(
                    name, version, False, fetched_at, backend, arn=self._arn_of(name)
                )
            if self._core.negative.contains(key, now):
                self._core.observer.cache_lookup("negative")
                raise NotFound(f"secret {name!r} has no {_describe(stage, version_id)}")
        self._core.observer.cache_lookup("miss")
        try:
            backend, fetched = await self._core.other_flights.run(
                key, lambda: self._core.gateway.fetch(name, version_id=version_id, stage=stage)
            )
        except NotFound:
            self._core.negative.add(key, self._core.clock.monotonic())
            raise NotFound(f"secret {name!r} has no {_describe(stage, version_id)}") from None
        now = self._core.clock.monotonic()
        version = fetched.version
        self._core.others.put(key, backend, version, now)
        self._notice_current(name, backend, version)
        arn = fetched.arn or self._arn_of(name)
        return CachedSecret(name, version, False, now, backend, arn=arn)

    def _arn_of(self, name: SecretName) -> str | None:
        entry = self._core.table.get(name)
        return entry.arn if entry is not None else None

    def _notice_current(self, name: SecretName, backend: str, version: Version) -> None:
        """A non-current read found the current version: if it is newer, take it."""
        entry = self._core.table.get(name)
        if entry is None or not version.is_current:
            return
        if version.version_id != entry.version.version_id:
            self._core.move(entry, backend, version)

    # -- pinning and preloading -------------------------------------------------

    def pin(self, names: Iterable[SecretName]) -> None:
        """Keep these secrets loaded and fresh, never idle-evicted; unloaded ones
        are loaded by the refresh loop (and retried with backoff)."""
        now = self._core.clock.monotonic()
        for raw in names:
            name = SecretName(raw)
            self._core.pinned.add(name)
            entry = self._core.table.get(name)
            if entry is not None:
                entry.pinned = True
                continue
            if name not in self._core.pending:
                try:
                    backend, _ = self._router.locate(name)
                except NotFound:
                    log.warning("secret.unroutable", secret=name)
                    continue
                self._core.pending[name] = PendingPin(backend=backend, next_check=now)

    async def preload(self, names: Iterable[SecretName]) -> dict[SecretName, Exception | None]:
        """Load each name now; the outcome per name (None = loaded)."""
        unique = list(dict.fromkeys(names))
        held = self._hold_pins(unique)
        try:
            return await self._load_each(unique)
        finally:
            self._release_pins(held)

    def _hold_pins(self, names: list[SecretName]) -> list[PendingPin]:
        """Pinned names are due for the refresher from the moment they are pinned;
        while a preload loads them, the refresher must not load them too (with
        a short refresh interval it would, each a second time). A load's
        outcome reschedules its pin (a failure: with backoff)."""
        held = []
        for name in names:
            pending = self._core.pending.get(name)
            if pending is not None:
                pending.next_check = math.inf
                held.append(pending)
        return held

    def _release_pins(self, held: list[PendingPin]) -> None:
        now = self._core.clock.monotonic()
        for pending in held:
            if pending.next_check == math.inf:  # its load never ended (cancelled)
                pending.next_check = now

    async def _load_each(self, unique: list[SecretName]) -> dict[SecretName, Exception | None]:
        gate = asyncio.Semaphore(PRELOAD_CONCURRENCY)

        async def one(name: SecretName) -> Exception | None:
            async with gate:
                try:
                    await self._core.load(SecretName(name), announce_new=False)
                except Exception as exc:
                    return exc
                return None

        outcomes = await asyncio.gather(*(one(n) for n in unique))
        return dict(zip(unique, outcomes, strict=True))

    async def restore(self) -> int:
        """Seed the cache from the persisted cache, if there is one (at start,
        before the first loads): how many entries came back, each stale until its
        backend confirms it (checked at once)."""
        persister = self._core.persister
        if not isinstance(persister, DiskPersister):
            return 0
        items = await asyncio.to_thread(
            persister.restore, self._backend_of, max_stale=self._core.settings.max_stale
        )
        seeded = self._core.seed(items)
        log.info("cache.restored", entries=seeded, directory=str(persister.directory))
        return seeded

    def _backend_of(self, name: SecretName) -> str | None:
        try:
            return self._router.locate(name)[0]
        except (NotFound, InvalidName):
            return None

    # -- what status, health and listings see -----------------------------------

    def persist_refused(self) -> int:
        """Persisted entries refused (tampered, foreign, rolled back) and still on disk."""
        persister = self._core.persister
        return persister.refused() if isinstance(persister, DiskPersister) else 0

    def snapshot(self) -> list[EntryInfo]:
        """Every cached secret, without values, sorted by name."""
        now = self._core.clock.monotonic()
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
            for e in self._core.table
        ]
        return sorted(infos, key=lambda info: info.name)

    def is_cached(self, name: SecretName) -> bool:
        """Whether a read of `name`'s current version is answered without a
        backend call (a cached entry, or a remembered "not found")."""
        if name in self._core.table:
            return True
        return self._core.negative.contains(name, self._core.clock.monotonic())

    def failed_pins(self) -> dict[SecretName, str]:
        """Pinned secrets that are not loaded, with the reason."""
        return {n: p.last_error or "not loaded yet" for n, p in sorted(self._core.pending.items())}

    def backend_health(self) -> dict[str, BackendHealth]:
        return self._core.gateway.health()

    async def list_names(self, prefix: str) -> list[SecretName]:
        """Pinned and cached names, and those listable backends hold, under `prefix`."""
        found = {n for n in self._core.pinned if n.startswith(prefix)}
        found.update(e.name for e in self._core.table if e.name.startswith(prefix))
        for backend_name in self._router.backends:
            mount = self._router.mount_of(backend_name)
            if prefix.startswith(mount):
                sub = prefix[len(mount) :]
            elif mount.startswith(prefix):
                sub = ""
            else:
                continue
            try:
                listed = await self._core.gateway.list_names(backend_name, sub)
            except SecretdError as exc:
                log.warning("backend.list_failed", backend=backend_name, error=exc.message)
                continue
            for stripped in listed[:LIST_LIMIT]:
                full = self._router.full_name(backend_name, stripped)
                if full is not None and full.startswith(prefix):
                    found.add(full)
        return sorted(found)

    # -- lifecycle --------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Let the loads under way finish (at most `grace` seconds): readers wait on them."""
        await self._core.flights.drain(grace)
        await self._core.other_flights.drain(grace)

    async def aclose(self) -> None:
        """Cancel in-flight loads. The backends belong to whoever opened them."""
        await self._core.aclose()


def _view(entry: Entry) -> CachedSecret:
    """The entry as readers see it: the same object while nothing it shows has
    changed, so the answers the API memoises on it are built once."""
    view = entry.view
    if (
        view is None
        or view.version is not entry.version
        or view.stale != entry.failing
        or view.fetched_at != entry.last_success
        or view.backend != entry.backend
        or view.arn != entry.arn
    ):
        view = entry.view = CachedSecret(
            name=entry.name,
            version=entry.version,
            stale=entry.failing,
            fetched_at=entry.last_success,
            backend=entry.backend,
            arn=entry.arn,
        )
    return view


def _describe(stage: str | None, version_id: str | None) -> str:
    if version_id is not None:
        return f"version {version_id!r}"
    return f"version at stage {stage!r}"
