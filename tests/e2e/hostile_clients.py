"""A hostile local client, run as another uid (setpriv) against a live agent.

Standard library only, so it runs under any uid with this interpreter:

    python tests/e2e/hostile_clients.py ADDRESS COUNT PAYLOAD_HEX

ADDRESS is a Unix socket path or `tcp:HOST:PORT`. It opens COUNT connections,
sends PAYLOAD on each in one write and never reads a byte. Then it prints one
JSON line `{"connected": n, "refused_503": n, "failed": n}` (a connection
counts as refused when the agent's canned 503 is waiting on it after a short
pause; reading it does not drain anything else, since a refused connection
gets nothing more) and holds every connection until its stdin closes. Before
exiting it prints `{"closed_by_agent": n}`: how many of the held connections
the agent had closed or aborted (seen as POLLHUP/POLLERR, without reading).
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time

SETTLE = 0.5
_HUNG_UP = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)


def _connect(address: str) -> socket.socket:
    if address.startswith("tcp:"):
        host, port = address[4:].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=10)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(address)
    sock.setblocking(False)
    return sock


def _send_all(sock: socket.socket, payload: bytes) -> None:
    """Write everything; the agent may read slowly, so wait for room (bounded)."""
    deadline = time.monotonic() + 10
    view = memoryview(payload)
    while view and time.monotonic() < deadline:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            select.select([], [sock], [], 0.1)
        except OSError:
            return


def _was_refused(sock: socket.socket) -> bool:
    try:
        head = sock.recv(12, socket.MSG_PEEK)
    except (BlockingIOError, OSError):
        return False
    return head.startswith(b"HTTP/1.1 503")


def main(address: str, count: int, payload: bytes) -> None:
    held: list[socket.socket] = []
    failed = 0
    for _ in range(count):
        try:
            sock = _connect(address)
        except OSError:
            failed += 1
            continue
        if payload:
            _send_all(sock, payload)
        held.append(sock)
    time.sleep(SETTLE)
    refused = sum(_was_refused(sock) for sock in held)
    report = {"connected": len(held), "refused_503": refused, "failed": failed}
    print(json.dumps(report), flush=True)
    sys.stdin.read()  # hold every connection until the test lets go
    poller = select.poll()
    for sock in held:
        poller.register(sock, _HUNG_UP)
    hung_up = {fd for fd, events in poller.poll(0) if events & _HUNG_UP}
    print(json.dumps({"closed_by_agent": len(hung_up)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]))
