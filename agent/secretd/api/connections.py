"""Who may hold how many API connections, and each connection's caller.

A connection cap alone lets one local user take every slot (idle connections,
long-polls, token-less TCP connections) and lock everyone else out. So each
*peer* gets a fair share (docs/api.md, "Limits and slow clients"):

- a peer is the uid on the other end of a Unix connection (SO_PEERCRED, read
  once at accept), or the loopback TCP listener as a whole (TCP carries no
  identity, so all TCP clients share one share);
- a peer may hold at most `per_uid` connections (`limits.max_connections_per_uid`,
  default a quarter of `max_connections`); beyond it, a canned 503;
- root and the agent's own uid are held only to `max_connections`, and the
  last `max_connections // 16` slots are theirs alone, so a few users together
  cannot lock out systemd's credential requests or an operator's
  `secretd status`.

`ConnectionTracker` also remembers each open HTTP connection's socket, so the
caller's full identity (groups, unit) is read lazily, once per connection.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiohttp import web

from secretd.access.identity import peer_credentials
from secretd.model import Caller

log = structlog.get_logger(__name__)

__all__ = [
    "DEFAULT_WRITE_TIMEOUT",
    "TCP_PEER",
    "UNIDENTIFIED_PEER",
    "ConnectionLimits",
    "ConnectionObserver",
    "ConnectionTracker",
    "Peer",
    "peer_of",
]

DEFAULT_WRITE_TIMEOUT = 10.0
TCP_PEER = "tcp"
UNIDENTIFIED_PEER = "unidentified"  # a Unix peer without credentials: one shared share
Peer = int | str


class ConnectionObserver(Protocol):
    """Told when connections open and close (metrics.Metrics implements it)."""

    def connection_opened(self) -> None: ...

    def connection_closed(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The connection limits of `[limits]`, as plain values."""

    max_connections: int
    per_uid: int | None = None  # None: a quarter of max_connections
    write_timeout: float = DEFAULT_WRITE_TIMEOUT

    @property
    def share(self) -> int:
        """The most connections one unprivileged peer may hold."""
        if self.per_uid is not None:
            return self.per_uid
        return max(1, self.max_connections // 4)

    @property
    def reserve(self) -> int:
        """Slots only root and the agent's own uid may take."""
        return self.max_connections // 16


def peer_of(transport: asyncio.BaseTransport) -> Peer:
    """The peer a new connection counts against: its uid, or `TCP_PEER`."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return TCP_PEER
    try:
        return peer_credentials(sock)[1]
    except OSError:
        return UNIDENTIFIED_PEER


class ConnectionTracker:
    """Admits connections by peer share; open HTTP connections and their callers."""

    def __init__(
        self,
        *,
        identify: Callable[[socket.socket], Caller],
        observer: ConnectionObserver,
        max_connections: int,
        per_uid: int | None = None,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        privileged: frozenset[int] | None = None,
    ) -> None:
        self._identify = identify
        self._observer = observer
        self.limits = ConnectionLimits(max_connections, per_uid, write_timeout)
        self._privileged = privileged if privileged is not None else frozenset({0, os.geteuid()})
        self._open: dict[web.RequestHandler, tuple[Any, Caller | None]] = {}
        self._per_peer: Counter[Peer] = Counter()
        self._warned: set[Peer] = set()
        self.reserved = 0
        self.refused = 0

    @property
    def max_connections(self) -> int:
        return self.limits.max_connections

    def admit(self, peer: Peer) -> bool:
        """Claim a slot for a new connection from `peer`; False when it must be refused."""
        limits = self.limits
        privileged = peer in self._privileged
        total = limits.max_connections if privileged else limits.max_connections - limits.reserve
        if self.reserved >= total:
            self._refuse("all", total)
            return False
        if not privileged and self._per_peer[peer] >= limits.share:
            self._refuse(peer, limits.share)
            return False
        self.reserved += 1
        self._per_peer[peer] += 1
        return True

    def release(self, peer: Peer) -> None:
        """An admitted connection from `peer` is gone."""
        self.reserved -= 1
        self._per_peer[peer] -= 1
        if self._per_peer[peer] <= 0:
            del self._per_peer[peer]
        # Warn again only once the peer has come well below its limit (no log flood).
        if self._per_peer[peer] < self.limits.share // 2:
            self._warned.discard(peer)
        if self.reserved < self.limits.max_connections // 2:
            self._warned.discard("all")

    def _refuse(self, peer: Peer, limit: int) -> None:
        self.refused += 1
        if peer not in self._warned:
            self._warned.add(peer)
            who = "all peers" if peer == "all" else peer
            log.warning("connection.refused", peer=who, limit=limit)

    def opened(self, handler: web.RequestHandler, transport: asyncio.BaseTransport) -> None:
        self._open[handler] = (transport.get_extra_info("socket"), None)
        self._observer.connection_opened()

    def closed(self, handler: web.RequestHandler) -> None:
        if self._open.pop(handler, None) is not None:
            self._observer.connection_closed()

    def caller(self, handler: object) -> Caller | None:
        """The peer of the connection `handler` serves, or None when not ours."""
        if not isinstance(handler, web.RequestHandler):
            return None
        entry = self._open.get(handler)
        if entry is None:
            return None
        sock, caller = entry
        if caller is None:
            try:
                caller = self._identify(sock)
            except OSError as exc:
                # No peer credentials (or /proc unreadable): no identity, so no access.
                log.warning("connection.unidentified", error=exc.strerror or str(exc))
                return None
            self._open[handler] = (sock, caller)
        return caller

    @property
    def open_count(self) -> int:
        return len(self._open)
