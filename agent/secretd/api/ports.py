"""What the API needs from the rest of the agent, as small protocols (its ports).

`ApiDeps` holds what outlives a reload (hub, metrics, limiter, identity,
serving state) and `served`, which returns the parts of the *current*
configuration (cache, rules, audit log, templates): the composition root
passes the current graph (secretd.graph.Graph implements `Served`), so a
reload swaps them all at once and a request that fetched them keeps one
consistent set. Tests build an `ApiDeps.fixed(...)` from the fakes in
tests/fakes/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from secretd.audit import AuditSink
from secretd.events import Hub
from secretd.model import CachedSecret, Caller, SecretName, SecretReader
from secretd.usage import ReadRecord, Usage

if TYPE_CHECKING:  # the rotation machinery is imported only where rotations are configured
    from secretd.rotation.model import Outcome
    from secretd.rotation.scheduler import RotationStatus


class EntryView(Protocol):
    """One cached secret as `snapshot()` describes it (never its value)."""

    @property
    def name(self) -> SecretName: ...
    @property
    def version_id(self) -> str | None: ...
    @property
    def age_seconds(self) -> float: ...
    @property
    def stale(self) -> bool: ...
    @property
    def pinned(self) -> bool: ...


class BackendHealthView(Protocol):
    """How one backend is doing."""

    @property
    def ok(self) -> bool: ...
    @property
    def state(self) -> str:
        """ "unknown" (no call made yet), "ok" or "failing"."""
        ...

    @property
    def last_error(self) -> str | None: ...
    @property
    def last_success(self) -> str | None: ...
    @property
    def endpoint(self) -> str | None:
        """The Vault address or AWS region serving the backend now (None: not replicated)."""
        ...

    @property
    def on_primary(self) -> bool | None: ...
    @property
    def failovers(self) -> int: ...


class CacheView(SecretReader, Protocol):
    """The cache as the API uses it (cache.loader.SecretCache implements it)."""

    def read_held(self, name: SecretName) -> CachedSecret | None:
        """The current version when held (counted as a hit), without suspending;
        None when only `read` can answer. Raises as `read` does for a held one
        (BackendUnavailable past `max_stale`)."""
        ...

    def is_cached(self, name: SecretName) -> bool:
        """Whether a read of `name`'s current version is answered without a backend call."""
        ...

    def snapshot(self) -> Sequence[EntryView]: ...

    def failed_pins(self) -> Mapping[SecretName, str]:
        """Declared (or template-used) secrets that are not loaded, with the reason."""
        ...

    def backend_health(self) -> Mapping[str, BackendHealthView]: ...

    def persist_refused(self) -> int:
        """Persisted cache entries refused (tampered, foreign, rolled back), still on disk."""
        ...

    async def list_names(self, prefix: str) -> Sequence[SecretName]: ...


class PolicyView(Protocol):
    """Access decisions (access.policy.Policy implements it)."""

    def allows(self, caller: Caller, name: SecretName) -> bool: ...

    def readable_filter(self, caller: Caller) -> Callable[[SecretName], bool]: ...


class MetricsView(Protocol):
    """Counters and the Prometheus exposition (metrics.Metrics implements it)."""

    def read(self, result: str) -> None: ...

    def set_secret_ages(self, entries: Iterable[EntryView]) -> None: ...

    def set_last_reads(self, reads: Mapping[SecretName, float | None]) -> None:
        """Last read (epoch seconds, None: never) of each pinned secret."""
        ...

    def set_failovers(self, counts: Mapping[str, int]) -> None:
        """How often each backend moved off a failed replica."""
        ...

    def exposition(self) -> bytes: ...


class TemplateStatusView(Protocol):
    """One template's last render (render.runner.TemplateStatus implements it)."""

    @property
    def destination(self) -> object: ...
    @property
    def ok(self) -> bool: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def last_rendered(self) -> datetime | str | None: ...
    @property
    def error_secret(self) -> SecretName | None:
        """The secret `last_error` is about (health shows it only to its readers)."""
        ...

    @property
    def error_cause(self) -> str | None:
        """`last_error`'s code (`not_found`, `render_failed`, ...), shown to everyone."""
        ...


