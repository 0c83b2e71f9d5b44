"""The cache's core: loading a current version, applying it under the
never-backwards rule, recording failures with backoff, and the hooks the
refresher drives (`due_checks`, `check`, `on_change`, `evict_idle`).

`SecretCache` (loader.py) builds on this with the reader-facing API. All
state lives on one event loop, so plain dicts need no locks; concurrent loads
of one name are collapsed by single-flight before they reach this code.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterable, Mapping, Sequence

import structlog

from secretd.cache.entries import (
    Entry,
    EntryTable,
    NegativeCache,
    PendingPin,
    VersionCache,
    is_older,
)
from secretd.cache.flight import SingleFlight
from secretd.cache.gateway import BackendGateway
from secretd.clock import Clock
from secretd.config import CacheSection
from secretd.errors import BackendError, BackendNotFound, BadBackendAnswer, NotFound, SecretdError
from secretd.events import Changed, Hub
from secretd.model import SecretName, Version
from secretd.observe import CacheObserver
from secretd.refresh.schedule import Backoff, jittered_interval

log = structlog.get_logger(__name__)

# Version checks and fetches the refresher runs at once per batch.
CHECK_CONCURRENCY = 8


class RefreshingCache:
    """Cache state plus the load/apply/fail rules and the refresher's hooks."""

    def __init__(
        self,
        *,
        gateway: BackendGateway,
        hub: Hub,
        settings: CacheSection,
        observer: CacheObserver,
        clock: Clock,
        rng: random.Random,
        table: EntryTable,
        negative: NegativeCache,
        others: VersionCache,
        backoff: Backoff,
        call_timeout: float,
    ) -> None:
        self._gateway = gateway
        self._hub = hub
        self._settings = settings
        self._observer = observer
        self._clock = clock
        self._rng = rng
        self._table = table
        self._negative = negative
        self._others = others
        self._backoff = backoff
        self._call_timeout = call_timeout
        self._flights: SingleFlight[Entry] = SingleFlight()
        self._other_flights: SingleFlight[tuple[str, Version]] = SingleFlight()
        self._pinned: set[SecretName] = set()
        self._pending: dict[SecretName, PendingPin] = {}
        self._awaiting_fetch: set[SecretName] = set()  # change events waiting to fetch

    # -- loading and applying ---------------------------------------------------

    async def _load(self, name: SecretName, *, announce_new: bool) -> Entry:
        """Fetch the current version (single-flight per name) and apply it."""
        return await self._flights.run(name, lambda: self._fetch_current(name, announce_new))

    async def _fetch_current(self, name: SecretName, announce_new: bool) -> Entry:
        backend, _ = self._gateway.router.locate(name)
        try:
            backend, version = await self._gateway.fetch(name)
            return self._accept(name, backend, version, announce_new=announce_new)
        except BackendNotFound:
            self._gone(name, backend)
            raise NotFound(f"secret {name!r} not found") from None
        except BackendError as exc:
            self._failed(name, backend, exc)
            raise

    def _accept(
        self, name: SecretName, backend: str, version: Version, *, announce_new: bool
    ) -> Entry:
        entry = self._table.get(name)
        now = self._clock.monotonic()
        if entry is None:
            return self._insert(name, backend, version, now, announce=announce_new)
        if version.version_id == entry.version.version_id:
            self._confirmed(entry, now)
            self._observer.secret_refreshed(name, backend, version.version_id, "unchanged")
            return entry
        if is_older(version, entry.version):
            log.warning(
                "secret.backwards_ignored",
                secret=name,
                backend=backend,
                cached_version=entry.version.version_id,
                answered_version=version.version_id,
            )
            raise BadBackendAnswer(
                f"backend {backend!r} answered an older version of {name!r} than the cached "
                "current one; ignored"
            )
        self._move(entry, backend, version)
        return entry

    def _insert(
        self, name: SecretName, backend: str, version: Version, now: float, *, announce: bool
    ) -> Entry:
        # A pinned secret that failed to load is awaited by someone (a template):
        # however it finally loads, tell the subscribers.
        announce = announce or name in self._pending
        entry = Entry(
            name=name,
            backend=backend,
            version=version,
            last_success=now,
            last_success_at=self._clock.now(),
            last_read=now,
            next_check=now + jittered_interval(self._settings.refresh_interval, self._rng),
            pinned=name in self._pinned,
        )
        self._evicted(self._table.put(entry))
        self._negative.discard(name)
        self._pending.pop(name, None)
        log.debug("secret.loaded", secret=name, backend=backend, version_id=version.version_id)
        if announce:
            self._observer.secret_refreshed(name, backend, version.version_id, "changed")
            self._hub.publish(Changed(name, version.version_id))
        return entry

    def _move(self, entry: Entry, backend: str, version: Version) -> None:
        """The current version moved: update the entry, then tell subscribers."""
        previous = entry.version.version_id
        entry.backend = backend
        self._evicted(self._table.replace_version(entry, version))
        self._confirmed(entry, self._clock.monotonic())
        self._others.forget(entry.name)
        log.info(
            "secret.rotated",
            secret=entry.name,
            backend=backend,
            version_id=version.version_id,
            previous_version=previous,
        )
        self._observer.secret_refreshed(entry.name, backend, version.version_id, "changed")
        self._hub.publish(Changed(entry.name, version.version_id))

    def _confirmed(self, entry: Entry, now: float) -> None:
        entry.failures, entry.last_error = 0, None
        entry.last_success, entry.last_success_at = now, self._clock.now()
        entry.next_check = now + jittered_interval(self._settings.refresh_interval, self._rng)

    def _failed(self, name: SecretName, backend: str, exc: SecretdError) -> None:
        now = self._clock.monotonic()
        entry = self._table.get(name)
        tracked: Entry | PendingPin | None = entry
        if entry is None and name in self._pinned:
            tracked = self._pending.setdefault(name, PendingPin(backend=backend, next_check=now))
        if tracked is None:
            log.info("secret.load_failed", secret=name, backend=backend, error=exc.message)
            return
        tracked.failures += 1
        tracked.last_error = exc.message
        tracked.next_check = now + self._backoff.delay(tracked.failures, self._rng)
        log.warning(
            "secret.refresh_failed",
            secret=name,
            backend=backend,
            error=exc.message,
            failures=tracked.failures,
        )
        self._observer.secret_refreshed(name, backend, None, "error")

    def _gone(self, name: SecretName, backend: str) -> None:
        """The backend says `name` does not exist (any more)."""
        now = self._clock.monotonic()
        self._negative.add(name, now)
        self._others.forget(name)
        entry = self._table.remove(name)
        if name in self._pinned:
            pending = self._pending.setdefault(name, PendingPin(backend=backend, next_check=now))
            pending.failures += 1
            pending.last_error = f"secret {name!r} not found"
            pending.next_check = now + self._backoff.delay(pending.failures, self._rng)
        if entry is not None:
            log.info("secret.removed", secret=name, backend=backend)
            self._observer.secret_refreshed(name, backend, None, "not_found")
            self._hub.publish(Changed(name, None))

    def _evicted(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            self._others.forget(entry.name)
            log.info("cache.evicted", secret=entry.name, reason="bounds")

    # -- hooks for the refresher --------------------------------------------------

    def next_check_at(self) -> float | None:
        """The monotonic time of the earliest scheduled check, if any."""
        times = [e.next_check for e in self._table]
        times.extend(p.next_check for p in self._pending.values())
        return min(times, default=None)

    def due_checks(self, now: float) -> dict[str, list[SecretName]]:
        """Names due for a check now, by backend. Each is rescheduled one call
        timeout ahead, so a slow check is not handed out twice."""
        due: dict[str, list[SecretName]] = {}
        hold = now + self._call_timeout
        for entry in self._table:
            if entry.next_check <= now:
                entry.next_check = hold
                due.setdefault(entry.backend, []).append(entry.name)
        for name, pending in self._pending.items():
            if pending.next_check <= now:
                pending.next_check = hold
                due.setdefault(pending.backend, []).append(name)
        return due

    async def check(self, backend: str, names: Sequence[SecretName]) -> None:
        """Check `names` on `backend`: one version call for the batch, then a
        fetch for each name whose version moved (or that is not loaded yet)."""
        loaded = [n for n in names if n in self._table]
        to_fetch = [n for n in names if n not in self._table]
        stripped: dict[SecretName, SecretName] = {}
        for name in loaded:
            try:
                stripped[self._gateway.router.locate(name)[1]] = name
            except NotFound:
                continue
        if stripped:
            try:
                versions = await self._gateway.versions(backend, list(stripped))
            except SecretdError as exc:
                for name in stripped.values():
                    self._failed(name, backend, exc)
                versions = None
            if versions is not None:
                to_fetch.extend(self._compare(backend, stripped, versions))
        await self._load_all(to_fetch)

    def _compare(
        self,
        backend: str,
        stripped: Mapping[SecretName, SecretName],
        versions: Mapping[SecretName, str],
    ) -> list[SecretName]:
        moved: list[SecretName] = []
        now = self._clock.monotonic()
        for short, name in stripped.items():
            entry = self._table.get(name)
            if entry is None:
                continue
            if versions.get(short) == entry.version.version_id:
                self._confirmed(entry, now)
                self._observer.secret_refreshed(
                    name, backend, entry.version.version_id, "unchanged"
                )
            else:
                moved.append(name)  # moved or gone: a fetch tells which, with checks
        return moved

    async def _load_all(self, names: Sequence[SecretName]) -> None:
        gate = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def one(name: SecretName) -> None:
            async with gate:
                with contextlib.suppress(SecretdError):  # recorded by _failed / _gone
                    await self._load(name, announce_new=True)

        await asyncio.gather(*(one(n) for n in names))

    async def on_change(self, backend: str, stripped: str) -> None:
        """A watched backend says `stripped` may have changed."""
        name = self._gateway.router.full_name(backend, stripped)
        if name is None:
            return
        self._negative.discard(name)
        self._others.forget(name)
        if name not in self._table and name not in self._pinned:
            return  # not held: the next read loads it
        if name in self._awaiting_fetch:
            return  # a fetch that starts after this event is already promised
        # A fetch already under way may have read the secret before this change:
        # let it finish, then fetch again. Events arriving meanwhile share that fetch.
        self._awaiting_fetch.add(name)
        try:
            await self._flights.wait_idle(name)
        finally:
            self._awaiting_fetch.discard(name)
        with contextlib.suppress(SecretdError):  # recorded by _failed / _gone
            await self._load(name, announce_new=True)

    def evict_idle(self) -> int:
        """Drop unpinned entries nobody read for `idle_evict`; how many went."""
        gone = self._table.idle(self._clock.monotonic(), self._settings.idle_evict)
        for entry in gone:
            self._others.forget(entry.name)
            log.info("cache.evicted", secret=entry.name, reason="idle")
        return len(gone)
