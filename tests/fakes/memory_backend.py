"""`MemoryBackend`: a real in-memory implementation of the `Backend`,
`WatchableBackend` and `ListableBackend` protocols, for tests of anything that
sits above the backends (cache, API, render, CLI).

It keeps versions and stages as docs/reference/http-api.md says (a new current version pushes the
old current to `previous`), emits change events like the file store's watcher,
and lets a test count calls and inject trouble:

- `calls[op]` / `fetches[name]`: how often each operation / name was asked;
- `fail` (every call raises it) and `fail_next(exc, times)`;
- `hold()` / `release()`: park every call until released (`waiting` says how
  many are parked) - deterministic concurrency without sleeps;
- `latency`: real seconds each call takes (benchmarks);
- `tamper`: rewrite an answer before it leaves (hostile-backend tests).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from secretd.clock import Clock
from secretd.errors import BackendError, BackendUnavailable, NotFound
from secretd.model import CURRENT, PENDING, PREVIOUS, Fetched, SecretName, SecretValue, Version


@dataclass
class _Record:
    version_id: str
    created_at: datetime
    value: bytes
    stages: set[str] = field(default_factory=set)

    def version(self) -> Version:
        return Version(
            self.version_id, frozenset(self.stages), self.created_at, SecretValue(self.value)
        )


class MemoryBackend:
    """Secrets in a dict, with counters, injectable failures and change events."""

    def __init__(
        self,
        name: str = "memory",
        *,
        max_secret_bytes: int = 65536,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self._max_bytes = max_secret_bytes
        self._clock = clock
        self._secrets: dict[SecretName, list[_Record]] = {}
        self._next_id = 0
        self._watchers: set[asyncio.Queue[SecretName | None]] = set()
        self._gate: asyncio.Event | None = None
        self._hold_answered = False
        self._fail_queue: list[BackendError] = []
        self.calls: Counter[str] = Counter()
        self.fetches: Counter[str] = Counter()
        self.fail: BackendError | None = None
        self.latency = 0.0
        self.tamper: Callable[[Fetched], Fetched] | None = None
        self.waiting = 0
        self.closed = False

    # -- test controls ------------------------------------------------------------

    def put(
        self,
        name: str,
        value: bytes | str,
        *,
        stage: str = CURRENT,
        version_id: str | None = None,
        created_at: datetime | None = None,
    ) -> str:
        """Add a version; it takes `stage` (current by default). Returns its id."""
        data = value.encode() if isinstance(value, str) else bytes(value)
        if len(data) > self._max_bytes:
            raise ValueError("value larger than this backend's max_secret_bytes")
        if version_id is None:
            self._next_id += 1
            version_id = str(self._next_id)
        key = SecretName(name)
        records = self._secrets.setdefault(key, [])
        if any(r.version_id == version_id for r in records):
            raise ValueError(f"version {version_id!r} of {name!r} exists")
        records.append(_Record(version_id, created_at or self._wall(), data))
        self._move_stage(key, version_id, stage)
        self.notify(key)
        return version_id

    def promote(self, name: str, version_id: str) -> None:
        """Make `version_id` current (the old current becomes previous)."""
        key = SecretName(name)
        self._move_stage(key, version_id, CURRENT)
        self._record(key, version_id).stages.discard(PENDING)
        self.notify(key)

    def delete(self, name: str) -> None:
        key = SecretName(name)
        self._secrets.pop(key, None)
        self.notify(key)

    def notify(self, name: str) -> None:
        """Emit a change event for `name` to every open `changes()` stream."""
        for queue in self._watchers:
            queue.put_nowait(SecretName(name))

    def end_watch(self) -> None:
        """End every open `changes()` stream (as a crashed watcher would)."""
        for queue in self._watchers:
            queue.put_nowait(None)

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def fail_next(self, exc: BackendError, times: int = 1) -> None:
        self._fail_queue.extend([exc] * times)

    def hold(self, *, answered: bool = False) -> None:
        """Park every call until `release()`. With `answered`, a fetch first reads
        its answer and then parks (a slow reply to an earlier state)."""
        self._gate = asyncio.Event()
        self._hold_answered = answered

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    # -- the Backend protocols -------------------------------------------------------

    async def fetch(
        self, name: SecretName, *, version_id: str | None = None, stage: str | None = None
    ) -> Fetched:
        if self._gate is not None and self._hold_answered:
            answer = self._answer(name, version_id, stage)
            await self._enter("fetch")
            self.fetches[name] += 1
            return answer
        await self._enter("fetch")
        self.fetches[name] += 1
        return self._answer(name, version_id, stage)

    def _answer(self, name: SecretName, version_id: str | None, stage: str | None) -> Fetched:
        records = self._secrets.get(name)
        if not records:
            raise NotFound(f"secret {name!r} not found in {self.name!r}")
        wanted = stage or CURRENT
        for record in records:
            if (version_id is not None and record.version_id == version_id) or (
                version_id is None and wanted in record.stages
            ):
                answer = Fetched(name, record.version())
                return self.tamper(answer) if self.tamper is not None else answer
        raise NotFound(f"secret {name!r} has no such version in {self.name!r}")

    async def current_versions(self, names: Sequence[SecretName]) -> Mapping[SecretName, str]:
        await self._enter("versions")
        found: dict[SecretName, str] = {}
        for name in names:
            for record in self._secrets.get(name, []):
                if CURRENT in record.stages:
                    found[name] = record.version_id
        return found

    async def list_names(self, prefix: str = "") -> Sequence[SecretName]:
        await self._enter("list")
        return sorted(n for n in self._secrets if n.startswith(prefix))

    async def changes(self) -> AsyncIterator[SecretName]:
        queue: asyncio.Queue[SecretName | None] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            while (name := await queue.get()) is not None:
                yield name
        finally:
            self._watchers.discard(queue)

    async def aclose(self) -> None:
        self.closed = True
        self.end_watch()

    # -- internals ----------------------------------------------------------------------

    async def _enter(self, op: str) -> None:
        self.calls[op] += 1
        if self._gate is not None:
            gate = self._gate
            self.waiting += 1
            try:
                await gate.wait()
            finally:
                self.waiting -= 1
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if self.closed:
            raise BackendUnavailable(f"backend {self.name!r} is closed")
        if self._fail_queue:
            raise self._fail_queue.pop(0)
        if self.fail is not None:
            raise self.fail

    def _record(self, name: SecretName, version_id: str) -> _Record:
        for record in self._secrets.get(name, []):
            if record.version_id == version_id:
                return record
        raise KeyError(f"{name}@{version_id}")

    def _move_stage(self, name: SecretName, version_id: str, stage: str) -> None:
        target = self._record(name, version_id)
        if stage == CURRENT:
            old = next((r for r in self._secrets[name] if CURRENT in r.stages), None)
            if old is not None and old is not target:
                for record in self._secrets[name]:
                    record.stages.discard(PREVIOUS)
                old.stages.discard(CURRENT)
                old.stages.add(PREVIOUS)
        else:
            for record in self._secrets[name]:
                record.stages.discard(stage)
        target.stages.add(stage)

    def _wall(self) -> datetime:
        return self._clock.now() if self._clock is not None else datetime.now(UTC)
