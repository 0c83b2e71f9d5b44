"""The real `secretd agent` with an AWS backend whose endpoint (tests/fakes/hostile_aws.py)
streams a 100 MiB SecretBinary: the agent's memory stays bounded (its peak RSS,
VmHWM in /proc), the read fails with a clear error, and other secrets are
still served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from secretd.backends.aws_http import read_capped
from tests.e2e.agent_proc import AgentProcess, running_agent, short_tmp
from tests.fakes.hostile_aws import HostileAws
from tests.servers.moto_server import TEST_ENV

# Generous: before the cap, the agent grew by over 500 MB reading this answer.
MAX_GROWTH_KB = 64 * 1024


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.fixture
async def aws() -> AsyncIterator[HostileAws]:
    async with HostileAws() as fake:
        fake.put("app/small", "small and fine")
        fake.put("app/big", "will be huge")
        yield fake


@pytest.fixture
async def agent(aws: HostileAws) -> AsyncIterator[AgentProcess]:
    with short_tmp("sdawsb") as directory:
        config = (
            f'[agent]\nsocket = "{directory}/s.sock"\nstate_dir = "{directory}/state"\n'
            'log_format = "json"\n\n'
            f'[backends.aws]\ntype = "aws"\nmount = ""\nregion = "us-east-1"\n'
            f'endpoint_url = "{aws.url}"\ntimeout = "20s"\n\n'
            '[[secret]]\nname = "app/small"\n\n[[allow]]\nsecrets = ["**"]\nuids = [0]\n'
        )
        async with running_agent(directory, config, env=TEST_ENV) as agent:
            yield agent


async def test_a_100_mib_answer_does_not_blow_up_the_agent(
    aws: HostileAws, agent: AgentProcess
) -> None:
    assert agent.proc is not None
    pid = agent.proc.pid
    async with agent.session() as session:
        async with session.get("/v1/secrets/app/small") as response:
            assert response.status == 200
        before = memory_kb(pid, "VmRSS")
        aws.misbehave("oversize", only="app/big")
        async with session.get("/v1/secrets/app/big") as response:
            status, body = response.status, await response.json()
        peak = memory_kb(pid, "VmHWM")
        async with session.get("/v1/secrets/app/small?refresh=true") as response:
            assert response.status == 200
            assert (await response.json())["value"] == "small and fine"
    assert status == 503, body
    message = body["error"]["message"]
    assert "app/big" in message and "max_secret_bytes" in message, message
    assert peak - before < MAX_GROWTH_KB, f"peak {peak} kB after {before} kB"


async def test_a_read_cancelled_mid_body_closes_its_connection() -> None:
    """The call's timeout cancels `read_capped` while the body drips: the
    connection is closed there and then, never left half-read for the pool."""
    started, done = asyncio.Event(), asyncio.Event()

    async def dripping(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"{")
        started.set()
        await done.wait()
        return response

    app = web.Application()
    app.router.add_post("/", dripping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            raw = await session.post(f"http://127.0.0.1:{port}/")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5):
                    await read_capped(raw, "GetSecretValue", 1 << 20, 65536)
            assert started.is_set() and raw.closed
    finally:
        done.set()
        await runner.cleanup()
