"""The one place that builds, keeps and closes what a config describes.

- `Shared`: what outlives every reload - the change hub (parked long-polls keep
  waiting on it), metrics, the connection tracker, the rate limiter, the
  serving state and the clock.
- `BackendPool`: the open backends. A reload reuses every backend whose
  definition (its config section, the size limit) did not change - the same
  object, with its token, its connections and its rollback marks - and opens
  only new or changed ones; each backend's background work (`run()`) is a
  supervised task from open to close.
- `Graph`: what one config builds - audit log, router, cache, refresher,
  access policy, template runner, credential service. `open_graph` builds and
  so validates a complete one beside the running one; if anything fails,
  everything opened for it is closed again and the running one is untouched.
  `Graph.adopt` carries the old cache's entries (values, stale state,
  schedule) over for every backend that was kept, so a reload never makes a
  served secret unavailable and never waits on a backend.

`secretd agent` (app.py) and `secretd render` build through here; `secretd
check` builds each part the same way (secretd.preflight). docs/architecture.md draws the result.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import structlog

from secretd.access.identity import peer_caller
from secretd.access.policy import Policy
from secretd.api.listener import ConnectionTracker
from secretd.api.ports import ServingState
from secretd.api.ratelimit import RateLimiter
from secretd.audit import AuditLog
from secretd.backends.base import Backend, BackgroundBackend, WatchableBackend
from secretd.backends.registry import close_backends, open_one
from secretd.backends.router import Router
from secretd.cache.observer import CacheObserver, NullObserver, Observers
from secretd.cache.persist import DiskPersister
from secretd.cache.secret_cache import SecretCache, build_cache
from secretd.clock import SystemClock
from secretd.config import BackendConfig, Config
from secretd.credentials import CredentialService
from secretd.events import Hub
from secretd.metrics import Metrics
from secretd.model import SecretName
from secretd.refresh.refresher import Refresher
from secretd.render.runner import TemplateRunner, TemplateStatus
from secretd.rotation.build import build_scheduler
from secretd.rotation.scheduler import Scheduler
from secretd.state import StateDir
from secretd.supervise import Supervisor
from secretd.usage import Usage

log = structlog.get_logger(__name__)

# A retired graph's loads under way get this long to finish before they are cancelled.
RETIRE_GRACE = 30.0


@dataclass
class Shared:
    """What a reload keeps."""

    hub: Hub
    metrics: Metrics
    tracker: ConnectionTracker
    limiter: RateLimiter
    state: ServingState
    clock: SystemClock
    usage: Usage
    persister: DiskPersister | None = None

    @classmethod
    def create(
        cls,
        config: Config,
        *,
        state: StateDir | None = None,
        persister: DiskPersister | None = None,
    ) -> Shared:
        """`state`: where reads per secret are kept (None: in memory only);
        `persister`: the persisted cache every graph's cache writes to."""
        clock = SystemClock()
        metrics = Metrics()
        tracker = ConnectionTracker(
            identify=peer_caller,
            observer=metrics,
            max_connections=config.limits.max_connections,
            per_uid=config.limits.max_connections_per_uid,
            write_timeout=config.limits.write_timeout,
        )
        limiter = RateLimiter(
            rate=config.limits.backend_rate, burst=config.limits.backend_burst, clock=clock
        )
        hub = Hub()
        return cls(hub, metrics, tracker, limiter, ServingState(), clock, Usage(state), persister)


@dataclass(frozen=True)
class Definition:
    """What a backend is opened from; equal definitions mean the same backend."""

    config: BackendConfig
    max_secret_bytes: int


@dataclass(eq=False)
class Held:
    """One open backend and its background task."""

    definition: Definition
    backend: Backend
    work: asyncio.Task[None] | None = None


