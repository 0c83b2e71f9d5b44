"""The `secretd agent` executable with a Vault backend on a real `bao server -dev`:
a rotation reaches the API and a rendered file; an outage (the server
SIGSTOPped) is served stale, then recovers when the server resumes."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agent_proc import BIN, AgentProcess, running_agent, short_tmp
from tests.servers.bao_server import BaoServer, write_private

pytestmark = pytest.mark.vault

WAIT = 15.0


@pytest.fixture
def workdir() -> Iterator[Path]:
    with short_tmp("sdv") as path:
        yield path


@pytest.fixture
def server(workdir: Path) -> Iterator[BaoServer]:
    bao = BaoServer.start(workdir / "bao")  # our own: this test stops it
    try:
        yield bao
    finally:
        bao.stop()


def agent_config(workdir: Path, server: BaoServer) -> str:
    token = write_private(workdir / "vault.token", server.token)
    return f"""
[agent]
socket = "{workdir}/s.sock"
state_dir = "{workdir}/state"
socket_mode = "0600"
log_format = "json"

[cache]
refresh_interval = "300ms"
max_stale = "5m"

[backends.vault]
type = "vault"
mount = "vault/"
address = "{server.address}"
timeout = "1s"
auth = {{ method = "token", token_file = "{token}" }}

[[secret]]
name = "vault/app/db"

[[allow]]
secrets = ["vault/**"]
uids = [0]

[[template]]
contents = "password={{{{ secret('vault/app/db', field='password') }}}}\\n"
destination = "{workdir}/app.conf"
wait = {{ min = "10ms", max = "50ms" }}
"""


@pytest.fixture
async def agent(workdir: Path, server: BaoServer) -> AsyncIterator[AgentProcess]:
    server.kv_put("app/db", {"password": "first"})
    async with running_agent(workdir, agent_config(workdir, server)) as process:
        yield process


async def get_secret(agent: AgentProcess) -> dict[str, Any]:
    async with agent.session() as session, session.get("/v1/secrets/vault/app/db") as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT}s: {what}")
        await asyncio.sleep(0.1)


async def test_rotation_reaches_the_api_and_the_rendered_file(
    agent: AgentProcess, server: BaoServer, workdir: Path
) -> None:
    first = await get_secret(agent)
    assert first["version_id"] == "1" and not first["stale"]
    assert json.loads(first["value"]) == {"password": "first"}
    rendered = workdir / "app.conf"
    assert rendered.read_text() == "password=first\n"

    server.kv_put("app/db", {"password": "second"})

    async def api_rotated() -> bool:
        return (await get_secret(agent))["version_id"] == "2"

    async def file_rotated() -> bool:
        return rendered.read_text() == "password=second\n"

    await until(api_rotated, "the API serves version 2")
    await until(file_rotated, "the file is re-rendered")


async def test_an_outage_is_served_stale_then_recovers(
    agent: AgentProcess, server: BaoServer
) -> None:
    assert not (await get_secret(agent))["stale"]
    server.pause()
    try:

        async def stale() -> bool:
            return bool((await get_secret(agent))["stale"])

        await until(stale, "the cached value is marked stale")
        during = await get_secret(agent)
        assert json.loads(during["value"]) == {"password": "first"}
        async with agent.session() as session, session.get("/v1/health") as resp:
            health = await resp.json()
        assert resp.status == 200 and health["status"] == "degraded"
        assert not health["backends"]["vault"]["ok"]
    finally:
        server.resume()

    async def fresh() -> bool:
        return not (await get_secret(agent))["stale"]

    await until(fresh, "the value is fresh again after the server resumed")
    server.kv_put("app/db", {"password": "after"})

    async def rotated() -> bool:
        return json.loads((await get_secret(agent))["value"]) == {"password": "after"}

    await until(rotated, "a rotation after the outage is picked up")


async def test_a_reload_during_an_outage_keeps_serving_every_cached_value(
    agent: AgentProcess, server: BaoServer, workdir: Path
) -> None:
    """SIGHUP while the server is paused (routine log rotation, or a credential
    added): not one read fails, and the value served stays the cached one."""
    assert json.loads((await get_secret(agent))["value"]) == {"password": "first"}
    server.pause()
    failures: list[int] = []
    served: set[str] = set()
    stop = asyncio.Event()

    async def keep_reading() -> int:
        reads = 0
        async with agent.session() as session:
            while not stop.is_set() and reads < 5000:
                async with session.get("/v1/secrets/vault/app/db") as resp:
                    body = await resp.json()
                    if resp.status != 200:
                        failures.append(resp.status)
                    else:
                        served.add(body["value"])
                reads += 1
                await asyncio.sleep(0.01)
        return reads

    reader = asyncio.create_task(keep_reading())
    try:
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGHUP)  # the same config
        await until(lambda: logged(agent, "config.reloaded", 1), "the first reload")
        credential = '\n[[credential]]\nunit = "app.service"\nid = "db"\nsecret = "vault/app/db"\n'
        with (workdir / "secretd.toml").open("a") as config:
            config.write(credential)
        agent.proc.send_signal(signal.SIGHUP)
        await until(lambda: logged(agent, "config.reloaded", 2), "the second reload")
        await asyncio.sleep(0.5)  # reads keep coming after the swap
    finally:
        stop.set()
        reads = await reader
        server.resume()
    assert reads > 20 and failures == []
    assert served == {json.dumps({"password": "first"}, separators=(",", ":"))}
    status = subprocess.run(
        [str(BIN), "status", "--json", "--socket", str(agent.socket)],
        capture_output=True,
        timeout=30,
        check=True,
    )
    cached = {s["name"] for s in json.loads(status.stdout)["secrets"]}
    assert "vault/app/db" in cached


async def logged(agent: AgentProcess, event: str, count: int) -> bool:
    return agent.log().count(event) >= count
