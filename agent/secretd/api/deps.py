"""What the API needs from the rest of the agent, as small protocols.

The composition root (secretd.app) builds an `ApiDeps` from the real cache,
policy, audit log and metrics; tests build one from the fakes in tests/fakes/.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from aiohttp import web

from secretd.events import Hub
from secretd.model import Caller, SecretName, SecretReader
from secretd.observe import AuditSink
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
    def last_error(self) -> str | None: ...
    @property
    def last_success(self) -> str | None: ...


class CacheView(SecretReader, Protocol):
    """The cache as the API uses it (cache.loader.SecretCache implements it)."""

    def is_cached(self, name: SecretName) -> bool:
        """Whether a read of `name`'s current version is answered without a backend call."""
        ...

    def snapshot(self) -> Sequence[EntryView]: ...

    def failed_pins(self) -> Mapping[SecretName, str]:
        """Declared (or template-used) secrets that are not loaded, with the reason."""
        ...

    def backend_health(self) -> Mapping[str, BackendHealthView]: ...

    async def list_names(self, prefix: str) -> Sequence[SecretName]: ...


class PolicyView(Protocol):
    """Access decisions (access.policy.Policy implements it)."""

    def allows(self, caller: Caller, name: SecretName) -> bool: ...

    def readable_filter(self, caller: Caller) -> Callable[[SecretName], bool]: ...


class MetricsView(Protocol):
    """Counters and the Prometheus exposition (metrics.Metrics implements it)."""

    def read(self, result: str) -> None: ...

    def set_secret_ages(self, entries: Iterable[EntryView]) -> None: ...

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


@dataclass
class ServingState:
    """Flipped by the composition root once declared secrets and first renders are done."""

    ready: bool = False


def no_templates() -> Sequence[TemplateStatusView]:
    return ()


@dataclass(frozen=True)
class ApiDeps:
    """Everything the HTTP handlers use, passed in by the composition root."""

    cache: CacheView
    hub: Hub
    policy: PolicyView
    audit: AuditSink
    metrics: MetricsView
    limiter: Limiter
    # The caller of a request from its connection (SO_PEERCRED); None when unknown.
    identify: Callable[[web.Request], Caller | None]
    state: ServingState = field(default_factory=ServingState)
    templates: Callable[[], Sequence[TemplateStatusView]] = no_templates
    hardening: Mapping[str, object] = field(default_factory=dict)
    # The real ARN of a secret an AWS backend serves (AWS-compatible route), else None.
    arn_lookup: Callable[[SecretName], str | None] | None = None
    # Rotation (docs/rotation.md): None in agents built without it (tests).
    rotation: RotationView | None = None
