"""`TokenKeeper` on a fake clock with scripted token sources: login coalescing,
back-off after refused and failed logins, and a half-written token file."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import aiohttp
import pytest

from secretd.backends.vault_auth import Lease
from secretd.backends.vault_http import HttpSettings, VaultHttp
from secretd.backends.vault_token import LOGIN_BACKOFF_MAX, TokenKeeper
from secretd.errors import BackendAuthError, BackendError, BackendUnavailable
from tests.fakes.fake_clock import FakeClock


class ScriptedSource:
    """A TokenSource whose logins follow a script of outcomes."""

    method = "approle"

    def __init__(self, *outcomes: str | BackendError) -> None:
        self.outcomes = list(outcomes)
        self.logins = 0
        self.file_changed = False

    async def login(self, http: VaultHttp, now: float) -> Lease:
        self.logins += 1
        await asyncio.sleep(0)  # a real login yields to the loop
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BackendError):
            raise outcome
        return Lease(outcome, 0.0, False, now)

    async def changed(self) -> bool:
        return self.file_changed


@pytest.fixture
async def http() -> AsyncIterator[VaultHttp]:
    async with aiohttp.ClientSession() as session:  # never used: sources are scripted
        settings = HttpSettings("v", "http://127.0.0.1:9", None, 1.0, 1024)
        yield VaultHttp(
            settings, session=session, max_concurrency=1, clock=FakeClock(), rng=random.Random(1)
        )


def keeper(source: ScriptedSource, http: VaultHttp, clock: FakeClock) -> TokenKeeper:
    return TokenKeeper(source, http, backend="v", clock=clock, rng=random.Random(3))


async def test_concurrent_callers_share_one_login(http: VaultHttp) -> None:
    source = ScriptedSource("t1")
    tokens = keeper(source, http, FakeClock())
    assert set(await asyncio.gather(*(tokens.token() for _ in range(50)))) == {"t1"}
    assert source.logins == 1


async def test_a_refused_login_backs_off_without_asking_again(http: VaultHttp) -> None:
    clock = FakeClock()
    source = ScriptedSource(BackendAuthError("refused"), BackendAuthError("refused"), "t2")
    tokens = keeper(source, http, clock)
    with pytest.raises(BackendAuthError, match="refused"):
        await tokens.token()
    for _ in range(10):
        with pytest.raises(BackendAuthError, match="next login attempt"):
            await tokens.token()
    assert source.logins == 1
    clock.advance(1.0)  # the first back-off is at most 1 s
    with pytest.raises(BackendAuthError, match="refused"):
        await tokens.token()
    assert source.logins == 2
    clock.advance(1.0)  # the second is at least 1 s: not yet
    with pytest.raises(BackendAuthError, match="next login attempt"):
        await tokens.token()
    clock.advance(1.0)
    assert await tokens.token() == "t2"


async def test_background_logins_back_off_while_the_server_is_down(http: VaultHttp) -> None:
    clock = FakeClock()
    source = ScriptedSource(BackendUnavailable("connection refused"))
    tokens = keeper(source, http, clock)
    task = asyncio.ensure_future(tokens.run())
    try:
        for _ in range(9):
            await clock.wait_for_sleepers(1)
            deadline = clock.next_deadline()
            assert deadline is not None
            clock.advance(deadline - clock.monotonic())
        await clock.wait_for_sleepers(1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    pauses = clock.slept
    assert source.logins == 10
    for n, pause in enumerate(pauses):
        ceiling = min(2**n, LOGIN_BACKOFF_MAX)  # 1 s doubling up to 60 s
        assert ceiling / 2 <= pause <= ceiling  # jitter in [d/2, d]


async def test_an_unreadable_new_token_file_keeps_the_old_token(http: VaultHttp) -> None:
    clock = FakeClock()
    source = ScriptedSource("old", BackendAuthError("file is empty"), "new")
    tokens = keeper(source, http, clock)
    assert await tokens.token() == "old"
    source.file_changed = True
    clock.advance(1.5)  # past the once-a-second file check
    assert await tokens.token() == "old"  # the bad new file is logged, not fatal
    clock.advance(2.5)  # past the file check and the login back-off
    assert await tokens.token() == "new"


class ShortLivedSource(ScriptedSource):
    """Logins that succeed with a token living `ttl` seconds."""

    def __init__(self, ttl: float) -> None:
        super().__init__("short")
        self.ttl = ttl

    async def login(self, http: VaultHttp, now: float) -> Lease:
        self.logins += 1
        return Lease("short", self.ttl, True, now)


async def test_a_token_under_the_floor_is_refused_and_retried_with_backoff(
    http: VaultHttp,
) -> None:
    from secretd.backends.vault_token import MIN_TOKEN_TTL

    clock = FakeClock()
    source = ShortLivedSource(MIN_TOKEN_TTL / 1000)
    tokens = keeper(source, http, clock)
    with pytest.raises(BackendAuthError, match="under the 5s floor"):
        await tokens.token()
    for _ in range(20):  # callers meanwhile fail at once, without asking the server
        with pytest.raises(BackendAuthError, match="next login attempt"):
            await tokens.token()
    assert source.logins == 1
    clock.advance(1.0)  # the first backoff is at most 1 s
    with pytest.raises(BackendAuthError, match="floor"):
        await tokens.token()
    assert source.logins == 2
    source.ttl = MIN_TOKEN_TTL * 2  # a usable token: accepted, the backoff reset
    clock.advance(2.0)
    assert await tokens.token() == "short"
    assert source.logins == 3
