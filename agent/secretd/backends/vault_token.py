"""`TokenKeeper`: one backend's current Vault token, logged in, renewed, recovered.

- `token()` logs in lazily, once for any number of concurrent callers, and
  notices a changed token file (checked at most once a second).
- `recover(rejected)` is called after a 403. A token that `lookup-self` still
  accepts means the policy denies the path (no login storm); a token it
  rejects is replaced by a fresh login.
- `run()` renews with ``auth/token/renew-self`` at two thirds of the TTL and
  logs in again when renewal fails or the token nears its max TTL. The
  backend owns this task and cancels it in `aclose`.
- A refused login backs off exponentially with jitter (1 s doubling to 60 s,
  `secretd.backoff`); until the next attempt is due callers get
  `BackendAuthError` at once.
- A token that would live less than MIN_TOKEN_TTL (a login or lookup-self
  answering `ttl: 0.001`, a renewal giving `lease_duration: 0.001`) is refused
  like a failed login: an error the reads (and so health) report, retried with
  the same backoff. Renewing or logging in again as fast as such a token
  expires would be a loop against the server.
"""

from __future__ import annotations

import asyncio
import random

import structlog

from secretd.backends.vault_auth import Lease, TokenSource, lease_from_auth
from secretd.backends.vault_http import VaultHttp
from secretd.backoff import Backoff, Retry
from secretd.clock import Clock
from secretd.errors import BackendAuthError, BackendError

log = structlog.get_logger(__name__)

FILE_CHECK_INTERVAL = 1.0
LOGIN_BACKOFF_MIN = 1.0
LOGIN_BACKOFF_MAX = 60.0
VALIDATED_FOR = 5.0  # a token lookup-self accepted is trusted this long after a 403
RENEW_AT = 2 / 3
MIN_TOKEN_TTL = 5.0  # seconds: a token living less cannot be kept, only looped on


