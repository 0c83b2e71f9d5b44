"""The cache's state and the rules that change it.

`CacheCore` holds what is cached (current versions, other versions, names the
backend said do not exist, pinned names not loaded yet) and applies every
backend answer under the rules of docs/cache.md:

- a load of one name is single-flight: concurrent loads share one fetch;
- an answer with the cached version confirms it; a newer one moves the entry
  (update first, then `events.Changed`); an older one is refused, so the
  current version never moves backwards;
- a failure keeps the last good value, marks it failing (stale) and schedules
  a retry with jittered backoff; "not found" drops the entry;
- with `startup_spread`, the cache draws once an offset in [0, startup_spread]
  and every new entry's first routine check comes that much earlier: agents
  started together check at different times, while one agent's secrets stay
  together and keep sharing batched calls (docs/fleet.md);
- every stored, moved or confirmed entry is told to the `Persister`, and
  every removed one (cache/persist.py; by default nothing is kept); `seed`
  puts entries restored from it back, stale until their backend confirms them.

The reader-facing API (`SecretCache`) and the refresher's hooks
(`RefreshHooks`) are separate classes that both work through this one. All
state lives on one event loop, so plain dicts need no locks.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime

import structlog

from secretd.backoff import Backoff, jittered_interval
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
from secretd.cache.observer import CacheObserver
from secretd.cache.persist import NoPersister, Persister
from secretd.cache.persist_format import Persisted
from secretd.clock import Clock
from secretd.config import CacheSection
from secretd.errors import (
    BackendError,
    BadBackendAnswer,
    NotFound,
    SecretdError,
)
from secretd.events import Changed, Hub
from secretd.model import Fetched, SecretName, Version

log = structlog.get_logger(__name__)

# Why a restored entry is stale until its backend answers.
RESTORED = "restored from the persisted cache; not confirmed by its backend since the agent started"


class CacheCore:
    """Cache state plus the load/apply/fail rules."""

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
        persister: Persister | None = None,
    ) -> None:
        self.gateway = gateway
        self.hub = hub
        self.settings = settings
        self.observer = observer
        self.clock = clock
        self.rng = rng
        self.table = table
        self.negative = negative
        self.others = others
        self.backoff = backoff
        self.persister: Persister = persister if persister is not None else NoPersister()
        self.flights: SingleFlight[Entry] = SingleFlight()
        self.other_flights: SingleFlight[tuple[str, Fetched]] = SingleFlight()
        self.pinned: set[SecretName] = set()
        self.pending: dict[SecretName, PendingPin] = {}
        # This cache's start-up offset (drawn only when asked for: the rng's other
        # draws, and so every schedule without a spread, stay as they were).
        spread = settings.startup_spread
        self.phase = rng.uniform(0.0, spread) if spread > 0 else 0.0

    # -- loading and applying ---------------------------------------------------

    async def load(self, name: SecretName, *, announce_new: bool) -> Entry:
        """Fetch the current version (single-flight per name) and apply it."""
        return await self.flights.run(name, lambda: self._fetch_current(name, announce_new))

    async def _fetch_current(self, name: SecretName, announce_new: bool) -> Entry:
        backend, _ = self.gateway.router.locate(name)
        try:
            backend, fetched = await self.gateway.fetch(name)
            entry = self._accept(name, backend, fetched.version, announce_new=announce_new)
            if fetched.arn is not None and fetched.arn != entry.arn:
                entry.arn = fetched.arn
                self.persister.save(entry)
            return entry
        except NotFound:
            self.gone(name, backend)
            raise NotFound(f"secret {name!r} not found") from None
        except BackendError as exc:
            self.failed(name, backend, exc)
            raise

    def _accept(
        self, name: SecretName, backend: str, version: Version, *, announce_new: bool
    ) -> Entry:
        entry = self.table.get(name)
        now = self.clock.monotonic()
        if entry is None:
            return self._insert(name, backend, version, now, announce=announce_new)
        if version.version_id == entry.version.version_id:
            self.confirmed(entry, now)
            self.observer.secret_refreshed(name, backend, version.version_id, "unchanged")
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
        self.move(entry, backend, version)
        return entry

    def _insert(
        self, name: SecretName, backend: str, version: Version, now: float, *, announce: bool
    ) -> Entry:
        # A pinned secret that failed to load is awaited by someone (a template):
        # however it finally loads, tell the subscribers.
        announce = announce or name in self.pending
        entry = Entry(
            name=name,
            backend=backend,
            version=version,
            last_success=now,
            last_success_at=self.clock.now(),
            last_read=now,
            next_check=now + self._first_interval(),
            pinned=name in self.pinned,
        )
        self.evicted(self.table.put(entry))
        self.negative.discard(name)
        self.pending.pop(name, None)
        self.persister.save(entry)
        log.debug("secret.loaded", secret=name, backend=backend, version_id=version.version_id)
        if announce:
            self.observer.secret_refreshed(name, backend, version.version_id, "changed")
            self.hub.publish(Changed(name, version.version_id))
        return entry

    def move(self, entry: Entry, backend: str, version: Version) -> None:
        """The current version moved: update the entry, then tell subscribers."""
        previous = entry.version.version_id
        entry.backend = backend
        self.evicted(self.table.replace_version(entry, version))
        self.confirmed(entry, self.clock.monotonic())  # which also saves the new version
        self.others.forget(entry.name)
        log.info(
            "secret.rotated",
            secret=entry.name,
            backend=backend,
            version_id=version.version_id,
            previous_version=previous,
        )
        self.observer.secret_refreshed(entry.name, backend, version.version_id, "changed")
        self.hub.publish(Changed(entry.name, version.version_id))

    def confirmed(self, entry: Entry, now: float, delay: float | None = None) -> None:
        """The backend vouched for the cached version just now; the next check is
        `delay` from now (default: a jittered interval of its own)."""
        entry.failures, entry.last_error = 0, None
        entry.last_success, entry.last_success_at = now, self.clock.now()
        if delay is None:
            delay = jittered_interval(self.settings.refresh_interval, self.rng)
        entry.next_check = now + delay
        self.persister.save(entry)

    def _first_interval(self) -> float:
        """The delay before a new entry's first routine check: the usual jittered
        interval, shortened by this cache's start-up offset (never longer)."""
        return jittered_interval(max(self.settings.refresh_interval - self.phase, 0.0), self.rng)

    def failed(self, name: SecretName, backend: str, exc: SecretdError) -> None:
        """A load or check of `name` failed: keep the last good value, back off."""
        now = self.clock.monotonic()
        entry = self.table.get(name)
        tracked: Entry | PendingPin | None = entry
        if entry is None and name in self.pinned:
            tracked = self.pending.setdefault(name, PendingPin(backend=backend, next_check=now))
        if tracked is None:
            # Not kept or pinned: the reader that asked (and waits) gets the error.
            log.warning("secret.load_failed", secret=name, backend=backend, error=exc.message)
            return
        tracked.failures += 1
        tracked.last_error = exc.message
        tracked.next_check = now + self.backoff.delay(tracked.failures, self.rng)
        log.warning(
            "secret.refresh_failed",
            secret=name,
            backend=backend,
            error=exc.message,
            failures=tracked.failures,
        )
        self.observer.secret_refreshed(name, backend, None, "error")

    def gone(self, name: SecretName, backend: str) -> None:
        """The backend says `name` does not exist (any more)."""
        now = self.clock.monotonic()
        self.negative.add(name, now)
        self.others.forget(name)
        entry = self.table.remove(name)
        if name in self.pinned:
            pending = self.pending.setdefault(name, PendingPin(backend=backend, next_check=now))
            pending.failures += 1
            pending.last_error = f"secret {name!r} not found"
            pending.next_check = now + self.backoff.delay(pending.failures, self.rng)
        if entry is not None:
            self.persister.drop(name)
            log.info("secret.removed", secret=name, backend=backend)
            self.observer.secret_refreshed(name, backend, None, "not_found")
            self.hub.publish(Changed(name, None))

    def evicted(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            self.others.forget(entry.name)
            self.persister.drop(entry.name)
            log.info("cache.evicted", secret=entry.name, reason="bounds")

    def seed(self, items: Iterable[Persisted]) -> int:
        """Put entries restored from disk back (names cached already keep theirs).

        The clock of each is the persisted confirmation time: a restart resets
        neither `max_stale` nor the schedule. One its backend confirmed within
        `refresh_interval` is served as it would have been without the restart
        and checked when due; an older one is stale until its backend confirms
        it, and checked at once. Returns how many were seeded."""
        now, wall = self.clock.monotonic(), self.clock.now().timestamp()
        interval = self.settings.refresh_interval
        seeded = 0
        for item in items:
            if item.name in self.table:
                continue
            age = max(wall - item.confirmed_at, 0.0)
            fresh = age < interval
            entry = Entry(
                name=item.name,
                backend=item.backend,
                version=item.version,
                last_success=now - age,
                last_success_at=datetime.fromtimestamp(item.confirmed_at, UTC),
                last_read=now,
                next_check=now + max(jittered_interval(interval, self.rng) - age, 0.0)
                if fresh
                else now,
                pinned=item.name in self.pinned,
                last_error=None if fresh else RESTORED,
                arn=item.arn,
            )
            self.evicted(self.table.put(entry))
            self.pending.pop(item.name, None)
            seeded += 1
        return seeded

    # -- carrying state over a reload ---------------------------------------------

    def adopt(self, old: CacheCore, backends: Iterable[str]) -> int:
        """Take over `old`'s entries (values, stale state, schedule) served by
        `backends` - the ones a reload kept unchanged. Returns how many came."""
        kept = set(backends)
        taken = 0
        for entry in old.table:
            if entry.backend not in kept or entry.name in self.table:
                continue
            entry.pinned = entry.name in self.pinned
            self.evicted(self.table.put(entry))
            self.pending.pop(entry.name, None)
            taken += 1
        return taken

    async def aclose(self) -> None:
        """Cancel loads still in flight (the backends are closed by their owner)."""
        await self.flights.aclose()
        await self.other_flights.aclose()
