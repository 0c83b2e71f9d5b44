"""`bao kv get` through secretd's Vault-compatible API for secrets that live in a
real `bao server -dev` and in a real moto_server (AWS Secrets Manager), behind
the cache: values, version numbers, `-version=N`, and a second uid refused."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from secretd.api.vault_shapes import created_millis
from tests.e2e.agent_proc import AgentProcess, running_agent, short_tmp
from tests.e2e.vault_api_clients import bao_kv
from tests.servers.bao_server import BaoServer, bao_server, write_private
from tests.servers.moto_server import REGION, TEST_ENV, MotoServer, admin, moto
from tests.servers.second_user import ensure_test_user, needs_root

pytestmark = [pytest.mark.vault, pytest.mark.aws, pytest.mark.timeout(120)]

__all__ = ["admin", "bao_server", "moto"]  # shared fixtures


@dataclass
class Running:
    agent: AgentProcess
    home: Path

    async def kv(self, *args: str, **extra: Any) -> tuple[int, str, str]:
        done = await asyncio.to_thread(
            bao_kv, *args, address=f"unix://{self.agent.socket}", home=self.home, **extra
        )
        return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_tmp("sdvb") as path:
        path.chmod(0o755)  # the second uid reaches the socket
        yield path


def config_text(workdir: Path, server: BaoServer, moto: MotoServer) -> str:
    token = write_private(workdir / "vault.token", server.token)
    return (
        f'[agent]\nsocket = "{workdir}/s.sock"\nstate_dir = "{workdir}/state"\n'
        'socket_mode = "0666"\n'
        f'audit_log = "{workdir}/audit.jsonl"\nlog_format = "json"\n\n'
        "[vault_api]\n\n"
        f'[backends.vault]\ntype = "vault"\nmount = "vault/"\naddress = "{server.address}"\n'
        f'auth = {{ method = "token", token_file = "{token}" }}\n\n'
        f'[backends.aws]\ntype = "aws"\nmount = "aws/"\nregion = "{REGION}"\n'
        f'endpoint_url = "{moto.url}"\n\n'
        '[[allow]]\nsecrets = ["vault/**", "aws/**"]\nuids = [0]\n'
    )


@pytest.fixture
async def running(
    workdir: Path, bao_server: BaoServer, moto: MotoServer, admin: Any
) -> AsyncIterator[Running]:
    del admin  # a freshly reset moto
    config = config_text(workdir, bao_server, moto)
    async with running_agent(workdir, config, env=TEST_ENV) as agent:
        home = workdir / "home"
        home.mkdir(mode=0o777)
        yield Running(agent, home)


async def test_a_vault_backed_secret_keeps_vaults_version_numbers(
    running: Running, bao_server: BaoServer
) -> None:
    path = f"vapi/{time.monotonic_ns()}"
    bao_server.kv_put(path, {"password": "v-one"})
    assert bao_server.kv_put(path, {"password": "v-two"}) == 2

    code, out, err = await running.kv("get", "-format=json", f"secret/vault/{path}")
    assert code == 0, err + running.agent.log()
    data = json.loads(out)["data"]
    assert data["data"] == {"password": "v-two"}
    assert data["metadata"]["version"] == 2
    assert data["metadata"]["custom_metadata"] == {"version_id": "2", "stages": "current"}

    code, out, err = await running.kv(
        "get", "-version=1", "-field=password", f"secret/vault/{path}"
    )
    assert (code, out) == (0, "v-one"), err
    code, out, err = await running.kv("metadata", "get", "-format=json", f"secret/vault/{path}")
    metadata = json.loads(out)["data"]
    assert metadata["current_version"] == 2 and sorted(metadata["versions"]) == ["1", "2"]


async def test_an_aws_backed_secret_is_numbered_by_creation_time(
    running: Running, admin: Any
) -> None:
    admin.create_secret(Name="app/db", SecretString='{"password":"a-one"}')
    second = int(time.time())
    while int(time.time()) == second:  # moto's CreatedDate has whole seconds
        await asyncio.sleep(0.02)
    admin.put_secret_value(SecretId="app/db", SecretString='{"password":"a-two"}')
    # (moto's ListSecretVersionIds reports "now" as every CreatedDate; GetSecretValue does not)
    created = {
        stage: admin.get_secret_value(SecretId="app/db", VersionStage=stage)["CreatedDate"]
        for stage in ("AWSCURRENT", "AWSPREVIOUS")
    }

    code, out, err = await running.kv("get", "-format=json", "secret/aws/app/db")
    assert code == 0, err + running.agent.log()
    data = json.loads(out)["data"]
    assert data["data"] == {"password": "a-two"}
    assert data["metadata"]["version"] == created_millis(created["AWSCURRENT"])

    previous = created_millis(created["AWSPREVIOUS"])
    assert previous < data["metadata"]["version"]
    code, out, err = await running.kv(
        "get", f"-version={previous}", "-field=password", "secret/aws/app/db"
    )
    assert (code, out) == (0, "a-one"), err


@needs_root
async def test_a_second_uid_is_refused_for_every_backend(
    running: Running, bao_server: BaoServer, admin: Any
) -> None:
    user = ensure_test_user()
    path = f"vapi/{time.monotonic_ns()}"
    bao_server.kv_put(path, {"password": "vault-canary-pw"})
    admin.create_secret(Name="app/x", SecretString='{"password":"aws-canary-pw"}')
    for name in (f"vault/{path}", "aws/app/x"):
        assert (await running.kv("get", "-field=password", f"secret/{name}"))[0] == 0  # cached
        code, out, err = await running.kv("get", "-field=password", f"secret/{name}", user=user)
        assert code == 2 and "Code: 403" in err and "* permission denied" in err
        assert "canary-pw" not in out + err
    audit = (running.agent.directory / "audit.jsonl").read_text()
    assert audit.count('"event":"deny"') == 2 and "canary-pw" not in audit
