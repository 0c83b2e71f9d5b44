"""The composition root: a validated `Config` becomes the running agent.

Order of start-up (docs/operating.md):

1. harden the process (non-dumpable, no core files, optional mlockall), raise
   the descriptor limit so `max_connections` clients fit, and open the state
   directory;
2. build the graph (secretd.graph): audit log, every backend (all or nothing,
   none contacted), the cache, the access policy, the template runner (which
   compiles every template: a bad one stops the start) and the credential
   service;
3. claim the socket (a socket-activated one, or create it with its mode and
   group); clients that connect now wait in the backlog;
4. start the supervised background work (backends' renewals, failback and
   state, the refresh/watch loops, the reads-per-secret and persisted-cache
   writers), put the persisted cache back (docs/cache.md), load the declared
   secrets it did not hold and render every template once (failures are
   logged and shown in health, they do not stop the start);
5. serve: the API (and, on the same Unix socket, systemd `LoadCredential=`
   requests, told apart by the peer's abstract address) and the template
   runner; `READY=1` goes to systemd;
6. SIGHUP: build a complete new graph beside the running one (graph.py); if
   anything fails the old one keeps running untouched; else carry the cached
   values over, swap, and retire the old graph in the background
   (RELOADING=1 ... READY=1 around it). A reload never waits on a backend.
   SIGUSR1 reopens the audit log and nothing else (log rotation);
7. SIGTERM/SIGINT (also during start-up): stop accepting, cancel the loops,
   close the backends, remove the socket: within 5 s.

Nothing below this module reaches back up: every collaborator is handed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from secretd.access.identity import peer_caller
from secretd.api.accept import Acceptor
from secretd.api.app import build_app
from secretd.api.listener import (
    ConnectionLimits,
    Divert,
    Serving,
    serve_diverted,
    start_serving,
)
from secretd.api.ports import ApiDeps
from secretd.api.tcp import install_tcp_guard, load_token
from secretd.cache.persist import DiskPersister, open_persister
from secretd.config import Config, load_config
from secretd.config.schema import restart_only_changes
from secretd.credentials import CredentialProtocol, parse_peer_address
from secretd.errors import ConfigError, SecretdError
from secretd.graph import BackendPool, Graph, Shared, open_graph, retire_graph
from secretd.hardening import harden_process
from secretd.logs import configure_logging
from secretd.sockets import (
    claim_credentials_socket,
    claim_sockets,
    raise_fd_limit,
    split_inherited,
)
from secretd.state import StateDir
from secretd.supervise import Supervisor
from secretd.systemd import (
    Notifier,
    listen_fds,
    watchdog_interval,
    watchdog_loop,
)

if TYPE_CHECKING:
    from secretd.api.vault_compat import VaultSettings

log = structlog.get_logger(__name__)

# The whole stop sequence (stop accepting, cancel loops, close backends) is bounded.
STOP_DEADLINE = 4.0

Loops = list["asyncio.Task[Any]"]


def vault_settings(config: Config, current: Callable[[], Graph]) -> VaultSettings | None:
    """The Vault-compatible routes' settings; what a reload may change is read live."""
    if config.vault_api is None:
        return None
    from secretd.api.vault_compat import VaultSettings  # only when configured

    def kv_numbered(backend: str) -> bool:
        found = current().config.backends.get(backend)
        return found is not None and found.type == "vault"

    return VaultSettings(
        mount=config.vault_api.mount,
        refresh_interval=lambda: current().config.cache.refresh_interval,
        kv_numbered=kv_numbered,
    )


class Agent:
    """One running agent: its signals, its backends and its current graph."""

    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        notifier: Notifier,
        state: StateDir,
        persister: DiskPersister | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier
        self.shared = Shared.create(config, state=state, persister=persister)
        self.pool = BackendPool(state=state)
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()
        self.graph: Graph | None = None
        self.credentials_sock: socket.socket | None = None
        self.socket_path = str(config.agent.socket)  # where clients connect, for logs

    def install(self, graph: Graph) -> None:
        """Make `graph` the one every request and credential sees from now on."""
        self.graph = graph

    def current(self) -> Graph:
        """The graph serving now (requests and credentials ask for it each time)."""
        assert self.graph is not None
        return self.graph

    def api_deps(self, hardening: Mapping[str, object]) -> ApiDeps:
        shared = self.shared
        tracker = shared.tracker
        return ApiDeps(
            served=self.current,
            hub=shared.hub,
            metrics=shared.metrics,
            limiter=shared.limiter,
            identify=lambda request: tracker.caller(request.protocol),
            state=shared.state,
            hardening=hardening,
            usage=shared.usage,
        )

    def credential_divert(self) -> Divert:
        """Connections whose peer address is a systemd credential request
        (`LoadCredential=ID:<our socket>`) go to the credential protocol, not HTTP."""

        def divert(transport: asyncio.BaseTransport) -> asyncio.Protocol | None:
            request = parse_peer_address(transport.get_extra_info("peername"))
            if request is None:
                return None
            return CredentialProtocol(self.current().credentials, peer_caller, request)

        return divert

    def reopen_audit(self) -> None:
        """SIGUSR1: reopen the audit log by its path (after rotation); nothing else."""
        if self.graph is None:
            return
        try:
            self.graph.audit.reopen()
        except SecretdError as exc:
            log.error("audit.reopen_failed", error=exc.message, policy="still writing the old file")


