"""One Vault/OpenBao HTTP exchange, and the retry policy around it.

`VaultHttp.call` does a single request under the backend's concurrency cap and
maps every foreign failure at this boundary:

    aiohttp.ClientError, OSError    -> BackendUnavailable
    TimeoutError                    -> BackendTimeout
    body over the cap, bad JSON     -> BadBackendAnswer
    3xx (a standby's redirect)      -> BackendUnavailable (the token is never sent on)

`VaultHttp.send` retries 429 and 5xx answers with jittered exponential backoff,
honouring `Retry-After`, inside one deadline (`timeout` of the backend). A
`Retry-After` also holds back every other request of this backend until it has
passed, so a throttled server is not hammered by the next caller either.

With several addresses (replicas, backends/replicas.py) `send` tries the one
serving now and, when it meets an outage - a connection error, a timeout, a
redirect, a 5xx answer (not retried there: the next replica is the retry) -
the next ones in order, each within its own `timeout`; the first address
that answers serves from then on. 4xx answers (429 included) are answers:
they never move a request to another address.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import structlog
import yarl

from secretd.backends.replicas import Replicas
from secretd.backends.vault_wire import parse_object
from secretd.backoff import Backoff
from secretd.clock import Clock
from secretd.errors import BackendTimeout, BackendUnavailable, BadBackendAnswer
from secretd.model import utc_now

log = structlog.get_logger(__name__)

RETRYABLE = frozenset({429, 500, 502, 503, 504})
MAX_ATTEMPTS = 4
BACKOFF_BASE = 0.1
# 429/5xx retries within one call's deadline: 0.1 s doubling, never over 2 s.
RETRY = Backoff(base=BACKOFF_BASE, cap=2.0)
MAX_RETRY_AFTER = 30.0


@dataclass(frozen=True, slots=True)
class Reply:
    """A parsed answer. `body` is None when the server sent no JSON object
    (allowed only for non-2xx answers, whose status says enough)."""

    status: int
    body: dict[str, Any] | None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """What `VaultHttp` needs from the backend's config."""

    backend: str
    address: str
    namespace: str | None
    timeout: float
    max_body: int


