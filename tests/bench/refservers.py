"""The reference servers a cached read is measured against, run as their own process.

    python -m tests.bench.refservers aiohttp SOCKET BODY_FILE
    python -m tests.bench.refservers raw SOCKET BODY_FILE

- `aiohttp`: a bare aiohttp handler on uvloop - one route (`/v1/secrets/{name:.+}`,
  as the agent's), a fixed body, the same `Content-Type` and `Cache-Control`
  headers - with aiohttp's defaults otherwise (no access log). The framework's
  ceiling: what the agent would reach if a read cost nothing.
- `raw`: a uvloop protocol that answers each complete request head with fixed
  bytes, no HTTP parser: the floor of the event loop and the socket.

Both answer every GET with the body in BODY_FILE and serve until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import uvloop
from aiohttp import web


async def serve_aiohttp(path: str, body: bytes) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=body, content_type="application/json", headers={"Cache-Control": "no-store"}
        )

    app = web.Application()
    app.router.add_get("/v1/secrets/{name:.+}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, path, backlog=1024).start()
    await _until_terminated()
    await runner.cleanup()


class RawAnswer(asyncio.Protocol):
    """Answers every request head (up to a blank line) with the same bytes."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        heads = buffer.count(b"\r\n\r\n")
        self._buffer = buffer[buffer.rfind(b"\r\n\r\n") + 4 :] if heads else buffer
        if heads and self._transport is not None:
            self._transport.write(self._answer * heads)


async def serve_raw(path: str, body: bytes) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
        b"Cache-Control: no-store\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(lambda: RawAnswer(answer), path, backlog=1024)
    await _until_terminated()
    server.close()


async def _until_terminated() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def main() -> int:
    kind, path, body_file = sys.argv[1:4]
    body = Path(body_file).read_bytes()
    serve = serve_aiohttp if kind == "aiohttp" else serve_raw
    uvloop.run(serve(path, body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
