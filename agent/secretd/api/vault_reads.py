"""`VaultReader`: how the Vault-compatible routes read a secret.

The same steps, in the same order, as `GET /v1/secrets/{name}` (api.secrets):
access rules (a denial is audited and counted, and raised before any backend
is asked, so it says nothing about existence) -> the per-caller limit on reads
that reach a backend (a read joining one already under way is free) -> the
cache -> one audit line (`api="vault"`) and one read metric per request.

It is the one place to swap for a shared read service: the routes call only
`authorize`, `fetch` and `record`.
"""

from __future__ import annotations

from secretd.api.deps import ApiDeps
from secretd.errors import Forbidden
from secretd.model import CachedSecret, Caller, SecretName

_Key = tuple[SecretName, str | None, str | None]


class VaultReader:
    """Authorised, limited, audited reads through the cache for the Vault routes."""

    def __init__(self, deps: ApiDeps) -> None:
        self._deps = deps
        # Reads under way that reach a backend, by (name, stage, version): joiners are free.
        self._loading: dict[_Key, int] = {}

    def authorize(self, caller: Caller, name: SecretName) -> None:
        """Raise Forbidden (after a `deny` audit line) unless a rule allows the read."""
        if self._deps.policy.allows(caller, name):
            return
        self._deps.audit.record(
            "deny", secret=name, version_id=None, caller=caller, result="deny", api="vault"
        )
        self._deps.metrics.read("forbidden")
        raise Forbidden(f"not allowed to read {name}")

    async def fetch(
        self,
        caller: Caller,
        name: SecretName,
        *,
        stage: str | None = None,
        version_id: str | None = None,
    ) -> CachedSecret:
        """One version from the cache (current by default); charged to `caller`'s
        limit when it reaches a backend. Authorise first."""
        cache = self._deps.cache
        if stage is None and version_id is None and cache.is_cached(name):
            return await cache.read(name)  # the fast path: never limited
        key = (name, stage, version_id)
        if key not in self._loading:
            self._deps.limiter.take(caller)
        self._loading[key] = self._loading.get(key, 0) + 1
        try:
            return await cache.read(name, stage=stage, version_id=version_id)
        finally:
            self._loading[key] -= 1
            if not self._loading[key]:
                del self._loading[key]

    def record(
        self,
        caller: Caller,
        name: SecretName,
        version_id: str | None,
        result: str,
        **extra: str,
    ) -> None:
        """The audit line and metric of one request (`result`: ok, stale or an error code)."""
        self._deps.audit.record(
            "read",
            secret=name,
            version_id=version_id,
            caller=caller,
            result=result,
            api="vault",
            **extra,
        )
        self._deps.metrics.read(result)

    @staticmethod
    def result_of(secret: CachedSecret) -> str:
        return "stale" if secret.stale else "ok"
