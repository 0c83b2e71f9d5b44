"""Every SDK call has an overall deadline: against a stand-in agent on a Unix
socket that drips its answer a byte every 100 ms (tests/fakes/drip_agent.py),
`get`, `list`, `health`, a long-poll `watch` and the cache's refresh end with
RequestTimeout near `timeout` (a long-poll: `wait` + `timeout`), instead of
lasting as long as the peer keeps dripping (301 s before)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import secretd_client as sc
from tests.fakes.drip_agent import DripAgent

TIMEOUT = 1.0
# A bound that proves a deadline exists; the drip alone would last 120 s.
SLACK = 5.0


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sdkd-", dir="/tmp") as tmp:
        yield Path(tmp)


def timed(call: Callable[[], Any]) -> float:
    started = time.monotonic()
    with pytest.raises(sc.RequestTimeout):
        call()
    return time.monotonic() - started


@pytest.mark.parametrize("mode", ["body", "head"])
def test_sync_calls_end_at_the_deadline(sock_dir: Path, mode: str) -> None:
    with (
        DripAgent(sock_dir / "a.sock", mode) as agent,
        sc.Client(agent.path, timeout=TIMEOUT) as client,
    ):
        for call in (lambda: client.get("db/app"), client.list, client.health):
            assert timed(call) < TIMEOUT + SLACK


@pytest.mark.parametrize("mode", ["body", "head"])
async def test_async_calls_end_at_the_deadline(sock_dir: Path, mode: str) -> None:
    with DripAgent(sock_dir / "a.sock", mode) as agent:
        async with sc.AsyncClient(agent.path, timeout=TIMEOUT) as client:
            for call in (lambda: client.get("db/app"), client.list, client.health):
                started = time.monotonic()
                with pytest.raises(sc.RequestTimeout):
                    await call()
                assert time.monotonic() - started < TIMEOUT + SLACK


class Stop(Exception):
    pass


def first_error(errors: list[sc.SecretdClientError]) -> Callable[[sc.SecretdClientError], None]:
    def hook(exc: sc.SecretdClientError) -> None:
        errors.append(exc)
        raise Stop

    return hook


def test_a_sync_long_poll_ends_at_wait_plus_timeout(sock_dir: Path) -> None:
    wait = 1.0
    errors: list[sc.SecretdClientError] = []
    with (
        DripAgent(sock_dir / "a.sock", "polls") as agent,
        sc.Client(agent.path, timeout=TIMEOUT) as client,
    ):
        watch = client.watch("db/app", wait=wait, index="v1", on_error=first_error(errors))
        started = time.monotonic()
        with pytest.raises(Stop):
            next(watch)
        elapsed = time.monotonic() - started
    assert isinstance(errors[0], sc.RequestTimeout)
    assert wait + TIMEOUT - 0.5 < elapsed < wait + TIMEOUT + SLACK


async def test_an_async_long_poll_ends_at_wait_plus_timeout(sock_dir: Path) -> None:
    wait = 1.0
    errors: list[sc.SecretdClientError] = []
    with DripAgent(sock_dir / "a.sock", "polls") as agent:
        async with sc.AsyncClient(agent.path, timeout=TIMEOUT) as client:
            watch = client.watch("db/app", wait=wait, index="v1", on_error=first_error(errors))
            started = time.monotonic()
            with pytest.raises(Stop):
                await anext(watch)
            elapsed = time.monotonic() - started
    assert isinstance(errors[0], sc.RequestTimeout)
    assert wait + TIMEOUT - 0.5 < elapsed < wait + TIMEOUT + SLACK


async def test_the_caches_refresh_has_a_deadline(sock_dir: Path) -> None:
    with DripAgent(sock_dir / "a.sock", "polls") as agent:
        async with sc.AsyncClient(agent.path, timeout=TIMEOUT, cache=True) as client:
            assert client._cache is not None
            client._cache._wait = 1.0  # the refresh long-polls this long
            first = await client.get("db/app")
            assert first.value == "pw" and not first.stale
            async with asyncio.timeout(1.0 + TIMEOUT + SLACK):
                while not (await client.get("db/app")).stale:
                    await asyncio.sleep(0.05)  # the dripping refresh timed out: marked stale
