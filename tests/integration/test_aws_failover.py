"""AWS regions: a backend with `regions = [primary, replica]`, each region on its own
real moto_server (so one can hang or refuse alone), the same secrets in both with the
same version ids (as Secrets Manager replication keeps them). An outage of the
primary moves reads to the replica; throttling and 4xx answers never do; a 5xx does;
the primary is taken back once it answers again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from secretd.backends.aws import AwsBackend, open_backend
from secretd.cache.secret_cache import SecretCache
from secretd.config import CacheSection
from secretd.config.schema import AwsBackendConfig
from secretd.errors import BackendAuthError, BackendUnavailable
from secretd.model import SecretName
from tests.fakes.cache_rig import cache_over
from tests.fakes.fault_proxy import Fault, FaultProxy
from tests.servers.moto_server import TEST_ENV, MotoServer

PRIMARY, REPLICA = "eu-west-1", "eu-central-1"
NAMES = ("app/db", "app/cold", "app/late")


def seed(moto: MotoServer, region: str) -> None:
    import boto3

    client = boto3.client(
        "secretsmanager",
        region_name=region,
        endpoint_url=moto.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    for i, name in enumerate(NAMES):
        token = f"00000000-0000-4000-8000-{i:012d}"  # the same version id in both regions
        client.create_secret(Name=name, SecretString=f"value-of-{name}", ClientRequestToken=token)


@pytest.fixture
def regions(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[MotoServer, MotoServer]]:
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    primary = MotoServer().start()
    replica = MotoServer()
    try:
        replica.start()
        seed(primary, PRIMARY)
        seed(replica, REPLICA)
        yield primary, replica
    finally:
        primary.stop()
        replica.stop()


@pytest.fixture
async def opened() -> AsyncIterator[list[tuple[AwsBackend, SecretCache, asyncio.Task[None]]]]:
    rigs: list[tuple[AwsBackend, SecretCache, asyncio.Task[None]]] = []
    yield rigs
    for backend, cache, failback in rigs:
        failback.cancel()
        await asyncio.gather(failback, return_exceptions=True)
        await cache.aclose()
        await backend.aclose()


async def open_rig(
    opened: list[Any], urls: tuple[str, str], **extra: Any
) -> tuple[AwsBackend, SecretCache]:
    config = AwsBackendConfig.model_validate(
        {
            "type": "aws",
            "regions": [PRIMARY, REPLICA],
            "endpoint_urls": list(urls),
            "timeout": "2s",
            "failback_after": "2s",
            **extra,
        }
    )
    backend = await open_backend("aws", config, max_secret_bytes=65536)
    cache = cache_over(backend, CacheSection(refresh_interval="1m"), seed=9)
    opened.append((backend, cache, asyncio.create_task(backend.run())))
    return backend, cache


async def read(cache: SecretCache, name: str, *, refresh: bool = False) -> str:
    secret = await cache.read(SecretName(name), refresh=refresh)
    assert secret.version.value.text() == f"value-of-{name}"
    return secret.arn or ""


async def until_serving(backend: AwsBackend, region: str, within: float = 30.0) -> None:
    async with asyncio.timeout(within):
        while backend.replicas.endpoint != region:
            await asyncio.sleep(0.05)


async def test_a_hung_primary_region_moves_reads_to_the_replica_then_is_taken_back(
    regions: tuple[MotoServer, MotoServer], opened: list[Any]
) -> None:
    primary, replica = regions
    backend, cache = await open_rig(opened, (primary.url, replica.url))
    assert f":{PRIMARY}:" in await read(cache, "app/db")
    primary.pause()
    try:
        arns = await asyncio.gather(
            read(cache, "app/cold"), read(cache, "app/db", refresh=True)
        )  # cold read and refresh during the hang: none fails
        assert all(f":{REPLICA}:" in arn for arn in arns)
        assert (backend.replicas.endpoint, backend.replicas.failovers) == (REPLICA, 1)
        versions = await backend.current_versions([SecretName("app/db")])
        assert versions == {"app/db": "00000000-0000-4000-8000-000000000000"}
        health = cache.backend_health()["aws"]
        assert (health.endpoint, health.on_primary, health.failovers) == (REPLICA, False, 1)
    finally:
        primary.resume()
    await until_serving(backend, PRIMARY)
    assert f":{PRIMARY}:" in await read(cache, "app/late")


async def test_a_refusing_primary_region_fails_over_at_once(
    regions: tuple[MotoServer, MotoServer], opened: list[Any]
) -> None:
    primary, replica = regions
    backend, cache = await open_rig(opened, (primary.url, replica.url))
    primary.stop()
    assert f":{REPLICA}:" in await read(cache, "app/db")
    assert backend.replicas.endpoint == REPLICA


async def test_throttling_and_4xx_never_fail_over_but_a_5xx_does(
    regions: tuple[MotoServer, MotoServer], opened: list[Any]
) -> None:
    primary, replica = regions
    throttled = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
    denied = b'{"__type": "AccessDeniedException", "message": "no"}'
    broken = b'{"__type": "InternalServiceError", "message": "oops"}'
    async with FaultProxy("127.0.0.1", primary.port) as proxy:
        backend, cache = await open_rig(opened, (proxy.url, replica.url))
        proxy.add(Fault.canned(400, throttled, content_type="application/x-amz-json-1.1"))
        with pytest.raises(BackendUnavailable, match="throttled"):
            await read(cache, "app/db")
        proxy.clear()
        proxy.add(Fault.canned(400, denied, content_type="application/x-amz-json-1.1"))
        with pytest.raises(BackendAuthError):
            await read(cache, "app/cold")
        assert (backend.replicas.endpoint, backend.replicas.failovers) == (PRIMARY, 0)
        proxy.clear()
        proxy.add(Fault.canned(500, broken, content_type="application/x-amz-json-1.1"))
        assert f":{REPLICA}:" in await read(cache, "app/late")
        assert (backend.replicas.endpoint, backend.replicas.failovers) == (REPLICA, 1)
