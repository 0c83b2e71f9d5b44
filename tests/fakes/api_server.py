"""A fake secretd agent: the read API of docs/api.md over a real Unix socket.

It serves from a `secretd_client.testing.StaticSecrets` (rotation, long-poll,
forbidden names, injected API errors) through aiohttp on its own event loop in
a thread, so blocking code, asyncio code and child processes (the `secretd`
CLI) can all talk to it. On top it injects transport faults the in-memory
transport cannot: hanging up without an answer, answering garbage, answering
a long-poll at once with the unchanged version, and stopping/starting the
whole listener (the agent going away and coming back).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
from aiohttp import web

from secretd_client.testing import StaticSecrets

FAULTS = ("hang_up", "garbage", "not_a_secret", "eager", "slow", "endless")
ENDLESS_CHUNKS = 4096  # 256 MiB of 64 KiB chunks: far past any client cap


class FakeAgent:
    """The API served from memory on `socket_path`; `secrets` is what it holds."""

    def __init__(self, socket_path: str | Path, secrets: Mapping[str, str | bytes] | None = None):
        self.socket_path = str(socket_path)
        self.secrets = StaticSecrets(secrets)
        self.paths: list[str] = []  # every request's path and query, in order
        self._faults: deque[str] = deque()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._canned: tuple[int, bytes] | None = None

    def inject(self, fault: str, count: int = 1) -> None:
        """The next `count` requests suffer `fault` (one of FAULTS)."""
        assert fault in FAULTS, fault
        self._faults.extend([fault] * count)

    def canned(self, body: bytes, status: int = 200) -> None:
        """Answer every request with this JSON body from now on (a hand-made answer)."""
        self._canned = (status, body)

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()
        self._call(self._start())

    def stop(self) -> None:
        """Close the listener and every connection, as a dying agent would."""
        self._call(self._stop())

    def close(self) -> None:
        if not self._thread.is_alive():  # never started
            self._loop.close()
            return
        with contextlib.suppress(RuntimeError):
            self._call(self._stop())
            self._call(self._cancel_leftovers())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> FakeAgent:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.UnixSite(self._runner, self.socket_path)
        await site.start()

    async def _stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            Path(self.socket_path).unlink()

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        """A chunked body that goes on until the client gives up."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b" " * 65536
        with contextlib.suppress(ConnectionError):
            for _ in range(ENDLESS_CHUNKS):
                await response.write(chunk)
        return response

    async def _cancel_leftovers(self) -> None:
        """Handlers of connections the client never closed (parked long-polls)."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.raw_path)
        if self._canned is not None:
            status, body = self._canned
            return web.Response(status=status, body=body, content_type="application/json")
        fault = self._faults.popleft() if self._faults else None
        if fault == "hang_up":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        if fault == "garbage":
            return web.Response(body=b"\x00not json", content_type="application/json")
        if fault == "not_a_secret":
            return web.json_response({"name": "x", "stages": "nope"})
        if fault == "endless":
            return await self._endless(request)
        if fault == "slow":
            await asyncio.sleep(30)
        forwarded = httpx.Request(request.method, "http://secretd" + request.raw_path)
        if fault == "eager":
            answer = self.secrets.answer(forwarded)
        else:
            answer = await self.secrets.handle_async_request(forwarded)
        return web.Response(
            status=answer.status_code,
            body=answer.content,
            headers={"Content-Type": answer.headers["content-type"]},
        )


@contextlib.contextmanager
def fake_agent(
    socket_path: str | Path, secrets: Mapping[str, str | bytes] | None = None
) -> Iterator[FakeAgent]:
    agent = FakeAgent(socket_path, secrets)
    with agent:
        yield agent
