"""A hostile stand-in for the agent on a Unix socket: it answers, but slowly.

Runs in its own thread (blocking sockets, one thread per connection) so the
blocking `Client` can be tested from the test's thread. Per request, by mode:

    body     honest status line and headers, then the body one byte every 100 ms
    head     the status line and headers themselves one byte every 100 ms
    polls    plain reads answered at once with a good secret; long-polls
             (`wait=` in the query) drip their body

Each connection drips for at most DRIP_SECONDS, then closes. `requests`
counts request heads read.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

DRIP_INTERVAL = 0.1
DRIP_SECONDS = 120.0
SECRET = {
    "name": "db/app",
    "version_id": "v1",
    "stages": ["current"],
    "created_at": "2026-01-01T00:00:00Z",
    "value": "pw",
    "stale": False,
}


class DripAgent:
    """See the module docstring; `with DripAgent(path, mode) as agent:`."""

    def __init__(self, path: Path, mode: str = "body") -> None:
        self.path = str(path)
        self.mode = mode
        self.requests = 0
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> DripAgent:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1.0)
            while not self._stop.is_set():
                head = _read_head(conn, self._stop)
                if head is None:
                    return
                self.requests += 1
                target = head.split(b" ", 2)[1].decode("latin-1")
                if self.mode == "polls" and "wait=" not in target:
                    body = json.dumps(SECRET).encode()
                    conn.sendall(_head(len(body)) + body)
                    continue
                self._drip(conn, head=self.mode == "head")
                return

    def _drip(self, conn: socket.socket, *, head: bool) -> None:
        data = _head(10_000_000) if head else b""
        if not head:
            conn.sendall(_head(10_000_000) + b'{"name": ')
        deadline = time.monotonic() + DRIP_SECONDS
        position = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn.sendall(data[position : position + 1] or b" ")
            except OSError:
                return  # the client gave up: what a deadline is for
            position += 1
            self._stop.wait(DRIP_INTERVAL)


def _head(length: int) -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _read_head(conn: socket.socket, stop: threading.Event) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        if stop.is_set():
            return None
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data
