"""The composition root: a validated `Config` becomes the running agent.

Order of start-up (SPEC §7, §8, §10):

1. harden the process (non-dumpable, no core files, optional mlockall) and
   raise the descriptor limit so `max_connections` clients fit;
2. open the audit log, metrics, every backend (all or nothing), the router,
   the change hub, the cache, the access policy and the template runner
   (which compiles every template: a bad one stops the start);
3. claim the socket (a socket-activated one, or create it with its mode and
   group); clients that connect now wait in the backlog;
4. load the declared secrets and render every template once (failures are
   logged and shown in health, they do not stop the start);
5. serve: the API (and, on the same Unix socket, systemd `LoadCredential=`
   requests, told apart by the peer's abstract address), the refresh/watch
   loops and the template runner run in one TaskGroup; `READY=1` goes to systemd;
6. on SIGTERM/SIGINT: stop accepting, cancel the loops, close the backends,
   remove the socket: within 5 s.

Nothing below this module reaches back up: every collaborator is handed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import resource
import signal
import socket
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from secretd.access.identity import peer_caller
from secretd.access.policy import Policy
from secretd.api.app import build_app
from secretd.api.deps import ApiDeps, ServingState
from secretd.api.listener import ConnectionTracker, Divert, UnixListener, start_serving
from secretd.api.ratelimit import RateLimiter
from secretd.api.tcp import bind_tcp, install_tcp_guard, load_token
from secretd.audit import AuditLog
from secretd.backends.registry import open_backends
from secretd.backends.router import Router
from secretd.cache.loader import SecretCache
from secretd.clock import SystemClock
from secretd.config import Config
from secretd.credentials import CredentialProtocol, CredentialService, parse_peer_address
from secretd.events import Hub
from secretd.hardening import harden_process
from secretd.metrics import Metrics
from secretd.observe import Observers
from secretd.render.runner import TemplateRunner
from secretd.systemd import Notifier, listen_fds, watchdog_interval, watchdog_loop

log = structlog.get_logger(__name__)

# The whole stop sequence (stop accepting, cancel loops, close backends) is bounded.
STOP_DEADLINE = 4.0
# Enough descriptors for max_connections clients plus backends, files and watches.
FD_HEADROOM = 256


@dataclass
class Graph:
    """The objects of one running agent (exposed for tests and for reload later)."""

    config: Config
    hub: Hub
    cache: SecretCache
    audit: AuditLog
    metrics: Metrics
    policy: Policy
    templates: TemplateRunner
    state: ServingState
    tracker: ConnectionTracker
    deps: ApiDeps


def raise_fd_limit(max_connections: int) -> None:
    """Lift the soft RLIMIT_NOFILE towards the hard one so the cap, not EMFILE, decides."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FD_HEADROOM
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("limits.fd_low", nofile=target, max_connections=max_connections)


@asynccontextmanager
async def build_graph(config: Config, stack: AsyncExitStack) -> AsyncIterator[Graph]:
    """Every object of the agent, closed again in reverse order on exit."""
    clock = SystemClock()
    audit = AuditLog.open(config.agent.audit_log)
    stack.callback(audit.close)
    metrics = Metrics()
    backends = await open_backends(config.backends, max_secret_bytes=config.limits.max_secret_bytes)
    router = Router(backends, {name: b.mount for name, b in config.backends.items()})
    hub = Hub()
    cache = SecretCache(
        router=router,
        hub=hub,
        settings=config.cache,
        max_secret_bytes=config.limits.max_secret_bytes,
        observer=Observers([metrics, audit]),
        clock=clock,
        rng=random.Random(),  # noqa: S311 - refresh jitter, not cryptography
    )
    stack.push_async_callback(cache.aclose)
    policy = Policy(config.allow)
    templates = TemplateRunner(
        config.template, cache, hub, pin=cache.pin, clock=clock, metrics=metrics
    )
    state = ServingState()
    tracker = ConnectionTracker(
        identify=peer_caller, observer=metrics, max_connections=config.limits.max_connections
    )
    limiter = RateLimiter(
        rate=config.limits.backend_rate, burst=config.limits.backend_burst, clock=clock
    )
    deps = ApiDeps(
        cache=cache,
        hub=hub,
        policy=policy,
        audit=audit,
        metrics=metrics,
        limiter=limiter,
        identify=lambda request: tracker.caller(request.protocol),
        state=state,
        templates=templates.status,
    )
    yield Graph(config, hub, cache, audit, metrics, policy, templates, state, tracker, deps)