class BackendPool:
    """The open backends by name, kept across reloads while unchanged."""

    def __init__(self, *, state: StateDir | None, supervisor: Supervisor | None = None) -> None:
        self._state = state
        self._supervisor = supervisor
        self._held: dict[str, Held] = {}

    def attach(self, supervisor: Supervisor) -> None:
        """Run the background work of backends committed from now on under `supervisor`."""
        self._supervisor = supervisor

    async def acquire(self, config: Config) -> dict[str, Held]:
        """Backends for `config`: the unchanged ones reused, the others opened now.
        All or nothing: on failure, what was opened now is closed again."""
        chosen: dict[str, Held] = {}
        try:
            for name, section in config.backends.items():
                definition = Definition(section, config.limits.max_secret_bytes)
                held = self._held.get(name)
                if held is None or held.definition != definition:
                    held = Held(definition, await self._open(name, definition))
                chosen[name] = held
        except BaseException:
            await self.discard(chosen)
            raise
        return chosen

    async def _open(self, name: str, definition: Definition) -> Backend:
        return await open_one(
            name,
            definition.config,
            max_secret_bytes=definition.max_secret_bytes,
            state=self._state,
        )

    def kept(self, chosen: Mapping[str, Held]) -> set[str]:
        """Names in `chosen` that are the very backends held now."""
        return {name for name, held in chosen.items() if self._held.get(name) is held}

    def commit(self, chosen: Mapping[str, Held]) -> list[Held]:
        """Make `chosen` the pool, start the background work of the new ones,
        and return the held backends that are no longer used."""
        retired = [held for name, held in self._held.items() if chosen.get(name) is not held]
        for name, held in chosen.items():
            background = isinstance(held.backend, BackgroundBackend)
            if held.work is None and background and self._supervisor is not None:
                run = cast(BackgroundBackend, held.backend).run
                held.work = self._supervisor.start(f"backend:{name}", run)
        self._held = dict(chosen)
        return retired

    async def discard(self, chosen: Mapping[str, Held]) -> None:
        """Close the backends in `chosen` that the pool does not hold (a failed build)."""
        fresh = {n: h.backend for n, h in chosen.items() if self._held.get(n) is not h}
        await close_backends(fresh)

    async def release(self, retired: list[Held]) -> None:
        """Stop the background work of `retired` backends, then close them."""
        for held in retired:
            if held.work is not None and self._supervisor is not None:
                await self._supervisor.stop(held.work)
        await close_backends({h.backend.name: h.backend for h in retired})

    async def aclose(self) -> None:
        retired = list(self._held.values())
        self._held = {}
        await self.release(retired)


@dataclass(eq=False)
class Graph:
    """The objects one config builds."""

    config: Config
    audit: AuditLog
    router: Router
    cache: SecretCache
    refresher: Refresher
    policy: Policy
    templates: TemplateRunner
    credentials: CredentialService
    rotations: Scheduler
    backends: dict[str, Held] = field(default_factory=dict)

    async def refresh(self) -> None:
        """The refresh, watch and evict loops, until cancelled."""
        idle_evict = self.config.cache.idle_evict
        await self.refresher.run(evict_every=min(max(idle_evict / 4, 1.0), 60.0))

    async def warm_up(self) -> None:
        """Seed the cache from the persisted cache (if any), load the declared secrets
        it did not hold and render every template once; failures are reported. A
        restored secret is not waited for: the refresh loop checks it when due."""
        await self.cache.restore()
        declared = [decl.name for decl in self.config.secret]
        self.cache.pin(declared)
        missing = [name for name in declared if not self.cache.is_cached(name)]
        for name, problem in (await self.cache.preload(missing)).items():
            if problem is not None:
                log.warning("secret.preload_failed", secret=name, error=_message(problem))
        for status in await self.templates.first_render():
            if not status.ok:
                log.warning("template.first_render_failed", destination=status.destination)

    def ready_counts(self) -> dict[str, int]:
        """The one start-up summary: what is loaded and rendered, and what failed."""
        templates = self.template_status()
        return {
            "secrets": len(self.cache.snapshot()),
            "secrets_failed": len(self.cache.failed_pins()),
            "templates": len(templates),
            "templates_failed": sum(1 for t in templates if not t.ok),
            "backends": len(self.backends),
        }

    def template_status(self) -> Sequence[TemplateStatus]:
        return self.templates.status()

    def arn_name(self, arn: str) -> SecretName | None:
        """The name an AWS ARN is served under (its AWS backend's mount added), else None."""
        return self.router.name_for_arn(arn)

    def adopt(self, old: Graph, kept: set[str]) -> int:
        """Carry `old`'s cache entries over for the backends in `kept`."""
        return self.cache.core.adopt(old.cache.core, kept)


