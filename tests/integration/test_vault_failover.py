"""Vault/OpenBao replicas: two real `bao server -dev` processes with the same root
token and the same secrets. A primary that hangs (SIGSTOP) or refuses (stopped)
moves cold reads and refreshes to the replica, none of them failing; the primary
is taken back once it has answered health checks for `failback_after`; 4xx
answers never move anything; a 5xx does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from secretd.backends.vault import VaultBackend, open_backend
from secretd.cache.secret_cache import SecretCache
from secretd.config import CacheSection
from secretd.config.schema import VaultBackendConfig
from secretd.errors import BackendAuthError, NotFound
from secretd.model import SecretName
from tests.fakes.cache_rig import cache_over
from tests.fakes.fault_proxy import Fault, FaultProxy
from tests.servers.bao_server import ROOT_TOKEN, BaoServer, write_private

NAMES = ("app/db", "app/cold", "app/cold2", "app/late")
TIMEOUT = 2.0


def seed(server: BaoServer) -> None:
    for name in NAMES:
        server.kv_put(name, {"password": f"pw-of-{name}"})


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[BaoServer, BaoServer]]:
    first = BaoServer.start(tmp_path / "a")
    try:
        second = BaoServer.start(tmp_path / "b")
    except BaseException:
        first.stop()
        raise
    try:
        seed(first)
        seed(second)
        yield first, second
    finally:
        first.stop()
        second.stop()


@dataclass
class Rig:
    backend: VaultBackend
    cache: SecretCache
    failback: asyncio.Task[None] | None = None


def replica_config(
    tmp_path: Path, addresses: list[str], *, token: str = ROOT_TOKEN
) -> VaultBackendConfig:
    token_file = write_private(tmp_path / f"token-{time.monotonic_ns()}", token)
    return VaultBackendConfig.model_validate(
        {
            "type": "vault",
            "address": addresses,
            "auth": {"method": "token", "token_file": str(token_file)},
            "timeout": f"{TIMEOUT:g}s",
            "failback_after": "2s",
        }
    )


async def open_rig(config: VaultBackendConfig) -> Rig:
    backend = await open_backend("vault", config, max_secret_bytes=65536)
    cache = cache_over(backend, CacheSection(refresh_interval="1m"), seed=5)
    return Rig(backend, cache)


@pytest.fixture
async def rigs() -> AsyncIterator[list[Rig]]:
    """The rigs a test opened, closed (failback task too) at its end."""
    opened: list[Rig] = []
    yield opened
    for rig in opened:
        if rig.failback is not None:
            rig.failback.cancel()
            await asyncio.gather(rig.failback, return_exceptions=True)
        await rig.cache.aclose()
        await rig.backend.aclose()


async def start_rig(
    rigs: list[Rig], tmp_path: Path, addresses: list[str], *, token: str = ROOT_TOKEN
) -> Rig:
    """A rig whose backend's background work (taking the primary back) runs, as
    the agent runs it."""
    rig = await open_rig(replica_config(tmp_path, addresses, token=token))
    rigs.append(rig)
    rig.failback = asyncio.create_task(rig.backend.run())
    return rig


def requests_for(server: BaoServer, name: str) -> int:
    return len(server.audit_requests(f"secret/metadata/{name}"))


async def reading_from_primary(
    rigs: list[Rig], tmp_path: Path, pair: tuple[BaoServer, BaoServer]
) -> Rig:
    """A rig over both servers, primary first, that has read app/db from the primary."""
    primary, replica = pair
    rig = await start_rig(rigs, tmp_path, [primary.address, replica.address])
    assert await read(rig, "app/db") == '{"password":"pw-of-app/db"}'
    assert rig.backend.replicas.endpoint == primary.address
    return rig


async def until_serving(rig: Rig, address: str, within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while rig.backend.replicas.endpoint != address:
            await asyncio.sleep(0.05)


async def read(rig: Rig, name: str, *, refresh: bool = False) -> str:
    secret = await rig.cache.read(SecretName(name), refresh=refresh)
    text = secret.version.value.text()
    assert text is not None
    return text


async def test_a_hung_primary_moves_reads_to_the_replica_then_is_taken_back(
    pair: tuple[BaoServer, BaoServer], tmp_path: Path, rigs: list[Rig]
) -> None:
    primary, replica = pair
    rig = await reading_from_primary(rigs, tmp_path, pair)

    primary.pause()  # SIGSTOP: it accepts connections and never answers
    try:
        # Cold reads and a refresh, all at once, while the primary hangs: each waits
        # at most one backend timeout on it, then the replica answers. None fails.
        answers = await asyncio.gather(
            read(rig, "app/cold"), read(rig, "app/cold2"), read(rig, "app/db", refresh=True)
        )
        assert answers == [
            f'{{"password":"pw-of-{n}"}}' for n in ("app/cold", "app/cold2", "app/db")
        ]
        assert rig.backend.replicas.endpoint == replica.address
        assert rig.backend.replicas.failovers == 1
        health = rig.cache.backend_health()["vault"]
        assert (health.ok, health.endpoint, health.on_primary) == (True, replica.address, False)
        # Stuck to the replica: a read now goes there first, not to the hung primary.
        assert await read(rig, "app/late") == '{"password":"pw-of-app/late"}'
        await rig.cache.refresh_target.check("vault", [SecretName("app/cold")])
        assert requests_for(replica, "app/late") >= 1
        assert requests_for(replica, "app/cold") >= 2  # the cold read and the refresh
    finally:
        primary.resume()
    await until_serving(rig, primary.address)
    # The primary never saw the reads made after the failover (queued ones would show now).
    assert requests_for(primary, "app/late") == 0
    before = requests_for(primary, "app/db")
    assert await read(rig, "app/db", refresh=True) == '{"password":"pw-of-app/db"}'
    assert requests_for(primary, "app/db") > before


async def test_a_refusing_primary_moves_reads_at_once_and_a_restarted_one_is_taken_back(
    pair: tuple[BaoServer, BaoServer], tmp_path: Path, rigs: list[Rig]
) -> None:
    primary, replica = pair
    rig = await reading_from_primary(rigs, tmp_path, pair)
    primary.stop()  # SIGTERM: connections are refused
    assert await read(rig, "app/cold") == '{"password":"pw-of-app/cold"}'
    assert await read(rig, "app/db", refresh=True) == '{"password":"pw-of-app/db"}'
    assert rig.backend.replicas.endpoint == replica.address
    assert rig.backend.replicas.failovers == 1

    back = await asyncio.to_thread(BaoServer.start, tmp_path / "a2", port=primary.port)
    try:
        await asyncio.to_thread(seed, back)
        await until_serving(rig, back.address)
        assert await read(rig, "app/late") == '{"password":"pw-of-app/late"}'
        assert requests_for(back, "app/late") == 1
    finally:
        back.stop()


async def test_4xx_answers_never_fail_over(
    pair: tuple[BaoServer, BaoServer], tmp_path: Path, rigs: list[Rig]
) -> None:
    primary, replica = pair
    for server in pair:  # the same token, valid on both, that may read nothing
        server.api(
            "POST",
            "auth/token/create",
            {"id": "limited-token-for-tests", "policies": ["default"], "no_parent": True},
        )
    root = await start_rig(rigs, tmp_path, [primary.address, replica.address])
    with pytest.raises(NotFound):
        await read(root, "app/missing")
    limited = await start_rig(
        rigs, tmp_path, [primary.address, replica.address], token="limited-token-for-tests"
    )
    with pytest.raises(BackendAuthError):
        await read(limited, "app/db")
    for rig in (root, limited):
        assert rig.backend.replicas.endpoint == primary.address
        assert rig.backend.replicas.failovers == 0


async def test_a_5xx_answer_fails_over(
    pair: tuple[BaoServer, BaoServer], tmp_path: Path, rigs: list[Rig]
) -> None:
    primary, replica = pair
    async with FaultProxy("127.0.0.1", primary.port) as proxy:
        proxy.add(Fault.canned(500, b'{"errors":["internal error"]}', match="/secret/"))
        rig = await start_rig(rigs, tmp_path, [proxy.url, replica.address])
        assert await read(rig, "app/db") == '{"password":"pw-of-app/db"}'
        assert rig.backend.replicas.endpoint == replica.address
        assert proxy.count("/secret/", action="canned") >= 1
