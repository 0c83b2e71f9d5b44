"""The systemd protocols secretd speaks, without libsystemd.

- sd_notify: datagrams of `KEY=VALUE` lines to `$NOTIFY_SOCKET` (a path, or
  `@name` for the abstract namespace): READY=1, STATUS=, WATCHDOG=1,
  RELOADING=1 with MONOTONIC_USEC=, STOPPING=1.
- The watchdog: ping every half of `$WATCHDOG_USEC` *from the event loop*, so a
  stuck loop misses its ping and systemd restarts us.
- Socket activation: `$LISTEN_FDS` / `$LISTEN_PID` / `$LISTEN_FDNAMES`; the
  passed descriptors start at 3.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

SD_LISTEN_FDS_START = 3


class Notifier:
    """Sends sd_notify messages; a no-op when there is no NOTIFY_SOCKET."""

    def __init__(self, address: str | None) -> None:
        self._address: str | None = None
        if address:
            # '@name' is the abstract namespace: a leading NUL byte on the wire.
            self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        return cls(environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> bool:
        """Send one message made of `lines`; False when it could not be sent."""
        if self._address is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            log.warning("notify.failed", error=exc.strerror)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={_one_line(status)}")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={_one_line(text)}")

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when not asked for."""
    raw = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not raw or (pid and pid != str(os.getpid())):
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


async def watchdog_loop(notifier: Notifier, interval: float) -> None:
    """Ping forever. Runs on the event loop: a blocked loop stops the pings."""
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class InheritedSocket:
    """A listening socket passed by the service manager."""

    sock: socket.socket
    name: str


def listen_fds(environ: MutableMapping[str, str] = os.environ) -> list[InheritedSocket]:
    """The sockets passed with LISTEN_FDS (for this pid), unsetting the variables
    so children never inherit the claim."""
    try:
        if environ.get("LISTEN_PID") != str(os.getpid()):
            return []
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    names = environ.get("LISTEN_FDNAMES", "").split(":")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(key, None)
    found = []
    for index in range(count):
        fd = SD_LISTEN_FDS_START + index
        os.set_inheritable(fd, False)
        name = names[index] if index < len(names) and names[index] else "unknown"
        found.append(InheritedSocket(socket.socket(fileno=fd), name))
    return found