async def open_graph(
    config: Config,
    shared: Shared,
    pool: BackendPool,
    *,
    previous: Graph | None = None,
    observe: bool = True,
    audit: bool = True,
) -> Graph:
    """Build every object of `config` (and so validate it).

    Raises ConfigError (or another SecretdError) naming what is wrong; whatever
    was opened for this graph is closed again and `previous` is untouched."""
    log_ = _audit_for(config, previous) if audit else AuditLog.open(None)
    try:
        held = await pool.acquire(config)
    except BaseException:
        _close_audit(log_, previous)
        raise
    try:
        return _assemble(config, shared, log_, held, observe=observe)
    except BaseException:
        await pool.discard(held)
        _close_audit(log_, previous)
        raise


def _assemble(
    config: Config, shared: Shared, audit: AuditLog, held: dict[str, Held], *, observe: bool
) -> Graph:
    backends = {name: h.backend for name, h in held.items()}
    router = Router(backends, {name: b.mount for name, b in config.backends.items()})
    observer: CacheObserver = Observers([shared.metrics, audit]) if observe else NullObserver()
    cache, refresher = _cache_and_refresher(config, shared, router, observer)
    templates = TemplateRunner(
        config.template,
        cache,
        shared.hub,
        pin=cache.pin,
        clock=shared.clock,
        metrics=shared.metrics,
        audit=audit,
        usage=shared.usage,
    )
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
    return Graph(
        config=config,
        audit=audit,
        router=router,
        cache=cache,
        refresher=refresher,
        policy=Policy(config.allow),
        templates=templates,
        credentials=CredentialService(config.credential, cache, audit, shared.usage),
        rotations=rotations,
        backends=held,
    )


def _cache_and_refresher(
    config: Config, shared: Shared, router: Router, observer: CacheObserver
) -> tuple[SecretCache, Refresher]:
    cache = build_cache(
        router=router,
        hub=shared.hub,
        settings=config.cache,
        max_secret_bytes=config.limits.max_secret_bytes,
        observer=observer,
        clock=shared.clock,
        rng=random.Random(),  # noqa: S311 - refresh jitter, not cryptography
        persister=shared.persister,
    )
    watchables = {n: b for n, b in router.backends.items() if isinstance(b, WatchableBackend)}
    refresher = Refresher.for_interval(
        cache.refresh_target,
        refresh_interval=config.cache.refresh_interval,
        watchables=watchables,
        clock=shared.clock,
        rng=random.Random(),  # noqa: S311 - refresh jitter, not cryptography
        desync=config.cache.startup_spread > 0,
    )
    return cache, refresher


def _audit_for(config: Config, previous: Graph | None) -> AuditLog:
    """The previous graph's audit log when the target is unchanged, else a new one."""
    target = config.agent.audit_log
    if previous is not None and previous.config.agent.audit_log == target:
        return previous.audit
    return AuditLog.open(target)


def _close_audit(audit: AuditLog, previous: Graph | None) -> None:
    if previous is None or audit is not previous.audit:
        audit.close()


async def retire_graph(old: Graph, new: Graph, retired: list[Held], pool: BackendPool) -> None:
    """Close what `old` used and `new` does not: loads under way get `RETIRE_GRACE`
    to finish (their readers are waiting), then the backends no longer used are
    closed, and the audit log if it was replaced. Never raises; cancelling it
    (agent stop) skips the grace, not the closing."""
    try:
        await old.cache.drain(RETIRE_GRACE)
    finally:
        try:
            await old.cache.aclose()
            await pool.release(retired)
        except Exception as exc:  # closing must not crash the agent
            log.warning("graph.retire_failed", error=type(exc).__name__)
        if new.audit is not old.audit:
            old.audit.close()


@asynccontextmanager
async def standalone_graph(config: Config, *, state: StateDir | None) -> AsyncIterator[Graph]:
    """A graph with no agent around it (`secretd render --once`): no supervised
    background work, no audit of its own refreshes; everything closed on exit."""
    shared = Shared.create(config)
    pool = BackendPool(state=state, supervisor=None)
    graph = await open_graph(config, shared, pool, observe=False, audit=False)
    pool.commit(graph.backends)
    try:
        yield graph
    finally:
        await graph.cache.aclose()
        await pool.aclose()
        graph.audit.close()


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None)
    return text if isinstance(text, str) else type(exc).__name__
