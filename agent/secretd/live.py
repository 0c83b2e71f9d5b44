"""The swappable part of the running agent, for the composition root (secretd.app).

A `Graph` is everything one config builds: backends (through the cache), the
cache, the audit log, the access policy, the template runner, the credential
service. `Shared` is what outlives a reload: the change hub (parked long-polls
keep waiting on it), metrics (counters keep counting), the connection tracker,
the rate limiter and the serving state.

`LiveGraph` holds the current Graph; the API and the credential protocol are
given proxies that always use the current one, so a SIGHUP reload swaps the
whole graph at once, between two requests, without rebuilding the HTTP app.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from secretd.access.identity import peer_caller
from secretd.access.policy import Policy
from secretd.api.aws_compat import aws_arn_lookup
from secretd.api.deps import ApiDeps, ServingState
from secretd.api.listener import ConnectionTracker, Divert
from secretd.api.ratelimit import RateLimiter
from secretd.audit import AuditLog
from secretd.backends.registry import open_backends
from secretd.backends.router import Router
from secretd.cache.entries import BackendHealth, EntryInfo
from secretd.cache.loader import SecretCache
from secretd.clock import SystemClock
from secretd.config import Config
from secretd.credentials import CredentialProtocol, CredentialService, parse_peer_address
from secretd.events import Hub
from secretd.metrics import Metrics
from secretd.model import CachedSecret, Caller, SecretName
from secretd.observe import Observers
from secretd.render.runner import TemplateRunner, TemplateStatus
from secretd.rotation.build import build_scheduler
from secretd.rotation.model import Outcome
from secretd.rotation.scheduler import RotationStatus, Scheduler


@dataclass
class Shared:
    """What a reload keeps."""

    hub: Hub
    metrics: Metrics
    tracker: ConnectionTracker
    limiter: RateLimiter
    state: ServingState
    clock: SystemClock

    @classmethod
    def create(cls, config: Config) -> Shared:
        clock = SystemClock()
        metrics = Metrics()
        tracker = ConnectionTracker(
            identify=peer_caller, observer=metrics, max_connections=config.limits.max_connections
        )
        limiter = RateLimiter(
            rate=config.limits.backend_rate, burst=config.limits.backend_burst, clock=clock
        )
        return cls(Hub(), metrics, tracker, limiter, ServingState(), clock)


@dataclass
class Graph:
    """The objects one config builds."""

    config: Config
    cache: SecretCache
    audit: AuditLog
    policy: Policy
    templates: TemplateRunner
    credentials: CredentialService
    router: Router
    rotations: Scheduler


@asynccontextmanager
async def build_graph(config: Config, shared: Shared) -> AsyncIterator[Graph]:
    """Build (and so validate) every object of `config`; closed in reverse on exit.

    Raises ConfigError (or another SecretdError) naming what is wrong; whatever
    was opened before the failure is closed again."""
    async with AsyncExitStack() as stack:
        audit = AuditLog.open(config.agent.audit_log)
        stack.callback(audit.close)
        backends = await open_backends(
            config.backends, max_secret_bytes=config.limits.max_secret_bytes
        )
        router = Router(backends, {name: b.mount for name, b in config.backends.items()})
        cache = SecretCache(
            router=router,
            hub=shared.hub,
            settings=config.cache,
            max_secret_bytes=config.limits.max_secret_bytes,
            observer=Observers([shared.metrics, audit]),
            clock=shared.clock,
            rng=random.Random(),  # noqa: S311 - refresh jitter, not cryptography
        )
        stack.push_async_callback(cache.aclose)
        policy = Policy(config.allow)
        templates = TemplateRunner(
            config.template,
            cache,
            shared.hub,
            pin=cache.pin,
            clock=shared.clock,
            metrics=shared.metrics,
            audit=audit,
        )
        credentials = CredentialService(config.credential, cache, audit)
        rotations = build_scheduler(
            config.rotation,
            router,
            state_dir=config.agent.state_dir,
            audit=audit,
            metrics=shared.metrics,
            clock=shared.clock,
            rng=random.Random(),  # noqa: S311 - schedule jitter, not cryptography
            refresh=lambda name: cache.read(name, refresh=True),
        )
        yield Graph(config, cache, audit, policy, templates, credentials, router, rotations)


class LiveGraph:
    """The current Graph, and proxies onto it for long-lived collaborators."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    # CacheView

    async def read(
        self,
        name: SecretName,
        *,
        stage: str | None = None,
        version_id: str | None = None,
        refresh: bool = False,
    ) -> CachedSecret:
        return await self.graph.cache.read(
            name, stage=stage, version_id=version_id, refresh=refresh
        )

    def is_cached(self, name: SecretName) -> bool:
        return self.graph.cache.is_cached(name)

    def snapshot(self) -> list[EntryInfo]:
        return self.graph.cache.snapshot()

    def failed_pins(self) -> dict[SecretName, str]:
        return self.graph.cache.failed_pins()

    def backend_health(self) -> Mapping[str, BackendHealth]:
        return self.graph.cache.backend_health()

    async def list_names(self, prefix: str) -> list[SecretName]:
        return await self.graph.cache.list_names(prefix)

    # PolicyView

    def allows(self, caller: Caller, name: SecretName) -> bool:
        return self.graph.policy.allows(caller, name)

    def readable_filter(self, caller: Caller) -> Callable[[SecretName], bool]:
        return self.graph.policy.readable_filter(caller)

    # AuditSink

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
        self.graph.audit.record(
            event, secret=secret, version_id=version_id, caller=caller, result=result, **extra
        )

    def arn_lookup(self, name: SecretName) -> str | None:
        """The AWS ARN of a secret an AWS backend serves (else None: a local ARN is used)."""
        return aws_arn_lookup(self.graph.router.route)(name)

    def template_status(self) -> Sequence[TemplateStatus]:
        return self.graph.templates.status()

    def api_deps(self, shared: Shared, hardening: Mapping[str, object]) -> ApiDeps:
        tracker = shared.tracker
        return ApiDeps(
            cache=self,
            hub=shared.hub,
            policy=self,
            audit=self,
            metrics=shared.metrics,
            limiter=shared.limiter,
            identify=lambda request: tracker.caller(request.protocol),
            state=shared.state,
            templates=self.template_status,
            hardening=hardening,
            arn_lookup=self.arn_lookup,
            rotation=LiveRotation(self),
        )

    def credential_divert(self) -> Divert:
        """Connections whose peer address is a systemd credential request
        (`LoadCredential=ID:<our socket>`) go to the credential protocol, not HTTP."""

        def divert(transport: asyncio.BaseTransport) -> asyncio.Protocol | None:
            request = parse_peer_address(transport.get_extra_info("peername"))
            if request is None:
                return None
            return CredentialProtocol(self.graph.credentials, peer_caller, request)

        return divert


class LiveRotation:
    """The current graph's rotation service, for the API (api.deps.RotationView)."""

    def __init__(self, live: LiveGraph) -> None:
        self._live = live

    @property
    def names(self) -> Sequence[SecretName]:
        return self._live.graph.rotations.names

    async def rotate_now(
        self, name: SecretName, *, caller: Caller | None = None, fresh: bool = False
    ) -> Outcome:
        return await self._live.graph.rotations.rotate_now(name, caller=caller, fresh=fresh)

    def status(self) -> Sequence[RotationStatus]:
        return self._live.graph.rotations.status()
