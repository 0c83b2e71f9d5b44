"""The cache's tables: what is held, how big it is, and what goes first.

- `Entry`: one secret's current version plus its freshness bookkeeping.
- `EntryTable`: entries in least-recently-read order, bounded by count and
  bytes; eviction takes the least recently read *unpinned* entry (declared and
  template/credential secrets are pinned and never evicted).
- `NegativeCache`: names (or name+version keys) a backend said do not exist,
  remembered for a short TTL so a flood of hostile misses cannot hammer it.
- `VersionCache`: non-current versions (``?stage=previous``, ``?version=ID``)
  kept briefly, bounded by count.
- `EntryInfo` / `BackendHealth`: what `status` and `/v1/health` show. Never values.
- `is_older`: the order that keeps a current version from moving backwards.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from datetime import datetime

from secretd.model import CachedSecret, SecretName, Version

# Bookkeeping per entry beyond the value, so the byte bound is honest for tiny values.
ENTRY_OVERHEAD_BYTES = 256
_NUMERIC_ID = re.compile(r"[0-9]{1,40}")


def is_older(candidate: Version, cached: Version) -> bool:
    """True when `candidate` is an older version than `cached`.

    Numeric version ids (Vault/OpenBao KV) compare as numbers; any other ids
    compare by `created_at`. The same id is never older.
    """
    if candidate.version_id == cached.version_id:
        return False
    if _NUMERIC_ID.fullmatch(candidate.version_id) and _NUMERIC_ID.fullmatch(cached.version_id):
        return int(candidate.version_id) < int(cached.version_id)
    return candidate.created_at < cached.created_at


def entry_size(name: str, version: Version) -> int:
    return len(version.value) + len(name) + len(version.version_id) + ENTRY_OVERHEAD_BYTES


@dataclass(slots=True)
class Entry:
    """One cached secret. Times are `Clock.monotonic()` seconds."""

    name: SecretName
    backend: str
    version: Version
    last_success: float  # the backend last confirmed this version
    last_success_at: datetime  # the same moment, wall clock, for status
    last_read: float
    next_check: float
    pinned: bool = False
    failures: int = 0  # consecutive failed refreshes
    last_error: str | None = None  # set while refreshes fail: the entry is stale
    arn: str | None = None  # the backend's own identifier of the secret (AWS)
    view: CachedSecret | None = None  # what the last read handed out (cache.secret_cache)

    @property
    def failing(self) -> bool:
        return self.last_error is not None

    @property
    def size(self) -> int:
        return entry_size(self.name, self.version)


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """A cached secret as `status` shows it: no value."""

    name: SecretName
    backend: str
    version_id: str
    age_seconds: float  # since the backend last confirmed the version
    stale: bool
    pinned: bool
    created_at: datetime | None = None
    last_error: str | None = None


@dataclass(slots=True)
class BackendHealth:
    """How a backend's calls have been going, and (replicated backends: Vault,
    AWS) which endpoint serves it. `state` is "unknown" until its first call
    ends, then "ok" or "failing"; `ok` is False only when failing (a backend
    nobody has asked yet does not make the agent degraded)."""

    ok: bool = True
    last_error: str | None = None
    last_success: str | None = None  # RFC 3339 UTC
    state: str = "unknown"
    endpoint: str | None = None  # the Vault address or AWS region serving now
    on_primary: bool | None = None  # whether that is the first one configured
    failovers: int = 0  # moves off a failed endpoint since the backend was opened


@dataclass(slots=True)
class PendingPin:
    """A pinned name that is not loaded yet (its first load failed)."""

    backend: str
    next_check: float
    failures: int = 0
    last_error: str | None = None


class EntryTable:
    """Entries in least-recently-read order, bounded by count and bytes."""

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self._entries: OrderedDict[SecretName, Entry] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, name: SecretName) -> Entry | None:
        return self._entries.get(name)

    def touch(self, entry: Entry, now: float) -> None:
        """Record a read: the entry becomes the most recently read."""
        entry.last_read = now
        if entry.name in self._entries:
            self._entries.move_to_end(entry.name)

    def put(self, entry: Entry) -> list[Entry]:
        """Insert `entry` (most recently read) and return what was evicted for room."""
        old = self._entries.pop(entry.name, None)
        if old is not None:
            self._bytes -= old.size
        self._entries[entry.name] = entry
        self._bytes += entry.size
        return self._shrink(protect=entry.name)

    def replace_version(self, entry: Entry, version: Version) -> list[Entry]:
        """Swap the entry's version in place, keeping the byte count right."""
        self._bytes += entry_size(entry.name, version) - entry.size
        entry.version = version
        return self._shrink(protect=entry.name)

    def remove(self, name: SecretName) -> Entry | None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._bytes -= entry.size
        return entry

    def idle(self, now: float, idle_for: float) -> list[Entry]:
        """Remove and return unpinned entries nobody read for `idle_for` seconds."""
        gone = [e for e in self._entries.values() if not e.pinned and now - e.last_read >= idle_for]
        for entry in gone:
            self.remove(entry.name)
        return gone

    def _over(self) -> bool:
        return len(self._entries) > self._max_entries or self._bytes > self._max_bytes

    def _shrink(self, protect: SecretName) -> list[Entry]:
        if not self._over():
            return []
        victims: list[Entry] = []
        for entry in list(self._entries.values()):  # least recently read first
            if not self._over():
                break
            if entry.pinned or entry.name == protect:
                continue
            self.remove(entry.name)
            victims.append(entry)
        return victims


class NegativeCache:
    """Keys a backend said do not exist, until `ttl` passes; bounded by count."""

    def __init__(self, *, ttl: float, capacity: int) -> None:
        self._ttl = ttl
        self._capacity = max(capacity, 1)
        self._until: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def add(self, key: Hashable, now: float) -> None:
        if self._ttl <= 0:
            return
        self._until.pop(key, None)
        self._until[key] = now + self._ttl
        while len(self._until) > self._capacity:
            self._until.popitem(last=False)  # the oldest goes first

    def contains(self, key: Hashable, now: float) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if now >= until:
            del self._until[key]
            return False
        return True

    def discard(self, key: Hashable) -> None:
        self._until.pop(key, None)


@dataclass(slots=True)
class _Held:
    backend: str
    version: Version
    fetched_at: float
    until: float


class VersionCache:
    """Non-current versions keyed by (name, selector), kept for `ttl` seconds."""

    def __init__(self, *, ttl: float, capacity: int = 256) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._held: OrderedDict[tuple[SecretName, str], _Held] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def get(self, key: tuple[SecretName, str], now: float) -> tuple[str, Version, float] | None:
        held = self._held.get(key)
        if held is None:
            return None
        if now >= held.until:
            del self._held[key]
            return None
        return held.backend, held.version, held.fetched_at

    def put(self, key: tuple[SecretName, str], backend: str, version: Version, now: float) -> None:
        if self.ttl <= 0:
            return
        self._held.pop(key, None)
        self._held[key] = _Held(backend, version, now, now + self.ttl)
        while len(self._held) > self.capacity:
            self._held.popitem(last=False)

    def forget(self, name: SecretName) -> None:
        """Drop every version of `name` (its stages moved)."""
        for key in [k for k in self._held if k[0] == name]:
            del self._held[key]
