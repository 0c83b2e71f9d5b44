"""A keep-alive HTTP/1.1 load generator over a Unix socket, run as its own process.

    python -m tests.bench.loadgen SOCKET PATH --concurrency 16 --requests 20000

`concurrency` connections each send one GET, wait for the whole answer, and
send the next (no pipelining), until `requests` answers have come back; a
warm-up of `--warmup` requests before that is not counted. It prints one JSON
object: requests, seconds, req/s, p50/p99/max latency in ms, non-200 answers.

The client is a bare uvloop protocol with a minimal response parser, so that
its own cost per request stays far below any server's it measures; the bench
pins it to one core and the server to the other (`taskset`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import uvloop

_END = b"\r\n\r\n"


class Run:
    """The shared count of requests to send, and the latencies of those counted."""

    def __init__(self, warmup: int, requests: int) -> None:
        self.warmup = warmup
        self.total = warmup + requests
        self.sent = 0
        self.answered = 0
        self.errors = 0
        self.latencies: list[int] = []
        self.started = time.perf_counter_ns()  # moved on when a warm-up ends
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def claim(self) -> bool:
        if self.sent >= self.total:
            return False
        self.sent += 1
        return True

    def answer(self, began: int, ok: bool) -> None:
        now = time.perf_counter_ns()
        self.answered += 1
        if self.answered == self.warmup:
            self.started = now
        elif self.answered > self.warmup:
            self.latencies.append(now - began)
            self.errors += not ok
        if self.answered == self.total and not self.done.done():
            self.done.set_result(None)


class Client(asyncio.Protocol):
    """One keep-alive connection sending `request` back to back."""

    def __init__(self, run: Run, request: bytes) -> None:
        self._run = run
        self._request = request
        self._buffer = b""
        self._began = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def send(self) -> None:
        if self._run.claim() and self._transport is not None:
            self._began = time.perf_counter_ns()
            self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        end = buffer.find(_END)
        if end < 0:
            self._buffer = buffer
            return
        length = _content_length(buffer[:end])
        if len(buffer) < end + 4 + length:
            self._buffer = buffer
            return
        self._buffer = buffer[end + 4 + length :]
        self._run.answer(self._began, buffer.startswith(b"HTTP/1.1 200"))
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._run.done.done():
            self._run.done.set_exception(ConnectionError("the server closed a connection"))


def _content_length(head: bytes) -> int:
    at = head.lower().find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    stop = head.find(b"\r\n", at + 2)
    return int(head[at + 17 : stop if stop >= 0 else len(head)])


async def measure(
    socket_path: str, path: str, concurrency: int, requests: int, warmup: int
) -> dict[str, float | int]:
    run = Run(warmup, requests)
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    clients = []
    for _ in range(concurrency):
        _, client = await loop.create_unix_connection(lambda: Client(run, request), socket_path)
        clients.append(client)
    for client in clients:
        client.send()
    async with asyncio.timeout(300):
        await run.done
    seconds = (time.perf_counter_ns() - run.started) / 1e9
    ordered = sorted(run.latencies)
    for client in clients:
        if client._transport is not None:
            client._transport.close()
    return {
        "requests": len(ordered),
        "seconds": round(seconds, 4),
        "rps": round(len(ordered) / seconds, 1),
        "p50_ms": round(ordered[len(ordered) // 2] / 1e6, 4),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e6, 4),
        "max_ms": round(ordered[-1] / 1e6, 4),
        "errors": run.errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket")
    parser.add_argument("path")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    args = parser.parse_args()
    figures = uvloop.run(
        measure(args.socket, args.path, args.concurrency, args.requests, args.warmup)
    )
    json.dump(figures, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
