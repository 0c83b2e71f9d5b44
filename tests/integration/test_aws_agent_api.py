"""A program written against the AWS Secrets Manager Agent, pointed at secretd:
real moto_server -> AwsBackend -> SecretCache -> the real API app on a Unix socket."""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import socket
import struct
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from secretd.api.app import build_app
from secretd.api.listener import ConnectionTracker, UnixListener, start_serving
from secretd.api.ports import ApiDeps, ServingState
from secretd.backends.aws import open_backend
from secretd.backends.base import Backend
from secretd.backends.router import Router
from secretd.cache.observer import NullObserver
from secretd.cache.secret_cache import build_cache
from secretd.clock import SystemClock
from secretd.config import CacheSection
from secretd.config.schema import AwsBackendConfig
from secretd.events import Hub
from secretd.model import Caller, SecretName
from tests.fakes.api_deps import CountingLimiter, CountingMetrics, ListAudit
from tests.fakes.cache_rig import close_cache
from tests.servers.moto_server import REGION, TEST_ENV, MotoServer, moto

pytestmark = pytest.mark.aws

__all__ = ["moto"]  # shared fixtures


class RootOnly:
    def allows(self, caller: Caller, name: SecretName) -> bool:
        return caller.uid == 0

    def readable_filter(self, caller: Caller) -> Callable[[SecretName], bool]:
        return lambda name: self.allows(caller, name)


def _peer(sock: Any) -> Caller:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return Caller(uid=uid, gid=gid, pid=pid)


@dataclass
class Agent:
    path: Path
    admin: Any

    async def get(self, target: str) -> tuple[int, bytes]:
        async with asyncio.timeout(15):
            reader, writer = await asyncio.open_unix_connection(str(self.path))
            writer.write(
                f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
            )
            data = await reader.read(-1)
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body


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
    metrics = CountingMetrics()
    tracker = ConnectionTracker(identify=_peer, observer=metrics, max_connections=64)
    deps = ApiDeps.fixed(
        cache=cache,
        hub=hub,
        policy=RootOnly(),
        audit=ListAudit(),
        metrics=metrics,
        limiter=CountingLimiter(),
        identify=lambda request: tracker.caller(request.protocol),
        state=ServingState(ready=True),
        arn_names=router.name_for_arn,
    )
    tmp = Path(tempfile.mkdtemp(prefix="sdagt", dir="/tmp"))
    listener = UnixListener.create(tmp / "s.sock", mode=0o600, group=None)
    runner = await start_serving(build_app(deps), [listener.sock], tracker=tracker, idle_timeout=5)
    try:
        yield Agent(tmp / "s.sock", moto.admin_client())
    finally:
        await runner.cleanup()
        listener.close()
        await close_cache(cache)
        shutil.rmtree(tmp, ignore_errors=True)


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
