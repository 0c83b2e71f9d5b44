"""The SDK's in-process cache (`cache=True`) kept fresh by background watches,
against `StaticSecrets`: real threads and event loops, bounded waits."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

import secretd_client as sc
from secretd_client.testing import StaticSecrets

DB = '{"password": "pw1", "port": 5432}'


@pytest.fixture
def secrets() -> StaticSecrets:
    return StaticSecrets({"db/app": DB, "api/token": "tok"})


def _eventually(check: Callable[[], bool], attempts: int = 500) -> None:
    """Bounded wait for the background watch (a thread) to catch up."""
    for _ in range(attempts):
        if check():
            return
        time.sleep(0.01)
    raise AssertionError("condition never held")


class SyncOnly(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(500)


def test_cache_needs_a_transport_that_serves_asyncio_too() -> None:
    with pytest.raises(TypeError):
        sc.Client("/tmp/x.sock", cache=True, transport=SyncOnly())


def test_cached_client_follows_rotation_without_asking_each_time(secrets: StaticSecrets) -> None:
    with secrets.client(cache=True) as client:
        assert client.get("db/app", field="password").value == "pw1"
        before = secrets.requests
        for _ in range(50):
            assert client.get("db/app", field="password").value == "pw1"
        assert secrets.requests - before <= 1  # only the parked long-poll
        secrets.rotate("db/app", '{"password": "pw2"}')
        _eventually(lambda: client.get("db/app", field="password").value == "pw2")
        # other stages bypass the cache
        assert client.get("db/app", stage="previous").version_id == "v1"


def test_cached_client_forgets_removed_secrets(secrets: StaticSecrets) -> None:
    with secrets.client(cache=True) as client:
        client.get("api/token")
        secrets.remove("api/token")

        def gone() -> bool:
            try:
                client.get("api/token")
            except sc.NotFound:
                return True
            return False

        _eventually(gone)


async def test_async_cache_single_flight_and_close(secrets: StaticSecrets) -> None:
    import asyncio

    async with secrets.async_client(cache=True) as client:
        results = await asyncio.gather(*(client.get("db/app") for _ in range(20)))
        assert {r.version_id for r in results} == {"v1"}
        assert secrets.requests <= 2  # one read, perhaps the parked long-poll
        secrets.rotate("db/app", "x")
        for _ in range(500):
            if (await client.get("db/app")).value == "x":
                break
            await asyncio.sleep(0.01)
        assert (await client.get("db/app")).value == "x"
        with pytest.raises(sc.NotFound):
            await client.get("nope")