def credential_divert(graph: Graph) -> Divert:
    """Hands connections whose peer address is a systemd credential request
    (`LoadCredential=ID:<our socket>`) to the credential protocol instead of HTTP."""
    service = CredentialService(graph.config.credential, graph.cache, graph.audit)

    def divert(transport: asyncio.BaseTransport) -> asyncio.Protocol | None:
        request = parse_peer_address(transport.get_extra_info("peername"))
        if request is None:
            return None
        return CredentialProtocol(service, peer_caller, request)

    return divert


def claim_sockets(config: Config, stack: AsyncExitStack) -> list[socket.socket]:
    """The Unix socket (inherited from systemd, else created) and the TCP one if configured."""
    inherited = [s.sock for s in listen_fds() if s.sock.family == socket.AF_UNIX]
    if inherited:
        listener = UnixListener.adopt(inherited[0])
        log.info("socket.inherited", count=len(inherited))
    else:
        listener = UnixListener.create(
            config.agent.socket,
            mode=config.agent.socket_mode,
            group=config.agent.socket_group,
            backlog=config.limits.max_connections,
        )
    stack.callback(listener.close)
    socks = [listener.sock]
    if config.tcp is not None:
        tcp = bind_tcp(config.tcp.listen, backlog=config.limits.max_connections)
        stack.callback(tcp.close)
        socks.append(tcp)
    return socks


async def warm_up(graph: Graph) -> None:
    """Load declared secrets and render every template once; failures are reported."""
    declared = [decl.name for decl in graph.config.secret]
    graph.cache.pin(declared)
    for name, problem in (await graph.cache.preload(declared)).items():
        if problem is not None:
            log.warning("secret.preload_failed", secret=name, error=_message(problem))
    for status in await graph.templates.first_render():
        if not status.ok:
            log.warning("template.first_render_failed", destination=status.destination)


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None)
    return text if isinstance(text, str) else type(exc).__name__


async def run_agent(config: Config, *, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives."""
    stop = stop or asyncio.Event()
    report = harden_process(mlock=config.agent.mlock)
    raise_fd_limit(config.limits.max_connections)
    notifier = Notifier.from_env()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload_not_supported)
    try:
        async with AsyncExitStack() as stack, build_graph(config, stack) as graph:
            graph.metrics.set_hardening(report.features())
            deps = dataclasses.replace(graph.deps, hardening=report.as_dict())
            socks = claim_sockets(config, stack)
            app = build_app(deps)
            if config.tcp is not None:
                install_tcp_guard(app, config.tcp.listen, load_token(config.tcp.token_file))
            if await _until_stopped(warm_up(graph), stop):
                await _serve(graph, app, socks, notifier, stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        notifier.close()


async def _until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run `work` unless a stop signal comes first (then cancel it): True when it finished."""
    task = asyncio.create_task(work)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        task.result()  # re-raise a failure
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    log.info("agent.stopped_while_starting")
    return False


async def _serve(
    graph: Graph,
    app: web.Application,
    socks: Sequence[socket.socket],
    notifier: Notifier,
    stop: asyncio.Event,
) -> None:
    runner = await start_serving(
        app,
        list(socks),
        tracker=graph.tracker,
        idle_timeout=graph.config.limits.idle_timeout,
        divert=credential_divert(graph),
    )
    graph.state.ready = True
    log.info("agent.serving", socket=str(graph.config.agent.socket))
    notifier.ready("serving")
    try:
        async with asyncio.TaskGroup() as group:
            tasks: list[asyncio.Task[Any]] = [
                group.create_task(graph.cache.run(), name="cache"),
                group.create_task(graph.templates.run(), name="templates"),
            ]
            interval = watchdog_interval()
            if interval is not None:
                tasks.append(group.create_task(watchdog_loop(notifier, interval)))
            await stop.wait()
            log.info("agent.stopping")
            notifier.stopping()
            for task in tasks:
                task.cancel()
    finally:
        graph.state.ready = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_DEADLINE):
                await runner.cleanup()


def _reload_not_supported() -> None:
    log.warning("config.reload_unsupported", hint="restart the agent to apply a new config")