class VaultHttp:
    """HTTP to one Vault/OpenBao server (or its replicas) with a cap on concurrent requests."""

    def __init__(
        self,
        settings: HttpSettings,
        *,
        session: aiohttp.ClientSession,
        max_concurrency: int,
        clock: Clock,
        rng: random.Random,
        replicas: Replicas | None = None,
    ) -> None:
        self._settings = settings
        self._session = session
        self._slots = asyncio.Semaphore(max_concurrency)
        self._clock = clock
        self._rng = rng
        self._not_before = 0.0  # monotonic time before which no request is sent
        self.replicas = replicas or Replicas(
            (settings.address,), backend=settings.backend, failback_after=60.0, clock=clock
        )

    @property
    def timeout(self) -> float:
        return self._settings.timeout

    async def send(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Reply:
        """`call` with retries on 429/5xx, each address within the backend's timeout;
        the next replica after an outage of one (module docstring)."""
        replicas = self.replicas
        last: Reply | BackendUnavailable | BackendTimeout | None = None
        for index in replicas.order():
            try:
                reply = await self._send_to(index, method, path, token, params, payload)
            except (BackendUnavailable, BackendTimeout) as exc:
                if not replicas.several:
                    raise
                replicas.failed(index, exc.message)
                last = exc
                continue
            if reply.status >= 500 and replicas.several:
                replicas.failed(index, f"answered {reply.status}")
                last = reply
                continue
            return reply
        if isinstance(last, Reply):
            return last  # every address answered 5xx: the last answer tells
        assert last is not None
        raise last

    async def probe(self, index: int) -> bool:
        """Whether the server at `index` answers health as a serving node (failback)."""
        params = {"standbyok": "true", "perfstandbyok": "true"}
        try:
            reply = await self.call("GET", "sys/health", token=None, params=params, index=index)
        except (BackendUnavailable, BackendTimeout, BadBackendAnswer):
            return False
        return reply.status == 200

    async def _send_to(
        self,
        index: int,
        method: str,
        path: str,
        token: str | None,
        params: Mapping[str, str] | None,
        payload: Mapping[str, Any] | None,
    ) -> Reply:
        deadline = self._clock.monotonic() + self._settings.timeout
        # With replicas a 5xx is not retried here: the next replica is the retry.
        retryable = RETRYABLE if not self.replicas.several else frozenset({429})
        attempt = 0
        while True:
            await self._wait_for_turn(deadline, path)
            remaining = deadline - self._clock.monotonic()
            reply = await self.call(
                method,
                path,
                token=token,
                params=params,
                payload=payload,
                within=remaining,
                index=index,
            )
            attempt += 1
            if reply.status not in retryable:
                return reply
            delay = self._delay(attempt, reply.retry_after)
            if reply.retry_after is not None:
                self._not_before = max(self._not_before, self._clock.monotonic() + delay)
            if attempt >= MAX_ATTEMPTS or self._clock.monotonic() + delay >= deadline:
                return reply
            log.info(
                "vault.request_retried",
                backend=self._settings.backend,
                path=path,
                status=reply.status,
                delay=round(delay, 3),
            )
            await self._clock.sleep(delay)

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        params: Mapping[str, str] | None = None,
        payload: Mapping[str, Any] | None = None,
        within: float | None = None,
        index: int | None = None,
    ) -> Reply:
        """One request to the address `index` (default: the serving one); `path`
        is below /v1/ and already percent-encoded."""
        index = self.replicas.serving if index is None else index
        where = self.where(path, index)
        limit = self._settings.timeout if within is None else max(within, 0.0)
        try:
            async with asyncio.timeout(limit), self._slots:
                return await self._exchange(method, path, token, params, payload, index)
        except TimeoutError:
            raise BackendTimeout(f"{where}: no answer within {limit:.3g}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise BackendUnavailable(f"{where}: {_describe(exc)}") from None

    def where(self, path: str, index: int | None = None) -> str:
        """How errors name a request: the backend (and, with replicas, the
        address) and the API path (never a token)."""
        if not self.replicas.several:
            return f"vault backend {self._settings.backend!r} {path}"
        address = self.replicas.endpoints[self.replicas.serving if index is None else index]
        return f"vault backend {self._settings.backend!r} ({address}) {path}"

    async def _exchange(
        self,
        method: str,
        path: str,
        token: str | None,
        params: Mapping[str, str] | None,
        payload: Mapping[str, Any] | None,
        index: int,
    ) -> Reply:
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if token is not None:
            headers["X-Vault-Token"] = token
        if self._settings.namespace:
            headers["X-Vault-Namespace"] = self._settings.namespace
        url = f"{self.replicas.endpoints[index]}/v1/{path}"
        async with self._session.request(
            method,
            yarl.URL(url, encoded=True),
            params=params,
            json=payload,
            headers=headers,
            allow_redirects=False,
        ) as resp:
            return await self._read(resp, path, index)

    async def _read(self, resp: aiohttp.ClientResponse, path: str, index: int) -> Reply:
        where = self.where(path, index)
        if 300 <= resp.status < 400:
            raise BackendUnavailable(
                f"{where}: answered a redirect ({resp.status}); point address at the active node"
            )
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise BadBackendAnswer(f"{where}: answer uses Content-Encoding {encoding!r}")
        raw = await self._capped_body(resp, where)
        retry_after = _retry_after(resp.headers.get("Retry-After"))
        if not raw.strip() or not _looks_json(resp):
            if 200 <= resp.status < 300 and resp.status != 204:
                raise BadBackendAnswer(f"{where}: answered {resp.status} without a JSON body")
            return Reply(resp.status, None, retry_after)
        try:
            body = parse_object(raw, where=where)
        except BadBackendAnswer:
            if 200 <= resp.status < 300:
                raise
            body = None  # an error page: the status tells us what we need
        return Reply(resp.status, body, retry_after)

    async def _capped_body(self, resp: aiohttp.ClientResponse, where: str) -> bytes:
        cap = self._settings.max_body
        declared = resp.content_length
        if declared is not None and declared > cap:
            raise BadBackendAnswer(
                f"{where}: answer of {declared} bytes exceeds the {cap}-byte cap"
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await resp.content.read(min(65536, cap + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                raise BadBackendAnswer(f"{where}: answer exceeds the {cap}-byte cap; cut off")

    async def _wait_for_turn(self, deadline: float, path: str) -> None:
        """Honour a Retry-After another request received, within our deadline."""
        wait = self._not_before - self._clock.monotonic()
        if wait <= 0:
            return
        if self._clock.monotonic() + wait >= deadline:
            raise BackendUnavailable(
                f"{self.where(path)}: server asked to retry after {wait:.3g}s (Retry-After)"
            )
        await self._clock.sleep(wait)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return RETRY.delay(attempt, self._rng)


def _looks_json(resp: aiohttp.ClientResponse) -> bool:
    ctype = resp.headers.get("Content-Type", "")
    return ctype.split(";", 1)[0].strip().lower() in ("application/json", "")


def _retry_after(header: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), bounded."""
    if header is None:
        return None
    text = header.strip()
    seconds: float | None
    if text.isdigit() and len(text) <= 6:
        seconds = float(text)
    else:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = (moment - utc_now()).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _describe(exc: BaseException) -> str:
    """A short, value-free description of a transport failure."""
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "answer was cut off (truncated body)"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"bad HTTP answer ({exc.status})"
    return type(exc).__name__
