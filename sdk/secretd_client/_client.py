"""`Client` (blocking) and `AsyncClient` (asyncio): the agent's API over its
Unix socket. Both share request building, answer parsing and the watch loop's
decisions (`_wire`) and each call's limits (`_Agent`); each only does the I/O.

    with Client() as client:
        password = client.get("db/app", field="password").value
        for secret in client.watch("api/stripe"):   # long-poll, reconnects
            ...
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import AsyncGenerator, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from secretd_client import _wire
from secretd_client._errors import SecretdClientError
from secretd_client._models import Health, Secret, SecretInfo
from secretd_client._socket import resolve_socket, socket_candidates
from secretd_client._transport import (
    BASE_URL,
    MAX_LISTING_BYTES,
    MAX_RESPONSE_BYTES,
    check_size,
    check_time,
    deadline,
    mapped_errors,
    unix_transport,
)

if TYPE_CHECKING:  # asyncio and the caches are imported by the code that uses them
    from secretd_client._cache import ThreadedCache, WatchCache

__all__ = ["AsyncClient", "Client"]

DEFAULT_TIMEOUT = 5.0
DEFAULT_WAIT = 30.0


class _Agent:
    """What both clients share: where the agent is, and each call's limits."""

    def __init__(
        self, socket: str | os.PathLike[str] | None, timeout: float, max_response_bytes: int
    ) -> None:
        self.socket = resolve_socket(socket)
        self._tried = socket_candidates(socket)  # named when none answers
        self._timeout = timeout
        self._max_bytes = max_response_bytes

    def _limits(self, wait: float | None, listing: bool) -> tuple[float, int, httpx.Timeout]:
        """(seconds the whole call may take: a long-poll's `wait` + `timeout`; bytes
        it may return; httpx's own timeouts)."""
        total = self._timeout + (wait or 0)
        limit = max(self._max_bytes, MAX_LISTING_BYTES) if listing else self._max_bytes
        return total, limit, httpx.Timeout(self._timeout, read=total)


def _settled(response: httpx.Response, body: bytearray) -> httpx.Response:
    """A fully read copy of a streamed response (already decoded)."""
    content_type = response.headers.get("content-type", "application/octet-stream")
    return httpx.Response(
        response.status_code, headers={"content-type": content_type}, content=bytes(body)
    )


