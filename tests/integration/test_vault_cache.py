"""The Vault backend under the real `SecretCache`, against a real `bao server -dev`
(through the fault proxy where faults are needed): single-flight cold reads
counted in the server's audit log, the last good value kept through outages and
hostile answers, auth failures in health, and rotation noticed by cheap
metadata checks."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from secretd.backends.router import Router
from secretd.backends.vault import open_backend
from secretd.cache.observer import NullObserver
from secretd.cache.secret_cache import SecretCache, build_cache
from secretd.clock import SystemClock
from secretd.config.schema import CacheSection, VaultBackendConfig
from secretd.errors import BackendError
from secretd.events import Hub
from secretd.model import SecretName
from tests.fakes.cache_rig import close_cache, refresh_loops
from tests.fakes.fault_proxy import Fault, FaultProxy, hostile_bodies
from tests.servers.bao_server import BaoServer, bao_server, vault_config

__all__ = ["bao_server"]

pytestmark = pytest.mark.vault


async def open_cache(
    config: VaultBackendConfig, hub: Hub | None = None, **settings: Any
) -> SecretCache:
    backend = await open_backend("vault", config, max_secret_bytes=65536)
    router = Router({"vault": backend}, {"vault": "vault/"})
    return build_cache(
        router=router,
        hub=hub or Hub(),
        settings=CacheSection.model_validate(settings),
        max_secret_bytes=65536,
        observer=NullObserver(),
        clock=SystemClock(),
        rng=random.Random(5),
        call_timeout=10.0,
    )


@pytest.fixture
async def proxy(bao_server: BaoServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", bao_server.port) as fault_proxy:
        yield fault_proxy


def password(value: bytes) -> str:
    parsed = json.loads(value)
    assert isinstance(parsed, dict)
    return str(parsed["password"])


async def test_256_concurrent_cold_reads_make_one_kv_read(
    bao_server: BaoServer, tmp_path: Path
) -> None:
    bao_server.kv_put("cache/cold", {"password": "p1"})
    cache = await open_cache(vault_config(bao_server, tmp_path))
    try:
        results = await asyncio.gather(
            *(cache.read(SecretName("vault/cache/cold")) for _ in range(256))
        )
    finally:
        await close_cache(cache)
    assert {r.version.version_id for r in results} == {"1"}
    assert {password(r.version.value.reveal()) for r in results} == {"p1"}
    assert len(bao_server.audit_requests("secret/data/cache/cold", operation="read")) == 1
    assert len(bao_server.audit_requests("secret/metadata/cache/cold", operation="read")) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault.blackhole(match="/secret/"),
        Fault.reset(match="/secret/"),
        Fault.truncate(match="/secret/data/"),
        Fault.canned(500, hostile_bodies()["html"], content_type="text/html"),
        Fault.canned(200, hostile_bodies()["duplicate_keys"], match="/secret/"),
        # the refresh asks for the unseen version 3; the answer claims version 2
        Fault.transform(lambda b: b.replace(b'"version":3', b'"version":2'), match="/data/"),
    ],
    ids=["blackhole", "reset", "truncate", "500-html", "duplicate-keys", "wrong-version"],
)
async def test_a_failing_refresh_serves_the_last_good_value_as_stale(
    bao_server: BaoServer, proxy: FaultProxy, tmp_path: Path, fault: Fault
) -> None:
    kv_path = f"cache/kept-{tmp_path.name}"  # fresh per case: versions 1, 2, then 3
    bao_server.kv_put(kv_path, {"password": "good"})
    bao_server.kv_put(kv_path, {"password": "good"})
    config = vault_config(bao_server, tmp_path, address=proxy.url, timeout="1s")
    cache = await open_cache(config)
    name = SecretName(f"vault/{kv_path}")
    try:
        first = await cache.read(name)
        assert not first.stale
        bao_server.kv_put(kv_path, {"password": "newer"})  # version 3, unseen
        proxy.add(fault)

        during = await cache.read(name, refresh=True)

        assert during.stale
        assert during.version.version_id == first.version.version_id
        assert password(during.version.value.reveal()) == "good"
        health = cache.backend_health()["vault"]
        assert not health.ok and health.last_error
        assert "good" not in health.last_error

        proxy.clear()
        after = await cache.read(name, refresh=True)
        assert not after.stale
        assert password(after.version.value.reveal()) == "newer"
        assert cache.backend_health()["vault"].ok
    finally:
        await close_cache(cache)


async def test_an_auth_failure_shows_in_health(bao_server: BaoServer, tmp_path: Path) -> None:
    bao_server.kv_put("cache/auth", {"password": "p"})
    cache = await open_cache(vault_config(bao_server, tmp_path, token="s.revoked-or-never-was"))
    try:
        with pytest.raises(BackendError):
            await cache.read(SecretName("vault/cache/auth"))
        health = cache.backend_health()["vault"]
        assert not health.ok
        assert health.last_error is not None and "refused" in health.last_error
    finally:
        await close_cache(cache)


async def test_rotation_is_noticed_by_metadata_checks_alone(
    bao_server: BaoServer, tmp_path: Path
) -> None:
    bao_server.kv_put("cache/rot", {"password": "v1"})
    hub = Hub()
    cache = await open_cache(vault_config(bao_server, tmp_path), hub, refresh_interval="250ms")
    name = SecretName("vault/cache/rot")
    runner = asyncio.ensure_future(refresh_loops(cache, cache.core.settings, SystemClock()))
    try:
        cache.pin([name])
        await cache.preload([name])
        metadata_reads = len(bao_server.audit_requests("secret/metadata/cache/rot"))
        async with hub.subscribe() as changes:
            # a few refresh rounds with nothing new: metadata reads only, no data reads
            for _ in range(100):
                if (
                    len(bao_server.audit_requests("secret/metadata/cache/rot"))
                    >= metadata_reads + 3
                ):
                    break
                await asyncio.sleep(0.05)
            assert len(bao_server.audit_requests("secret/data/cache/rot", operation="read")) == 1

            bao_server.kv_put("cache/rot", {"password": "v2"})
            async with asyncio.timeout(10):
                event = await changes.get()
        assert event.name == name and event.version_id == "2"
        got = await cache.read(name)
        assert password(got.version.value.reveal()) == "v2"
        assert len(bao_server.audit_requests("secret/data/cache/rot", operation="read")) == 2
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await close_cache(cache)


async def test_no_value_or_token_leaks_into_logs_errors_or_health(
    bao_server: BaoServer,
    proxy: FaultProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    canary = "CANARY-d41d8cd98f00b204"
    kv_path = "cache/canary"
    bao_server.kv_put(kv_path, {"password": canary})
    config = vault_config(bao_server, tmp_path, address=proxy.url, timeout="1s")
    cache = await open_cache(config)
    name = SecretName(f"vault/{kv_path}")
    seen: list[str] = []
    try:
        assert canary in (await cache.read(name)).version.value.reveal().decode()
        bao_server.kv_put(kv_path, {"password": canary + "-2"})
        for fault in [
            Fault.transform(lambda b: b.replace(b'"version":2', b'"version":1'), match="/data/"),
            Fault.transform(lambda b: b + b"garbage", match="/data/"),
            Fault.canned(200, hostile_bodies()["duplicate_keys"]),
            Fault.truncate(match="/data/"),
            Fault.canned(403, b'{"errors":["permission denied"]}'),
        ]:
            proxy.clear()
            proxy.add(fault)
            got = await cache.read(name, refresh=True)
            assert got.stale
            seen.append(str(cache.backend_health()["vault"].last_error))
            seen.append(repr(got))
    finally:
        await close_cache(cache)
    printed = capsys.readouterr()
    assert "vault.logged_in" in printed.out + printed.err  # the logs were captured
    for text in [printed.out, printed.err, *seen]:
        assert canary not in text
        assert bao_server.token not in text