class TokenKeeper:
    """Holds the token of one backend; see the module docstring."""

    def __init__(
        self,
        source: TokenSource,
        http: VaultHttp,
        *,
        backend: str,
        clock: Clock,
        rng: random.Random,
        min_ttl: float = MIN_TOKEN_TTL,
    ) -> None:
        self._source = source
        self._min_ttl = min_ttl
        self._http = http
        self._backend = backend
        self._clock = clock
        self._lease: Lease | None = None
        self._login_ttl = 0.0
        self._login_lock = asyncio.Lock()
        self._recover_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        # Refused logins hold every caller back; the background task and renewals
        # keep their own pace so a server that is merely down is not hammered either.
        self._login_backoff = self._backoff(rng)
        self._background_backoff = self._backoff(rng)
        self._renew_backoff = self._backoff(rng)
        self._last_error = ""
        self._next_file_check = 0.0
        self._validated: tuple[str, float] | None = None

    def _backoff(self, rng: random.Random) -> Retry:
        policy = Backoff(base=LOGIN_BACKOFF_MIN, cap=LOGIN_BACKOFF_MAX)
        return Retry(policy, rng=rng, clock=self._clock)

    async def token(self) -> str:
        lease = self._lease
        if lease is None or not self._usable(lease):
            return await self._login(stale=lease)
        if not await self._source_changed():
            return lease.token
        try:
            return await self._login(stale=lease)
        except BackendAuthError as exc:
            # A half-written token file must not take away a token that still works.
            log.warning("vault.token_reload_failed", backend=self._backend, error=str(exc))
            return lease.token

    async def recover(self, rejected: str) -> str | None:
        """After a 403 with `rejected`: a new token to retry with, or None when
        the token is valid and the policy is what said no."""
        async with self._recover_lock:
            lease = self._lease
            if lease is not None and lease.token != rejected and self._usable(lease):
                return lease.token
            if self._recently_validated(rejected):
                return None
            reply = await self._http.send("GET", "auth/token/lookup-self", token=rejected)
            if reply.status == 200:
                self._validated = (rejected, self._clock.monotonic())
                return None
            log.info("vault.token_rejected", backend=self._backend, status=reply.status)
            return await self._login(stale=lease)

    async def run(self) -> None:
        """Keep a token: log in ahead of the first read, renew, log in again."""
        while True:
            try:
                await self._step()
            except Exception as exc:  # a bug must not end renewal for good
                log.error(
                    "vault.token_keeper_failed", backend=self._backend, error=type(exc).__name__
                )
                await self._pause(self._background_backoff.next_delay())

    async def _step(self) -> None:
        self._wake.clear()
        lease = self._lease
        if lease is None or not self._usable(lease):
            await self._login_in_background()
            return
        if lease.ttl <= 0:
            await self._wake.wait()  # never expires: nothing to do until replaced
            return
        due = lease.obtained_at + lease.ttl * RENEW_AT - self._clock.monotonic()
        await self._pause(due)
        if self._lease is not lease:
            return
        if await self._refresh(lease):
            self._renew_backoff.reset()
        else:
            await self._pause(self._renew_backoff.next_delay())

    def _usable(self, lease: Lease) -> bool:
        if lease.ttl <= 0:
            return True
        return self._clock.monotonic() < lease.obtained_at + lease.ttl

    async def _source_changed(self) -> bool:
        now = self._clock.monotonic()
        if now < self._next_file_check:
            return False
        self._next_file_check = now + FILE_CHECK_INTERVAL
        return await self._source.changed()

    def _recently_validated(self, token: str) -> bool:
        seen = self._validated
        return (
            seen is not None
            and seen[0] == token
            and self._clock.monotonic() - seen[1] < VALIDATED_FOR
        )

    async def _login(self, *, stale: Lease | None) -> str:
        async with self._login_lock:
            current = self._lease
            if current is not None and current is not stale and self._usable(current):
                return current.token  # another caller logged in while we waited
            wait = self._login_backoff.remaining()
            if wait > 0:
                raise BackendAuthError(f"{self._last_error}; next login attempt in {wait:.1f}s")
            try:
                lease = await self._source.login(self._http, self._clock.monotonic())
                self._check_life(lease, "login")
            except BackendAuthError as exc:
                self._login_failed(exc)
                raise
            self._accept(lease, login=True)
            return lease.token

    def _check_life(self, lease: Lease, what: str) -> None:
        if 0 < lease.ttl < self._min_ttl:
            raise BackendAuthError(
                f"{self._http.where('auth/token')}: the token from {what} lives "
                f"{lease.ttl:g}s, under the {self._min_ttl:g}s floor; check the token's "
                "TTL (or the auth role's token_ttl) on the server"
            )

    def _login_failed(self, exc: BackendAuthError) -> None:
        delay = self._login_backoff.next_delay()
        self._last_error = str(exc)
        log.warning(
            "vault.login_failed",
            backend=self._backend,
            method=self._source.method,
            error=str(exc),
            retry_in=round(delay, 2),
        )

    def _accept(self, lease: Lease, *, login: bool) -> None:
        self._lease = lease
        if login:
            self._login_backoff.reset()
            self._login_ttl = lease.ttl
        self._wake.set()
        event = "vault.logged_in" if login else "vault.token_renewed"
        log.info(event, backend=self._backend, method=self._source.method, ttl=lease.ttl)

    async def _login_in_background(self) -> None:
        try:
            await self._login(stale=self._lease)
        except BackendError:
            pass  # logged by _login_failed, or a transport error the reads will report
        else:
            self._background_backoff.reset()
            return
        # A server that is down does not refuse us (no _login_failed back-off), so
        # the background attempts back off on their own: 1 s doubling to 60 s.
        own = self._background_backoff.next_delay()
        await self._pause(max(self._login_backoff.remaining(), own))

    async def _refresh(self, lease: Lease) -> bool:
        """Renew `lease`, or log in afresh when renewing cannot extend it."""
        # A renewal that gave back less than a login does has hit the max TTL.
        near_max_ttl = lease.ttl < self._login_ttl and self._source.method == "approle"
        if not lease.renewable or near_max_ttl:
            return await self._relogin(lease)
        try:
            reply = await self._http.send("POST", "auth/token/renew-self", token=lease.token)
        except BackendError as exc:
            log.warning("vault.token_renewal_failed", backend=self._backend, error=str(exc))
            return False
        if reply.status == 200 and reply.body is not None:
            path = "auth/token/renew-self"
            try:
                renewed = lease_from_auth(reply.body, self._http, path, self._clock.monotonic())
            except BackendAuthError as exc:
                log.warning("vault.token_renewal_failed", backend=self._backend, error=str(exc))
                return False
            try:
                self._check_life(renewed, "renewal")
            except BackendAuthError as exc:
                # Too short to renew again (its max TTL is near, or the server is
                # hostile): keep the current token and get a new one, within the
                # login backoff.
                log.warning("vault.token_renewal_failed", backend=self._backend, error=str(exc))
                return await self._relogin(lease)
            self._accept(renewed, login=False)
            return True
        log.warning("vault.token_renewal_failed", backend=self._backend, status=reply.status)
        if reply.status in (400, 401, 403):
            return await self._relogin(lease)  # revoked or expired
        return False

    async def _relogin(self, lease: Lease) -> bool:
        """Log in again while `lease` stays in use until the new token is there."""
        try:
            await self._login(stale=lease)
        except BackendError:
            return False
        return True

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds` on the clock, or less when the token is replaced."""
        if seconds <= 0:
            return
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
