"""Real, in-memory implementations of what the API depends on (api.deps protocols).

`MemoryCache` behaves like the cache for the API's purposes: versions per name,
a "cached" set (reads of cached current versions never count as backend
reads), stale marking, injected failures and `rotate()` publishing `Changed`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from secretd.errors import NotFound, RateLimited, SecretdError
from secretd.events import Changed, Hub
from secretd.model import CURRENT, PREVIOUS, CachedSecret, Caller, SecretName, SecretValue, Version


@dataclass(frozen=True)
class Entry:
    name: SecretName
    version_id: str
    age_seconds: float
    stale: bool
    pinned: bool


@dataclass
class Health:
    ok: bool = True
    last_error: str | None = None
    last_success: str | None = "2026-01-01T00:00:00.000Z"
    state: str = "ok"
    endpoint: str | None = None
    on_primary: bool | None = None
    failovers: int = 0


@dataclass
class MemoryCache:
    """Versions per name; `backend_reads` counts reads that would reach a backend."""

    hub: Hub
    versions: dict[SecretName, list[Version]] = field(default_factory=dict)
    cached: set[SecretName] = field(default_factory=set)
    stale: set[SecretName] = field(default_factory=set)
    failures: dict[SecretName, SecretdError] = field(default_factory=dict)
    unloaded: dict[SecretName, str] = field(default_factory=dict)
    health: dict[str, Health] = field(default_factory=lambda: {"local": Health()})
    backend_reads: int = 0
    read_delay: float = 0.0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def put(self, name: str, value: bytes, *, cached: bool = True) -> str:
        """Add a version that becomes current (the old current becomes previous)."""
        key = SecretName(name)
        history = self.versions.setdefault(key, [])
        vid = f"v{next(self._ids)}"
        moved = []
        for old in history:
            stages = set(old.stages) - {PREVIOUS}
            if CURRENT in stages:
                stages = (stages - {CURRENT}) | {PREVIOUS}
            moved.append(Version(old.version_id, frozenset(stages), old.created_at, old.value))
        created = datetime(2026, 1, 1, tzinfo=UTC)
        moved.append(Version(vid, frozenset({CURRENT}), created, SecretValue(value)))
        self.versions[key] = moved
        if cached:
            self.cached.add(key)
        return vid

    def rotate(self, name: str, value: bytes) -> str:
        vid = self.put(name, value)
        self.hub.publish(Changed(SecretName(name), vid))
        return vid

    async def read(
        self,
        name: SecretName,
        *,
        stage: str | None = None,
        version_id: str | None = None,
        refresh: bool = False,
    ) -> CachedSecret:
        if refresh or name not in self.cached or stage or version_id:
            self.backend_reads += 1
            if self.read_delay:
                await asyncio.sleep(self.read_delay)
        if name in self.failures:
            raise self.failures[name]
        for version in reversed(self.versions.get(name, [])):
            if version_id is not None and version.version_id != version_id:
                continue
            if version_id is None and (stage or CURRENT) not in version.stages:
                continue
            self.cached.add(name)
            return CachedSecret(name, version, stale=name in self.stale, backend="local")
        raise NotFound(f"secret {name} not found")

    def read_held(self, name: SecretName) -> CachedSecret | None:
        if name not in self.cached:
            return None
        if name in self.failures:
            raise self.failures[name]
        for version in reversed(self.versions.get(name, [])):
            if CURRENT in version.stages:
                return CachedSecret(name, version, stale=name in self.stale, backend="local")
        return None

    def is_cached(self, name: SecretName) -> bool:
        return name in self.cached

    def snapshot(self) -> Sequence[Entry]:
        out = []
        for name in sorted(self.cached):
            current = next(v for v in self.versions[name] if CURRENT in v.stages)
            out.append(Entry(name, current.version_id, 1.5, name in self.stale, False))
        return out

    def failed_pins(self) -> Mapping[SecretName, str]:
        return self.unloaded

    def persist_refused(self) -> int:
        return 0

    def backend_health(self) -> Mapping[str, Health]:
        return self.health

    async def list_names(self, prefix: str) -> Sequence[SecretName]:
        return [n for n in self.versions if n.startswith(prefix)]


@dataclass
class UidPolicy:
    """Allows names starting with one of `prefixes` to the listed uids, and names
    starting with one of `tcp` to TCP callers."""

    uids: set[int]
    prefixes: tuple[str, ...] = ("",)
    tcp: tuple[str, ...] = ()

    def allows(self, caller: Caller, name: SecretName) -> bool:
        if caller.tcp:
            return name.startswith(self.tcp)
        return caller.uid in self.uids and name.startswith(self.prefixes)

    def readable_filter(self, caller: Caller) -> Callable[[SecretName], bool]:
        return lambda name: self.allows(caller, name)


@dataclass
class ListAudit:
    """Audit lines in memory: event, secret, version_id and result; with `extras`,
    also whether the caller came over TCP and the extra fields (api=..., op=...)."""

    lines: list[dict[str, object]] = field(default_factory=list)
    extras: bool = False

    def record(
        self,
        event: str,
        *,
        secret: str | None,
        version_id: str | None,
        caller: Caller | None,
        result: str,
        **extra: str,
    ) -> None:
        line: dict[str, object] = {
            "event": event,
            "secret": secret,
            "version_id": version_id,
            "result": result,
        }
        if self.extras:
            line.update(tcp=bool(caller and caller.tcp), **extra)
        self.lines.append(line)


@dataclass
class CountingMetrics:
    reads: list[str] = field(default_factory=list)
    opened: int = 0
    closed: int = 0

    def read(self, result: str) -> None:
        self.reads.append(result)

    def set_secret_ages(self, entries: Iterable[object]) -> None:
        del entries

    def set_last_reads(self, reads: Mapping[str, float | None]) -> None:
        del reads

    def set_failovers(self, counts: Mapping[str, int]) -> None:
        del counts

    def exposition(self) -> bytes:
        return f"secretd_reads_total {len(self.reads)}\n".encode()

    def connection_opened(self) -> None:
        self.opened += 1

    def connection_closed(self) -> None:
        self.closed += 1


@dataclass
class CountingLimiter:
    """Allows `budget` backend requests, then refuses."""

    budget: int = 1_000_000
    taken: int = 0

    def take(self, caller: Caller) -> None:
        if self.taken >= self.budget:
            raise RateLimited("too many requests")
        self.taken += 1
