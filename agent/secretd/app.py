"""The composition root: a validated `Config` becomes the running agent.

Order of start-up (SPEC §7, §8, §10):

1. harden the process (non-dumpable, no core files, optional mlockall) and
   raise the descriptor limit so `max_connections` clients fit;
2. build the graph (secretd.live): audit log, every backend (all or nothing),
   the cache, the access policy, the template runner (which compiles every
   template: a bad one stops the start) and the credential service;
3. claim the socket (a socket-activated one, or create it with its mode and
   group); clients that connect now wait in the backlog;
4. load the declared secrets and render every template once (failures are
   logged and shown in health, they do not stop the start);
5. serve: the API (and, on the same Unix socket, systemd `LoadCredential=`
   requests, told apart by the peer's abstract address), the refresh/watch
   loops and the template runner run in one TaskGroup; `READY=1` goes to systemd;
6. SIGHUP: build and validate a complete new graph from the config file; if
   anything fails the old one keeps running untouched; else swap, close the
   old one, preload and render (RELOADING=1 ... READY=1 around it);
7. SIGTERM/SIGINT (also during start-up): stop accepting, cancel the loops,
   close the backends, remove the socket: within 5 s.

Nothing below this module reaches back up: every collaborator is handed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import socket
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from secretd.api.app import build_app
from secretd.api.listener import UnixListener, serve_diverted, start_serving
from secretd.api.tcp import bind_tcp, install_tcp_guard, load_token
from secretd.config import Config, load_config
from secretd.errors import ConfigError, SecretdError
from secretd.hardening import harden_process
from secretd.live import Graph, LiveGraph, Shared, build_graph
from secretd.logs import configure_logging
from secretd.systemd import (
    InheritedSocket,
    Notifier,
    listen_fds,
    watchdog_interval,
    watchdog_loop,
)

log = structlog.get_logger(__name__)

# The whole stop sequence (stop accepting, cancel loops, close backends) is bounded.
STOP_DEADLINE = 4.0
# Enough descriptors for max_connections clients plus backends, files and watches.
FD_HEADROOM = 256

Loops = list["asyncio.Task[Any]"]


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


def split_inherited(inherited: list[InheritedSocket]) -> tuple[InheritedSocket | None, ...]:
    """(API socket, credentials socket) among the sockets systemd passed, told apart by
    their FileDescriptorName= (`credentials` is the credential-only one; the API is
    the one named `api`, else the first other Unix socket), never by their order."""
    unix = [s for s in inherited if s.sock.family == socket.AF_UNIX]
    credentials = next((s for s in unix if s.name == "credentials"), None)
    others = [s for s in unix if s is not credentials]
    api = next((s for s in others if s.name == "api"), others[0] if others else None)
    return api, credentials


def claim_sockets(
    config: Config, stack: AsyncExitStack, inherited: InheritedSocket | None
) -> list[socket.socket]:
    """The Unix socket (inherited from systemd, else created) and the TCP one if configured."""
    if inherited is not None:
        listener = UnixListener.adopt(inherited.sock)
        log.info("socket.inherited", name=inherited.name)
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


def claim_credentials_socket(
    config: Config, stack: AsyncExitStack, inherited: InheritedSocket | None
) -> socket.socket | None:
    """The optional dedicated `LoadCredential=` socket (mode 0600: only root connects)."""
    if inherited is not None:
        adopted = UnixListener.adopt(inherited.sock)
        stack.callback(adopted.close)
        return adopted.sock
    path = config.agent.credentials_socket
    if path is None:
        return None
    listener = UnixListener.create(path, mode=0o600, group=None)
    stack.callback(listener.close)
    return listener.sock


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


class Agent:
    """One running agent: the shared objects, the live graph and its exit stack."""

    def __init__(self, config: Config, config_path: Path | None, notifier: Notifier) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier
        self.shared = Shared.create(config)
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()
        self._graph_stack: AsyncExitStack | None = None
        self.live: LiveGraph | None = None
        self.credentials_sock: socket.socket | None = None

    async def open_graph(self, config: Config) -> tuple[Graph, AsyncExitStack | None]:
        """Build a complete graph for `config` and make it the live one.

        Raises (leaving nothing open and the old graph live) if it fails; else
        returns the retired graph's stack, for the caller to close once the old
        graph's loops are stopped."""
        stack = AsyncExitStack()
        try:
            graph = await stack.enter_async_context(build_graph(config, self.shared))
        except BaseException:
            await stack.aclose()
            raise
        retired, self._graph_stack = self._graph_stack, stack
        if self.live is None:
            self.live = LiveGraph(graph)
        else:
            self.live.graph = graph
        return graph, retired

    async def close_graph(self) -> None:
        if self._graph_stack is not None:
            await self._graph_stack.aclose()
            self._graph_stack = None


