"""Test servers on a free port of 127.0.0.1: `LoopbackServer`, the lifecycle every
one shares (fault_proxy's too), and `LoopbackApp`, an aiohttp application served
so (the fake backends hostile_aws and hostile_vault).

    class MyFake(LoopbackApp):
        def application(self) -> web.Application:
            app = web.Application()
            app.router.add_get("/", self._index)
            return app

    async with MyFake() as fake:
        ...  # fake.url is http://127.0.0.1:PORT
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from typing import Self

from aiohttp import web


def listening_socket() -> socket.socket:
    """A TCP socket listening on a free port of 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class LoopbackServer(ABC):
    """Serves on 127.0.0.1:`port` between `start()` and `stop()`; `async with` does both."""

    port = 0  # set by start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @abstractmethod
    async def start(self) -> None:
        """Listen; sets `port`."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop listening and drop what is open."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class LoopbackApp(LoopbackServer):
    """Serves `application()` on 127.0.0.1 between `start()` and `stop()`."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None

    @abstractmethod
    def application(self) -> web.Application:
        """The app with its routes; each fake adds its own."""

    async def start(self) -> None:
        self._runner = web.AppRunner(self.application(), handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        self._sock = listening_socket()
        self.port = self._sock.getsockname()[1]
        await web.SockSite(self._runner, self._sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
