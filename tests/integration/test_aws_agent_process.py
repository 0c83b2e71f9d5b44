"""The real `secretd agent` process with an AWS backend (a real moto_server) and
the loopback TCP listener: what a program written for the AWS Secrets Manager
Agent sees when only the port changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.agent_proc import AgentProcess, running_agent, short_tmp
from tests.servers.moto_server import REGION, TEST_ENV, MotoServer, free_port, moto

pytestmark = pytest.mark.aws

__all__ = ["moto"]  # shared fixtures

TOKEN = b"process-token-0123456789abcdef"


@dataclass
class Running:
    agent: AgentProcess
    port: int
    admin: Any

    async def tcp(
        self, target: str, headers: bytes = b"", *, token: bool = True
    ) -> tuple[int, bytes]:
        head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n".encode() + headers
        if token:
            head += b"X-Aws-Parameters-Secrets-Token: " + TOKEN + b"\r\n"
        async with asyncio.timeout(15):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(head + b"Connection: close\r\n\r\n")
            data = await reader.read(-1)
            writer.close()
        status, _, body = data.partition(b"\r\n\r\n")
        return int(status.split(b" ", 2)[1]), body


def config_text(directory: Path, moto: MotoServer, port: int) -> str:
    token = directory / "token"
    token.write_bytes(TOKEN + b"\n")
    token.chmod(0o600)
    return (
        f'[agent]\nsocket = "{directory}/s.sock"\nstate_dir = "{directory}/state"\n'
        f'log_format = "json"\n\n'
        f'[tcp]\nlisten = "127.0.0.1:{port}"\ntoken_file = "{token}"\n\n'
        f'[backends.aws]\ntype = "aws"\nmount = ""\nregion = "{REGION}"\n'
        f'endpoint_url = "{moto.url}"\n\n'
        '[[secret]]\nname = "db/app"\n\n'
        '[[allow]]\nsecrets = ["db/*"]\ntcp = true\n\n'
        '[[allow]]\nsecrets = ["**"]\nuids = [0]\n'
    )


@pytest.fixture
async def running(moto: MotoServer) -> AsyncIterator[Running]:
    moto.reset()
    admin = moto.admin_client()
    admin.create_secret(Name="db/app", SecretString='{"password":"first"}')
    admin.create_secret(Name="ops/root", SecretString="not over tcp")
    port = free_port()
    with short_tmp("sdawsp") as directory:
        config = config_text(directory, moto, port)
        async with running_agent(directory, config, env=TEST_ENV) as agent:
            yield Running(agent, port, admin)
            agent.stop()  # SIGTERM: it must stop cleanly within STOP_WITHIN


async def test_the_aws_agent_api_over_tcp(running: Running) -> None:
    status, body = await running.tcp("/secretsmanager/get?secretId=db/app")
    assert status == 200, running.agent.log()
    document = orjson.loads(body)
    assert list(document)[:3] == ["ARN", "Name", "VersionId"]
    assert (document["Name"], document["SecretString"]) == ("db/app", '{"password":"first"}')
    assert document["VersionStages"] == ["AWSCURRENT"]
    status, body = await running.tcp("/ping", token=False)
    assert (status, body) == (200, b"healthy")


async def test_tcp_guards_in_the_running_agent(running: Running) -> None:
    target = "/secretsmanager/get?secretId=db/app"
    assert await running.tcp(target, token=False) == (403, b"Bad Token")  # the AWS agent's
    assert await running.tcp(target, b"X-Forwarded-For: 10.0.0.1\r\n") == (400, b"Forwarded")
    assert (await running.tcp(target, b"Origin: http://evil.example\r\n"))[0] == 403
    status, body = await running.tcp("/secretsmanager/get?secretId=ops/root")
    assert (status, orjson.loads(body)["__type"]) == (400, "AccessDeniedException")


async def test_rotation_reaches_the_running_agent(running: Running) -> None:
    old = (await running.tcp("/secretsmanager/get?secretId=db/app"))[1]
    old_id = orjson.loads(old)["VersionId"]
    new_id = "0123456789abcdef0123456789abcdef"
    running.admin.put_secret_value(
        SecretId="db/app",
        ClientRequestToken=new_id,
        SecretString='{"password":"second"}',
        VersionStages=["AWSPENDING"],
    )
    running.admin.update_secret_version_stage(
        SecretId="db/app",
        VersionStage="AWSCURRENT",
        MoveToVersionId=new_id,
        RemoveFromVersionId=old_id,
    )
    status, body = await running.tcp("/secretsmanager/get?secretId=db/app&refreshNow=true")
    assert (status, orjson.loads(body)["VersionId"]) == (200, new_id)
    status, body = await running.tcp("/secretsmanager/get?secretId=db/app&versionStage=AWSPREVIOUS")
    assert (status, orjson.loads(body)["VersionId"]) == (200, old_id)