class Client(_Agent):
    """A blocking client. `cache=True` keeps every current-version `get` in
    memory, refreshed by a background watch (a thread with its own loop)."""

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        cache: bool = False,
        transport: httpx.BaseTransport | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if cache and transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError("cache=True needs a transport that also serves asyncio")
        super().__init__(socket, timeout, max_response_bytes)
        self._http = httpx.Client(
            transport=transport or unix_transport(self.socket),
            base_url=BASE_URL,
            timeout=timeout,
        )
        self._cache: ThreadedCache | None = None
        if cache:
            from secretd_client._cache import ThreadedCache  # starts an event loop thread

            self._cache = ThreadedCache(self._async_twin(transport), timeout=timeout)

    def _async_twin(self, transport: httpx.BaseTransport | None) -> Callable[[], AsyncClient]:
        twin = transport if isinstance(transport, httpx.AsyncBaseTransport) else None
        socket, timeout, limit = self.socket, self._timeout, self._max_bytes
        return lambda: AsyncClient(
            socket, timeout=timeout, transport=twin, max_response_bytes=limit
        )

    def get(
        self,
        name: str,
        *,
        field: str | None = None,
        stage: str | None = None,
        version: str | None = None,
        refresh: bool = False,
    ) -> Secret:
        """The current version of `name` (or `stage`/`version`); `field` selects
        one key of a JSON-object value; `refresh` asks the backend now."""
        if self._cache is not None and stage is None and version is None and not refresh:
            _wire.check_name(name)
            return self._cache.get(name, field)
        params = _wire.secret_params(field=field, stage=stage, version=version, refresh=refresh)
        return self._fetch(name, params, None)

    def list(self, prefix: str = "") -> builtins.list[SecretInfo]:
        """Names the caller may read, with version and age; never values."""
        params = {"prefix": prefix} if prefix else {}
        response = self._send("/v1/secrets", params, None, listing=True)
        return _wire.parse_list(response, "list")

    def health(self) -> Health:
        return _wire.parse_health(self._send("/v1/health", {}, None, listing=True), "health")

    def watch(
        self,
        name: str,
        *,
        field: str | None = None,
        wait: float = DEFAULT_WAIT,
        index: str | None = None,
        backoff: _wire.Backoff | None = None,
        on_error: _wire.ErrorHook | None = None,
    ) -> Generator[Secret, None, None]:
        """Yield the current version, then each new one as it becomes current.

        Long-polls with `wait`; reconnects with jittered backoff while the agent
        is away or a backend is down. Ends with an exception for errors that
        retrying cannot fix (Forbidden, NotFound, InvalidName). With `index`,
        the first yield is the first version different from it. `on_error`
        hears each failure that the watch retries.
        """
        loop = _wire.WatchLoop(name, field, wait, index, backoff or _wire.Backoff(), on_error)
        return self._watch(loop)

    def _watch(self, loop: _wire.WatchLoop) -> Generator[Secret, None, None]:
        while True:
            started = time.monotonic()
            params, wait = loop.request()
            try:
                secret = self._fetch(loop.name, params, wait)
            except SecretdClientError as exc:
                time.sleep(loop.failed(exc))
                continue
            new, pause = loop.answered(secret, time.monotonic() - started)
            if new is not None:
                yield new
            elif pause:
                time.sleep(pause)

    def _fetch(self, name: str, params: dict[str, str], wait: float | None) -> Secret:
        response = self._send(_wire.secret_path(name), params, wait)
        return _wire.parse_secret(response, name)

    def _send(
        self, path: str, params: dict[str, str], wait: float | None, *, listing: bool = False
    ) -> httpx.Response:
        """One call, whole within `timeout` (a long-poll: `wait` + `timeout`)."""
        total, limit, timeout = self._limits(wait, listing)
        with mapped_errors(self.socket, self._tried), deadline(total) as end:
            request = self._http.build_request("GET", path, params=params, timeout=timeout)
            response = self._http.send(request, stream=True)
            try:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    check_size(len(body), self.socket, limit)
                    check_time(end, self.socket)  # for transports that ignore the deadline
            finally:
                response.close()
        return _settled(response, body)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient(_Agent):
    """The asyncio client; the same methods as `Client`, awaited. `cache=True`
    keeps current-version reads in memory, refreshed by watch tasks."""

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        cache: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        super().__init__(socket, timeout, max_response_bytes)
        self._http = httpx.AsyncClient(
            transport=transport or httpx.AsyncHTTPTransport(uds=self.socket),
            base_url=BASE_URL,
            timeout=timeout,
        )
        if cache:
            from secretd_client._cache import WatchCache

            self._cache: WatchCache | None = WatchCache(self)
        else:
            self._cache = None

    async def get(
        self,
        name: str,
        *,
        field: str | None = None,
        stage: str | None = None,
        version: str | None = None,
        refresh: bool = False,
    ) -> Secret:
        """See `Client.get`."""
        if self._cache is not None and stage is None and version is None and not refresh:
            _wire.check_name(name)
            return await self._cache.get(name, field)
        params = _wire.secret_params(field=field, stage=stage, version=version, refresh=refresh)
        return await self._fetch(name, params, None)

    async def list(self, prefix: str = "") -> builtins.list[SecretInfo]:
        params = {"prefix": prefix} if prefix else {}
        response = await self._send("/v1/secrets", params, None, listing=True)
        return _wire.parse_list(response, "list")

    async def health(self) -> Health:
        response = await self._send("/v1/health", {}, None, listing=True)
        return _wire.parse_health(response, "health")

    def watch(
        self,
        name: str,
        *,
        field: str | None = None,
        wait: float = DEFAULT_WAIT,
        index: str | None = None,
        backoff: _wire.Backoff | None = None,
        on_error: _wire.ErrorHook | None = None,
    ) -> AsyncGenerator[Secret, None]:
        """See `Client.watch`; iterate with `async for`."""
        loop = _wire.WatchLoop(name, field, wait, index, backoff or _wire.Backoff(), on_error)
        return self._follow(loop)

    async def _follow(self, loop: _wire.WatchLoop) -> AsyncGenerator[Secret, None]:
        """The watch loop; `on_error` hears each retried failure (the cache
        marks its entry stale)."""
        import asyncio  # here, not at the top: `secretd get` (Client) never needs it

        while True:
            started = time.monotonic()
            params, wait = loop.request()
            try:
                secret = await self._fetch(loop.name, params, wait)
            except SecretdClientError as exc:
                await asyncio.sleep(loop.failed(exc))
                continue
            new, pause = loop.answered(secret, time.monotonic() - started)
            if new is not None:
                yield new
            elif pause:
                await asyncio.sleep(pause)

    async def _fetch(self, name: str, params: dict[str, str], wait: float | None) -> Secret:
        response = await self._send(_wire.secret_path(name), params, wait)
        return _wire.parse_secret(response, name)

    async def _send(
        self, path: str, params: dict[str, str], wait: float | None, *, listing: bool = False
    ) -> httpx.Response:
        """One call, whole within `timeout` (a long-poll: `wait` + `timeout`)."""
        import asyncio

        total, limit, timeout = self._limits(wait, listing)
        with mapped_errors(self.socket, self._tried):
            async with asyncio.timeout(total):
                request = self._http.build_request("GET", path, params=params, timeout=timeout)
                response = await self._http.send(request, stream=True)
                try:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        check_size(len(body), self.socket, limit)
                finally:
                    await response.aclose()
        return _settled(response, body)

    async def aclose(self) -> None:
        if self._cache is not None:
            await self._cache.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()
