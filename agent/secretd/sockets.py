"""The agent's listening sockets, for the composition root (secretd.app).

The Unix socket is inherited from systemd (socket activation) or created with
its mode and group before it accepts; the loopback TCP socket is bound when
`[tcp]` is configured; the dedicated credentials socket when configured. Each
is closed by the exit stack it is registered with. The descriptor limit is
raised so that `max_connections` clients fit.
"""

from __future__ import annotations

import resource
import socket
from contextlib import AsyncExitStack

import structlog

from secretd.api.tcp import bind_tcp
from secretd.api.unixsock import UnixListener
from secretd.config import Config
from secretd.systemd import InheritedSocket

log = structlog.get_logger(__name__)

# Enough descriptors for max_connections clients plus backends, files and watches.
FD_HEADROOM = 256


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