async def run_agent(
    config: Config, *, config_path: Path | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives; SIGHUP reloads `config_path`."""
    report = harden_process(mlock=config.agent.mlock)
    raise_fd_limit(config.limits.max_connections)
    state = await asyncio.to_thread(StateDir.open, config.agent.state_dir)
    persister = await asyncio.to_thread(
        open_persister, config.cache, state, max_secret_bytes=config.limits.max_secret_bytes
    )
    agent = Agent(config, config_path, Notifier.from_env(), state, persister)
    if stop is not None:
        agent.stop = stop
    agent.shared.metrics.set_hardening(report.features())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.stop.set)
    loop.add_signal_handler(signal.SIGHUP, agent.reload.set)
    loop.add_signal_handler(signal.SIGUSR1, agent.reopen_audit)
    try:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(agent.pool.aclose)
            graph = await open_graph(config, agent.shared, agent.pool)
            stack.push_async_callback(_close_current, agent)
            agent.install(graph)
            agent.shared.metrics.track_audit_failures(lambda: agent.current().audit.failed_writes)
            api_fd, credentials_fd = split_inherited(listen_fds())
            socks = claim_sockets(config, stack, api_fd)
            if api_fd is not None:  # systemd bound it: its own name, not our config's
                agent.socket_path = str(api_fd.sock.getsockname())
            agent.credentials_sock = claim_credentials_socket(config, stack, credentials_fd)
            deps = agent.api_deps(report.as_dict())
            app = build_app(deps, vault=vault_settings(config, agent.current))
            if config.tcp is not None:
                install_tcp_guard(app, config.tcp.listen, load_token(config.tcp.token_file))
            await _serve(agent, app, socks)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            loop.remove_signal_handler(signum)
        agent.notifier.close()


async def _close_current(agent: Agent) -> None:
    if agent.graph is not None:
        await agent.graph.cache.aclose()
        agent.graph.audit.close()


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


class Doors:
    """What accepts connections: the API on its sockets and the dedicated
    credentials socket. Opened once the first loads are done; closed last."""

    def __init__(self) -> None:
        self.serving: Serving | None = None
        self.credentials: Acceptor | None = None

    async def open(self, agent: Agent, app: web.Application, socks: list[socket.socket]) -> None:
        # Clients that connected earlier wait in the backlog until now.
        self.serving = await start_serving(
            app,
            socks,
            tracker=agent.shared.tracker,
            idle_timeout=agent.config.limits.idle_timeout,
            divert=agent.credential_divert(),
        )
        if agent.credentials_sock is not None:
            divert = agent.credential_divert()
            self.credentials = await serve_diverted(agent.credentials_sock, divert)

    async def close(self) -> None:
        if self.credentials is not None:
            self.credentials.close()
        if self.serving is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_DEADLINE):
                    await self.serving.cleanup()


def _start_background(agent: Agent, supervisor: Supervisor) -> None:
    """The supervised work that is not a graph's: backends, usage, the persisted cache."""
    assert agent.graph is not None
    shared = agent.shared
    agent.pool.attach(supervisor)
    agent.pool.commit(agent.graph.backends)
    supervisor.start("usage", shared.usage.flush_forever)
    if shared.persister is not None:
        supervisor.start("cache:persist", shared.persister.run)


def _announce_ready(agent: Agent, supervisor: Supervisor) -> None:
    assert agent.graph is not None
    agent.shared.state.ready = True
    log.info("agent.serving", socket=agent.socket_path, **agent.graph.ready_counts())
    agent.notifier.ready("serving")
    interval = watchdog_interval()
    if interval is not None:
        supervisor.start("watchdog", lambda: watchdog_loop(agent.notifier, interval))


async def _serve(agent: Agent, app: web.Application, socks: list[socket.socket]) -> None:
    assert agent.graph is not None
    doors = Doors()
    try:
        async with asyncio.TaskGroup() as group:
            supervisor = Supervisor(group, clock=agent.shared.clock, rng=random.Random())  # noqa: S311
            _start_background(agent, supervisor)
            loops: Loops = []
            try:
                loops = await _start_loops(group, agent.graph, agent.stop)
                if loops:  # else a stop came during the warm-up
                    await doors.open(agent, app, socks)
                    _announce_ready(agent, supervisor)
                    while await _next_signal(agent) == "reload":
                        loops = await _reload(agent, supervisor, group, loops)
                    log.info("agent.stopping")
                    agent.notifier.stopping()
            finally:
                for task in loops:
                    task.cancel()
                await supervisor.stop_all()
    finally:
        agent.shared.state.ready = False
        await doors.close()


async def _start_loops(group: asyncio.TaskGroup, graph: Graph, stop: asyncio.Event) -> Loops:
    """Start the cache's refresh/watch loops, warm up, then the template runner.

    The watches start before the first loads so that a change landing between
    loading a secret and serving it is not missed. Returns no loops (having
    cancelled the cache's) when a stop came during the warm-up."""
    cache_loop = group.create_task(graph.refresh(), name="cache")
    await asyncio.sleep(0)  # let the watches open before the loads begin
    if not await _until_stopped(graph.warm_up(), stop):
        cache_loop.cancel()
        return []
    return [cache_loop, *_serving_loops(group, graph)]


def _serving_loops(group: asyncio.TaskGroup, graph: Graph) -> Loops:
    """The loops that keep files rendered and rotations on schedule."""
    return [
        group.create_task(graph.templates.run(), name="templates"),
        group.create_task(graph.rotations.run(), name="rotations"),
    ]


async def _next_signal(agent: Agent) -> str:
    """Wait for a stop ("stop" wins) or a reload request."""
    stopper = asyncio.create_task(agent.stop.wait())
    reloader = asyncio.create_task(agent.reload.wait())
    await asyncio.wait({stopper, reloader}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    reloader.cancel()
    if agent.stop.is_set():
        return "stop"
    agent.reload.clear()
    return "reload"


async def _reload(
    agent: Agent, supervisor: Supervisor, group: asyncio.TaskGroup, loops: Loops
) -> Loops:
    """Swap in a graph built from the config file; on any problem keep the old one.

    Nothing here waits on a backend: unchanged backends are kept with their
    cached values, new declared secrets and templates are loaded by the new
    graph's loops, and the old graph is retired in the background."""
    agent.notifier.reloading()
    old = agent.graph
    assert old is not None
    try:
        config = await asyncio.to_thread(_load_reloadable, agent)
        new = await open_graph(config, agent.shared, agent.pool, previous=old)
    except SecretdError as exc:
        log.error(
            "config.reload_rejected", error=exc.message, policy="the old config keeps running"
        )
        agent.notifier.ready("serving (reload rejected; old config in use)")
        return loops
    for task in loops:  # the old graph's loops stop before its entries move on
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    carried = new.adopt(old, agent.pool.kept(new.backends))
    if new.audit is old.audit:
        agent.reopen_audit()  # a reload also picks up a rotated audit log, as it always did
    retired = agent.pool.commit(new.backends)
    agent.install(new)
    supervisor.start("graph:retire", lambda: retire_graph(old, new, retired, agent.pool))
    agent.config = config
    agent.shared.tracker.limits = ConnectionLimits(
        config.limits.max_connections,
        config.limits.max_connections_per_uid,
        config.limits.write_timeout,
    )
    configure_logging(config.agent.log_level, config.agent.log_format)
    new.cache.pin(decl.name for decl in config.secret)
    log.info("config.reloaded", carried=carried, backends_replaced=len(retired))
    loops = [group.create_task(new.refresh(), name="cache"), *_serving_loops(group, new)]
    agent.notifier.ready("serving (reloaded)")
    return loops


def _load_reloadable(agent: Agent) -> Config:
    """The config file again, refused when it changes a key a reload cannot
    apply (config.schema.RESTART_ONLY, listed in docs/reference/config.md)."""
    if agent.config_path is None:
        raise ConfigError("no config file to reload from")
    config = load_config(agent.config_path)
    changed = restart_only_changes(agent.config, config)
    if changed:
        raise ConfigError(
            f"{agent.config_path}: {', '.join(changed)} changed; restart the agent to apply"
        )
    return config
