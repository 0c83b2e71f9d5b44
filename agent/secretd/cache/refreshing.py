"""The hooks the refresher drives (refresh.refresher.RefreshTarget), over a `CacheCore`.

The refresher decides *when*; these decide *what* a check does: which names
are due, one batched version call per backend, a fetch only for names whose
version moved, change events from watched backends, and idle eviction. For a
backend that checks versions in bulk (AWS) a pass takes the names due soon as
well and gives the ones it confirmed one next check, so they stay one call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence

import structlog

from secretd.backoff import DEFAULT_SPREAD, jittered_interval
from secretd.cache.core import CacheCore
from secretd.errors import NotFound, SecretdError
from secretd.model import SecretName

log = structlog.get_logger(__name__)

# Version checks and fetches one batch runs at once.
CHECK_CONCURRENCY = 8


class RefreshHooks:
    """Implements `RefreshTarget` for one cache."""

    def __init__(self, core: CacheCore, *, call_timeout: float) -> None:
        self._core = core
        self._call_timeout = call_timeout
        self._awaiting_fetch: set[SecretName] = set()  # change events waiting to fetch

    def next_check_at(self) -> float | None:
        """The monotonic time of the earliest scheduled check, if any."""
        times = [e.next_check for e in self._core.table]
        times.extend(p.next_check for p in self._core.pending.values())
        return min(times, default=None)

    def due_checks(self, now: float) -> dict[str, list[SecretName]]:
        """Names due for a check now, by backend. Each is rescheduled one call
        timeout ahead, so a slow check is not handed out twice.

        A backend that checks versions in bulk (one call answers many names:
        AWS's ListSecrets) also gets, when anything of it is due, its names due
        within the jitter window (a fifth of the interval): one call then
        confirms them together, so they stay together instead of drifting
        apart into a call each (docs/fleet.md)."""
        due: dict[str, list[SecretName]] = {}
        hold = now + self._call_timeout
        table = self._core.table
        soon = now + self._core.settings.refresh_interval * DEFAULT_SPREAD
        bulk = {e.backend for e in table if e.next_check <= now and self._bulk(e.backend)}
        for entry in table:
            if entry.next_check <= (soon if entry.backend in bulk else now):
                entry.next_check = hold
                due.setdefault(entry.backend, []).append(entry.name)
        for name, pending in self._core.pending.items():
            if pending.next_check <= now:
                pending.next_check = hold
                due.setdefault(pending.backend, []).append(name)
        return due

    def _bulk(self, backend: str) -> bool:
        found = self._core.gateway.router.backends.get(backend)
        return getattr(found, "checks_in_bulk", False) is True

    async def check(self, backend: str, names: Sequence[SecretName]) -> None:
        """Check `names` on `backend`: one version call for the batch, then a
        fetch for each name whose version moved (or that is not loaded yet)."""
        core = self._core
        loaded = [n for n in names if n in core.table]
        to_fetch = [n for n in names if n not in core.table]
        stripped: dict[SecretName, SecretName] = {}
        for name in loaded:
            try:
                stripped[core.gateway.router.locate(name)[1]] = name
            except NotFound:
                continue
        if stripped:
            try:
                versions = await core.gateway.versions(backend, list(stripped))
            except SecretdError as exc:
                for name in stripped.values():
                    core.failed(name, backend, exc)
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
        core = self._core
        moved: list[SecretName] = []
        now = core.clock.monotonic()
        # Names one bulk call confirmed together keep one next check: they stay
        # together (one call next time too), and each agent's schedule still
        # wanders by the jitter, so agents started together drift apart.
        shared = None
        if self._bulk(backend):
            shared = jittered_interval(core.settings.refresh_interval, core.rng)
        for short, name in stripped.items():
            entry = core.table.get(name)
            if entry is None:
                continue
            if versions.get(short) == entry.version.version_id:
                core.confirmed(entry, now, shared)
                core.observer.secret_refreshed(name, backend, entry.version.version_id, "unchanged")
            else:
                moved.append(name)  # moved or gone: a fetch tells which, with checks
        return moved

    async def _load_all(self, names: Sequence[SecretName]) -> None:
        gate = asyncio.Semaphore(CHECK_CONCURRENCY)

        async def one(name: SecretName) -> None:
            async with gate:
                with contextlib.suppress(SecretdError):  # recorded by failed() / gone()
                    await self._core.load(name, announce_new=True)

        await asyncio.gather(*(one(n) for n in names))

    async def on_change(self, backend: str, stripped: str) -> None:
        """A watched backend says `stripped` may have changed."""
        core = self._core
        name = core.gateway.router.full_name(backend, stripped)
        if name is None:
            return
        core.negative.discard(name)
        core.others.forget(name)
        if name not in core.table and name not in core.pinned:
            return  # not held: the next read loads it
        if name in self._awaiting_fetch:
            return  # a fetch that starts after this event is already promised
        # A fetch already under way may have read the secret before this change:
        # let it finish, then fetch again. Events arriving meanwhile share that fetch.
        self._awaiting_fetch.add(name)
        try:
            await core.flights.wait_idle(name)
        finally:
            self._awaiting_fetch.discard(name)
        with contextlib.suppress(SecretdError):  # recorded by failed() / gone()
            await core.load(name, announce_new=True)

    def evict_idle(self) -> int:
        """Drop unpinned entries nobody read for `idle_evict`; how many went."""
        core = self._core
        gone = core.table.idle(core.clock.monotonic(), core.settings.idle_evict)
        for entry in gone:
            core.others.forget(entry.name)
            core.persister.drop(entry.name)
            log.info("cache.evicted", secret=entry.name, reason="idle")
        return len(gone)