class Limiter(Protocol):
    def take(self, caller: Caller) -> None:
        """Spend one backend-request token for `caller` or raise RateLimited."""
        ...


class RotationView(Protocol):
    """Rotation as the API uses it (rotation.scheduler.Scheduler implements it)."""

    @property
    def names(self) -> Sequence[SecretName]: ...

    async def rotate_now(
        self, name: SecretName, *, caller: Caller | None = None, fresh: bool = False
    ) -> Outcome: ...

    def status(self) -> Sequence[RotationStatus]: ...


class UsageView(Protocol):
    """Reads per secret (usage.Usage implements it): noted by the read path, shown
    by `GET /v1/usage`."""

    @property
    def since(self) -> float:
        """When recording began (epoch seconds)."""
        ...

    def note(self, name: SecretName) -> None: ...

    def records(self) -> Mapping[SecretName, ReadRecord]: ...


def memory_usage() -> UsageView:
    """Reads kept in memory only (tests; embedding the API)."""
    return Usage(None)


@dataclass
class ServingState:
    """Flipped by the composition root once declared secrets and first renders are done."""

    ready: bool = False


def no_templates() -> Sequence[TemplateStatusView]:
    return ()


class Served(Protocol):
    """The parts of the current configuration the API reads through."""

    @property
    def cache(self) -> CacheView: ...

    @property
    def policy(self) -> PolicyView: ...

    @property
    def audit(self) -> AuditSink: ...

    def template_status(self) -> Sequence[TemplateStatusView]:
        """Each template's last render."""
        ...

    def arn_name(self, arn: str) -> SecretName | None:
        """The name an AWS ARN given back as `secretId` is served under (its
        backend's mount included), None when no backend claims it."""
        ...

    @property
    def rotations(self) -> RotationView | None:
        """The rotation service (docs/rotation.md); None where there is none."""
        ...


def _no_arn(arn: str) -> SecretName | None:
    del arn
    return None


@dataclass(frozen=True)
class FixedParts:
    """A `Served` that never changes (tests; embedding the API without reloads)."""

    cache: CacheView
    policy: PolicyView
    audit: AuditSink
    templates: Callable[[], Sequence[TemplateStatusView]] = no_templates
    arn_names: Callable[[str], SecretName | None] = _no_arn
    rotations: RotationView | None = None

    def template_status(self) -> Sequence[TemplateStatusView]:
        return self.templates()

    def arn_name(self, arn: str) -> SecretName | None:
        return self.arn_names(arn)


@dataclass(frozen=True)
class ApiDeps:
    """Everything the HTTP handlers use, passed in by the composition root."""

    served: Callable[[], Served]
    hub: Hub
    metrics: MetricsView
    limiter: Limiter
    # The caller of a request from its connection (SO_PEERCRED); None when unknown.
    identify: Callable[[web.Request], Caller | None]
    state: ServingState = field(default_factory=ServingState)
    hardening: Mapping[str, object] = field(default_factory=dict)
    usage: UsageView = field(default_factory=memory_usage)

    @classmethod
    def fixed(
        cls,
        *,
        cache: CacheView,
        policy: PolicyView,
        audit: AuditSink,
        hub: Hub,
        metrics: MetricsView,
        limiter: Limiter,
        identify: Callable[[web.Request], Caller | None],
        state: ServingState | None = None,
        templates: Callable[[], Sequence[TemplateStatusView]] = no_templates,
        hardening: Mapping[str, object] | None = None,
        arn_names: Callable[[str], SecretName | None] = _no_arn,
        rotations: RotationView | None = None,
        usage: UsageView | None = None,
    ) -> ApiDeps:
        """ApiDeps over parts that never change."""
        parts = FixedParts(cache, policy, audit, templates, arn_names, rotations)
        return cls(
            served=lambda: parts,
            hub=hub,
            metrics=metrics,
            limiter=limiter,
            identify=identify,
            state=state or ServingState(),
            hardening=hardening or {},
            usage=usage if usage is not None else memory_usage(),
        )
