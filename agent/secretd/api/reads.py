"""`ReadService`: the one read path behind every API that hands out a value.

`GET /v1/secrets/{name}`, `GET /secretsmanager/get` and the Vault-compatible
routes differ only in how they parse the request and shape the answer. The
read itself happens here, once, in this order:

1. the access rules (docs/security.md): a denial is audited (bounded per
   caller by the audit log) and counted, and raised before any backend is
   asked, so it says the same whether or not the secret exists;
2. the per-caller limit on reads that reach a backend (docs/api.md): a cached
   current version is free; a miss, another version or an explicit refresh
   costs one token, except a miss that joins a load already under way (the
   cache coalesces them into one backend call, so only the first is charged);
3. the cache;
4. the route's own steps: a long-poll for a newer version, then shaping the
   answer (which may still refuse it: a field that is missing, an ARN that
   does not match);
5. one audit line and one metric per request, with the route's `api` label.

The routes never touch the policy, the limiter or the audit log themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from secretd.api.ports import ApiDeps, Served
from secretd.errors import Forbidden, SecretdError
from secretd.model import CachedSecret, Caller, SecretName

T = TypeVar("T")
_Key = tuple[SecretName, str | None, str | None]
# Turns the version read into the route's answer; raises SecretdError to refuse it.
Shape = Callable[[CachedSecret], T]
# Waits for a newer version (a long-poll) before the answer is shaped.
Follow = Callable[[Served, CachedSecret], Awaitable[CachedSecret]]
# Picks the version to answer with, reading through `ReadService.fetch`.
Select = Callable[[Served], Awaitable[CachedSecret]]


class ReadService:
    """Authorised, limited, audited and counted reads through the cache."""

    def __init__(self, deps: ApiDeps) -> None:
        self._deps = deps
        # Reads under way that reach a backend, by (name, stage, version): joiners are free.
        self._loading: dict[_Key, int] = {}

    def authorize(self, caller: Caller, name: SecretName, *, api: str | None = None) -> Served:
        """The current parts when a rule lets `caller` read `name`; else raise
        Forbidden after a `deny` audit line."""
        served = self._deps.served()
        if served.policy.allows(caller, name):
            return served
        labels = {"api": api} if api else {}
        served.audit.record(
            "deny", secret=name, version_id=None, caller=caller, result="deny", **labels
        )
        self._deps.metrics.read("forbidden")
        raise Forbidden(denial(caller, name))

    async def read(
        self,
        caller: Caller,
        name: SecretName,
        shape: Shape[T],
        *,
        api: str | None = None,
        stage: str | None = None,
        version_id: str | None = None,
        refresh: bool = False,
        follow: Follow | None = None,
        **labels: str,
    ) -> T:
        """`shape` of one version of `name` for `caller` (current unless
        `stage`/`version_id`; after `follow` when given)."""

        async def select(served: Served) -> CachedSecret:
            secret = await self.fetch(served, caller, name, stage, version_id, refresh)
            return secret if follow is None else await follow(served, secret)

        return await self.read_with(caller, name, select, shape, api=api, **labels)

    async def read_with(
        self,
        caller: Caller,
        name: SecretName,
        select: Select,
        shape: Shape[T],
        *,
        api: str | None = None,
        **labels: str,
    ) -> T:
        """`shape` of the version `select` picks (through `fetch`) for `caller`.

        Raises Forbidden, RateLimited, the cache's error or `shape`'s; every
        outcome but a denial (audited as such) leaves one `read` audit line."""
        served = self.authorize(caller, name, api=api)
        if api:
            labels = {"api": api, **labels}
        try:
            secret = await select(served)
            answer = shape(secret)
        except SecretdError as exc:
            self.record(served, caller, name, None, exc.code, **labels)
            raise
        self.record(served, caller, name, secret.version.version_id, result_of(secret), **labels)
        return answer

    def read_held(
        self,
        caller: Caller,
        name: SecretName,
        shape: Shape[T],
        *,
        api: str | None = None,
        **labels: str,
    ) -> T | None:
        """`read` of the current version without suspending, when the cache holds
        it (the fast route, api.fastread); None when it does not - then `read`,
        which authorises again (an allowed read is not audited twice: a denial
        raised here never returns None)."""
        served = self.authorize(caller, name, api=api)
        if api:
            labels = {"api": api, **labels}
        try:
            secret = served.cache.read_held(name)
            if secret is None:
                return None
            answer = shape(secret)
        except SecretdError as exc:
            self.record(served, caller, name, None, exc.code, **labels)
            raise
        self.record(served, caller, name, secret.version.version_id, result_of(secret), **labels)
        return answer

    async def fetch(
        self,
        served: Served,
        caller: Caller,
        name: SecretName,
        stage: str | None = None,
        version_id: str | None = None,
        refresh: bool = False,
    ) -> CachedSecret:
        """From the cache, charging `caller`'s limit when it reaches a backend.
        Authorise first: this neither checks the rules nor audits."""
        cache = served.cache
        if refresh:
            self._deps.limiter.take(caller)  # an explicit ask of the backend: always counted
            return await cache.read(name, stage=stage, version_id=version_id, refresh=True)
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
        served: Served,
        caller: Caller,
        name: SecretName,
        version_id: str | None,
        result: str,
        **labels: str,
    ) -> None:
        """The audit line and metric of one request (`result`: ok, stale or an error code)."""
        served.audit.record(
            "read", secret=name, version_id=version_id, caller=caller, result=result, **labels
        )
        self._deps.metrics.read(result)
        if version_id is not None:  # a value was handed out: `secretd unused` counts it
            self._deps.usage.note(name)


def denial(caller: Caller, name: SecretName) -> str:
    """The one message of a denied read: who the agent saw, and that no rule
    matched. Decided from the rules alone, so it reads the same whether or not
    the secret exists; it names only what the caller asked for and who it is."""
    if caller.tcp:
        who = "a TCP request (only rules with tcp = true apply)"
    else:
        unit = f"unit {caller.unit}" if caller.unit else "no systemd unit"
        who = f"uid {caller.uid}, gid {caller.gid}, {unit}"
    return f"not allowed to read {name}: no [[allow]] rule matches {who}"


def result_of(secret: CachedSecret) -> str:
    return "stale" if secret.stale else "ok"