async def run_agent(
    config: Config, *, config_path: Path | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives; SIGHUP reloads `config_path`."""
    report = harden_process(mlock=config.agent.mlock)
    raise_fd_limit(config.limits.max_connections)
    agent = Agent(config, config_path, Notifier.from_env())
    if stop is not None:
        agent.stop = stop
    agent.shared.metrics.set_hardening(report.features())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.stop.set)
    loop.add_signal_handler(signal.SIGHUP, agent.reload.set)
    try:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(agent.close_graph)
            await agent.open_graph(config)
            assert agent.live is not None
            live = agent.live
            agent.shared.metrics.track_audit_failures(lambda: live.graph.audit.failed_writes)
            api_fd, credentials_fd = split_inherited(listen_fds())
            socks = claim_sockets(config, stack, api_fd)
            agent.credentials_sock = claim_credentials_socket(config, stack, credentials_fd)
            app = build_app(agent.live.api_deps(agent.shared, report.as_dict()))
            if config.tcp is not None:
                install_tcp_guard(app, config.tcp.listen, load_token(config.tcp.token_file))
            await _serve(agent, app, socks)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        agent.notifier.close()


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


async def _serve(agent: Agent, app: web.Application, socks: list[socket.socket]) -> None:
    assert agent.live is not None
    shared = agent.shared
    runner: web.AppRunner | None = None
    credentials: asyncio.AbstractServer | None = None
    try:
        async with asyncio.TaskGroup() as group:
            loops = await _start_loops(group, agent.live.graph, agent.stop)
            if not loops:
                return
            # Clients that connected earlier wait in the backlog until now.
            runner = await start_serving(
                app,
                socks,
                tracker=shared.tracker,
                idle_timeout=agent.config.limits.idle_timeout,
                divert=agent.live.credential_divert(),
            )
            if agent.credentials_sock is not None:
                divert = agent.live.credential_divert()
                credentials = await serve_diverted(agent.credentials_sock, divert)
            shared.state.ready = True
            log.info("agent.serving", socket=str(socks[0].getsockname()))
            agent.notifier.ready("serving")
            interval = watchdog_interval()
            watchdog = (
                group.create_task(watchdog_loop(agent.notifier, interval))
                if interval is not None
                else None
            )
            while await _next_signal(agent) == "reload":
                loops = await _reload(agent, group, loops)
            log.info("agent.stopping")
            agent.notifier.stopping()
            for task in [*loops, watchdog]:
                if task is not None:
                    task.cancel()
    finally:
        shared.state.ready = False
        if credentials is not None:
            credentials.close()
        if runner is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_DEADLINE):
                    await runner.cleanup()


async def _start_loops(group: asyncio.TaskGroup, graph: Graph, stop: asyncio.Event) -> Loops:
    """Start the cache's refresh/watch loops, warm up, then the template runner.

    The watches start before the first loads so that a change landing between
    loading a secret and serving it is not missed. Returns no loops (having
    cancelled the cache's) when a stop came during the warm-up."""
    cache_loop = group.create_task(graph.cache.run(), name="cache")
    await asyncio.sleep(0)  # let the watches open before the loads begin
    if not await _until_stopped(warm_up(graph), stop):
        cache_loop.cancel()
        return []
    return [
        cache_loop,
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


async def _reload(agent: Agent, group: asyncio.TaskGroup, loops: Loops) -> Loops:
    """Swap in a graph built from the config file; on any problem keep the old one."""
    agent.notifier.reloading()
    try:
        config = await asyncio.to_thread(_load_reloadable, agent)
        graph, retired = await agent.open_graph(config)
    except SecretdError as exc:
        log.error(
            "config.reload_rejected", error=exc.message, policy="the old config keeps running"
        )
        agent.notifier.ready("serving (reload rejected; old config in use)")
        return loops
    for task in loops:  # stop the old graph's loops, then close it
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    if retired is not None:
        await retired.aclose()  # the old cache, its backends and the old audit log
    agent.config = config
    agent.shared.tracker.max_connections = config.limits.max_connections
    configure_logging(config.agent.log_level, config.agent.log_format)
    log.info("config.reloaded")
    loops = await _start_loops(group, graph, agent.stop)
    if loops:
        agent.notifier.ready("serving (reloaded)")
    return loops


# What a reload cannot change: the sockets are bound once; the rest needs a restart.
_FIXED = ("socket", "socket_mode", "socket_group", "credentials_socket", "mlock")


def _load_reloadable(agent: Agent) -> Config:
    if agent.config_path is None:
        raise ConfigError("no config file to reload from")
    config = load_config(agent.config_path)
    old = agent.config
    changed = [
        f"agent.{key}" for key in _FIXED if getattr(config.agent, key) != getattr(old.agent, key)
    ]
    if config.tcp != old.tcp:
        changed.append("tcp")
    if (config.limits.backend_rate, config.limits.backend_burst) != (
        old.limits.backend_rate,
        old.limits.backend_burst,
    ):
        changed.append("limits.backend_rate/backend_burst")
    if changed:
        raise ConfigError(
            f"{agent.config_path}: {', '.join(changed)} changed; restart the agent to apply"
        )
    return config
