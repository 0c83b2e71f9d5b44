"""An in-memory SecretReader that publishes changes to a Hub: a real, small
implementation of the protocol for render tests (no backend, no cache)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

from secretd.errors import BackendUnavailable, NotFound
from secretd.events import Changed, Hub
from secretd.model import (
    CURRENT,
    PREVIOUS,
    CachedSecret,
    SecretName,
    SecretValue,
    Version,
)


class DictReader:
    """Secrets in a dict; `put` makes a new current version and publishes `Changed`."""

    def __init__(self, hub: Hub | None = None, *, delay: float = 0.0) -> None:
        self.hub = hub or Hub()
        self.delay = delay  # seconds each read takes (to show reads are shared)
        self.reads: Counter[str] = Counter()
        self.failing: set[str] = set()  # names whose reads raise BackendUnavailable
        self._versions: dict[str, list[Version]] = {}
        self._counter = 0

    def put(self, name: str, value: str | bytes, *, publish: bool = True) -> str:
        raw = value.encode("utf-8") if isinstance(value, str) else value
        self._counter += 1
        version_id = f"v{self._counter}"
        history = self._versions.setdefault(name, [])
        now = datetime.now(UTC)
        demoted = []
        for old in history:
            stages = old.stages - {CURRENT, PREVIOUS}
            if CURRENT in old.stages:
                stages |= {PREVIOUS}
            demoted.append(Version(old.version_id, frozenset(stages), old.created_at, old.value))
        demoted.append(Version(version_id, frozenset({CURRENT}), now, SecretValue(raw)))
        self._versions[name] = demoted
        if publish:
            self.hub.publish(Changed(SecretName(name), version_id))
        return version_id

    def delete(self, name: str) -> None:
        self._versions.pop(name, None)
        self.hub.publish(Changed(SecretName(name), None))

    async def read(
        self,
        name: SecretName,
        *,
        stage: str | None = None,
        version_id: str | None = None,
        refresh: bool = False,
    ) -> CachedSecret:
        self.reads[name] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if name in self.failing:
            raise BackendUnavailable(f"backend for {name} is down")
        wanted = stage or CURRENT
        for version in self._versions.get(name, []):
            if version_id is not None and version.version_id != version_id:
                continue
            if version_id is None and wanted not in version.stages:
                continue
            return CachedSecret(name=SecretName(name), version=version)
        raise NotFound(f"secret {name} not found")
