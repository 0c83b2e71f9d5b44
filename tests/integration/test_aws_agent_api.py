"""A program written against the AWS Secrets Manager Agent, pointed at secretd:
real moto_server -> AwsBackend -> SecretCache -> the real API app on a Unix socket."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from secretd.backends.aws import open_backend
from secretd.backends.base import Backend
from secretd.backends.router import Router
from secretd.cache.observer import NullObserver
from secretd.cache.secret_cache import build_cache
from secretd.clock import SystemClock
from secretd.config import CacheSection
from secretd.config.schema import AwsBackendConfig
from secretd.events import Hub
from tests.fakes.api_deps import CountingMetrics, ListAudit, UidPolicy
from tests.fakes.cache_rig import close_cache
from tests.integration.api_harness import Listening, Parts, serve_parts
from tests.servers.moto_server import REGION, TEST_ENV, MotoServer, moto

pytestmark = pytest.mark.aws

__all__ = ["moto"]  # shared fixtures


@dataclass
class Agent(Listening):
    admin: Any

    async def get(self, target: str) -> tuple[int, bytes]:
        request = f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        status, _, body = await self.raw(request.encode(), timeout=15)
        return status, body


@pytest.fixture
async def agent(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Agent]:
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    moto.reset()
    config = AwsBackendConfig(type="aws", region=REGION, endpoint_url=moto.url)
    backend = await open_backend("aws", config, max_secret_bytes=65536)
    backends: dict[str, Backend] = {"aws": backend}
    router = Router(backends, {"aws": ""})
    hub = Hub()
    cache = build_cache(
        router=router,
        hub=hub,
        settings=CacheSection(),
        max_secret_bytes=65536,
        observer=NullObserver(),
        clock=SystemClock(),
        rng=random.Random(3),
    )
    parts = Parts(
        cache, hub, UidPolicy({0}), ListAudit(), CountingMetrics(), arn_names=router.name_for_arn
    )
    try:
        async with serve_parts(parts, socket_mode=0o600) as at:
            yield Agent(at.unix, at.port, at.tracker, moto.admin_client())
    finally:
        await close_cache(cache)


async def test_reads_answer_like_the_aws_agent(agent: Agent) -> None:
    made = agent.admin.create_secret(Name="db/app", SecretString='{"password":"pw"}')
    status, body = await agent.get("/secretsmanager/get?secretId=db/app")
    assert status == 200
    document = orjson.loads(body)
    assert document["ARN"] == made["ARN"]  # AWS's own ARN, not the local one
    assert (document["Name"], document["VersionId"]) == ("db/app", made["VersionId"])
    assert document["SecretString"] == '{"password":"pw"}'
    assert document["VersionStages"] == ["AWSCURRENT"]
    assert re.fullmatch(r"\d{10}\.\d{3}", document["CreatedDate"])
    status, body = await agent.get("/v1/secrets/db/app?field=password")
    assert (status, orjson.loads(body)["value"]) == (200, "pw")


async def test_binary_rotation_and_deletion(agent: Agent) -> None:
    old = agent.admin.create_secret(Name="tls/key", SecretBinary=b"\xffold")["VersionId"]
    assert (
        orjson.loads((await agent.get("/secretsmanager/get?secretId=tls/key"))[1])["SecretBinary"]
        == "/29sZA=="
    )
    token = "f" * 32
    agent.admin.put_secret_value(
        SecretId="tls/key",
        ClientRequestToken=token,
        SecretBinary=b"\xffnew",
        VersionStages=["AWSPENDING"],
    )
    status, body = await agent.get("/secretsmanager/get?secretId=tls/key&versionStage=AWSPENDING")
    assert (status, orjson.loads(body)["VersionId"]) == (200, token)
    agent.admin.update_secret_version_stage(
        SecretId="tls/key",
        VersionStage="AWSCURRENT",
        MoveToVersionId=token,
        RemoveFromVersionId=old,
    )
    status, body = await agent.get("/secretsmanager/get?secretId=tls/key&refreshNow=true")
    document = orjson.loads(body)
    assert (status, document["VersionId"]) == (200, token)
    assert document["VersionStages"] == ["AWSCURRENT", "AWSPENDING"]
    status, body = await agent.get("/secretsmanager/get?secretId=tls/key&versionStage=AWSPREVIOUS")
    assert orjson.loads(body)["VersionId"] == old
    agent.admin.delete_secret(SecretId="tls/key", RecoveryWindowInDays=7)
    status, body = await agent.get("/secretsmanager/get?secretId=tls/key&refreshNow=true")
    assert status == 400
    assert orjson.loads(body)["__type"] == "ResourceNotFoundException"


async def test_aws_arns_are_accepted_as_secret_id(agent: Agent) -> None:
    made = agent.admin.create_secret(Name="db/app", SecretString="v")
    status, body = await agent.get(f"/secretsmanager/get?secretId={made['ARN']}")
    assert (status, orjson.loads(body)["Name"]) == (200, "db/app")
    wrong = made["ARN"][:-6] + "ZZZZZZ"  # same name, another secret's suffix
    status, body = await agent.get(f"/secretsmanager/get?secretId={wrong}")
    assert (status, orjson.loads(body)["__type"]) == (400, "ResourceNotFoundException")


async def test_unknown_secret_is_not_found(agent: Agent) -> None:
    status, body = await agent.get("/secretsmanager/get?secretId=never/made")
    assert (status, orjson.loads(body)["__type"]) == (400, "ResourceNotFoundException")
