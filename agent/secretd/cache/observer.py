"""What the cache reports as it works, for metrics and audit.

The cache calls a `CacheObserver`; `metrics.Metrics` and `audit.AuditLog`
implement it, and the composition root fans out to both with `Observers`.
Nothing here ever receives a secret value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from secretd.model import SecretName


class CacheObserver(Protocol):
    """Told about cache lookups, backend calls and refreshes."""

    def cache_lookup(self, result: str) -> None:
        """`result` is one of hit, miss, stale, negative."""
        ...

    def backend_call(self, backend: str, op: str, seconds: float, ok: bool) -> None:
        """One backend operation (`fetch`, `versions`, `list`) and how it went."""
        ...

    def secret_refreshed(
        self, name: SecretName, backend: str, version_id: str | None, result: str
    ) -> None:
        """A refresh of `name` ended with `result` (changed, unchanged, error, not_found)."""
        ...


class NullObserver:
    """Observes nothing (tests, `secretd render --once`)."""

    def cache_lookup(self, result: str) -> None:
        pass

    def backend_call(self, backend: str, op: str, seconds: float, ok: bool) -> None:
        pass

    def secret_refreshed(
        self, name: SecretName, backend: str, version_id: str | None, result: str
    ) -> None:
        pass


class Observers:
    """Fans every observation out to several observers."""

    def __init__(self, observers: Sequence[CacheObserver]) -> None:
        self._observers = tuple(observers)

    def cache_lookup(self, result: str) -> None:
        for obs in self._observers:
            obs.cache_lookup(result)

    def backend_call(self, backend: str, op: str, seconds: float, ok: bool) -> None:
        for obs in self._observers:
            obs.backend_call(backend, op, seconds, ok)

    def secret_refreshed(
        self, name: SecretName, backend: str, version_id: str | None, result: str
    ) -> None:
        for obs in self._observers:
            obs.secret_refreshed(name, backend, version_id, result)
