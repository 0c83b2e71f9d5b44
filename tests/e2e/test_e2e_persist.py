"""The persisted cache through the real agent and a real `bao server -dev`: an agent
restarted while Vault hangs (SIGSTOP) is ready without waiting for it and serves the
persisted value, stale; once Vault answers again the value is confirmed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.agent_proc import Store, config_text, running_agent, secretd
from tests.e2e.conftest import ALLOW_ROOT, StartAgent
from tests.e2e.test_e2e_reload import rewrite, sighup, wait_log
from tests.servers.bao_server import BaoServer, write_private

ALLOW_VAULT = ALLOW_ROOT + '[[allow]]\nsecrets = ["vault/**"]\nuids = [0]\n\n'


def vault_section(server: BaoServer, workdir: Path) -> str:
    token = write_private(workdir / "vault.token", server.token)
    # A timeout longer than READY_WITHIN: had the start waited for the hung server,
    # the agent could not be ready in time.
    return (
        f'[backends.vault]\ntype = "vault"\nmount = "vault/"\n'
        f'address = "{server.address}"\ntimeout = "30s"\n'
        f'auth = {{ method = "token", token_file = "{token}" }}\n\n'
    )


async def secret(http: aiohttp.ClientSession, name: str) -> tuple[int, dict[str, Any]]:
    resp = await http.get(f"/v1/secrets/{name}")
    return resp.status, await resp.json()


@pytest.fixture
async def vault(workdir: Path) -> AsyncIterator[BaoServer]:
    """A `bao server -dev` in workdir/bao, stopped after the test."""
    server = await asyncio.to_thread(BaoServer.start, workdir / "bao")
    try:
        yield server
    finally:
        server.stop()


async def test_restart_while_vault_hangs_serves_the_persisted_value_stale(
    workdir: Path, store: Store, vault: BaoServer
) -> None:
    await asyncio.to_thread(vault.kv_put, "app/db", {"password": "persisted-pw-77"})
    config = persisted_config(workdir, store, vault)
    async with running_agent(workdir, config) as agent:
        async with agent.session() as http:
            status, body = await secret(http, "vault/app/db")
            assert (status, body["stale"]) == (200, False)
        agent.stop()
    files = list((workdir / "persist").glob("*.cache"))
    assert len(files) == 1
    assert b"persisted-pw-77" not in files[0].read_bytes()

    # A restored entry confirmed within refresh_interval is served as if no
    # restart happened (not stale) until its check fails; past the interval it
    # is stale at once. Let the interval pass (bounded: 2 s after the last check).
    confirmed = json.loads(files[0].read_bytes())["confirmed_at"]
    await asyncio.sleep(max(confirmed + 2.2 - time.time(), 0.0))
    vault.pause()  # SIGSTOP: connections are accepted, nothing is answered
    async with running_agent(workdir, config) as agent, agent.session() as http:
        status, body = await secret(http, "vault/app/db")
        assert status == 200
        assert body["value"] == '{"password":"persisted-pw-77"}'
        assert body["stale"] is True
        health = await (await http.get("/v1/health")).json()
        assert health["status"] == "degraded"

        vault.resume()
        async with asyncio.timeout(45):  # the hung check ends when Vault answers
            while (await secret(http, "vault/app/db"))[1]["stale"]:
                await asyncio.sleep(0.1)
    assert "persisted-pw-77" not in agent.log()


@pytest.mark.parametrize("damage", ["tamper", "rollback"])
async def test_a_damaged_persisted_entry_is_refused_not_served(
    workdir: Path, store: Store, vault: BaoServer, damage: str
) -> None:
    """A tampered entry, or an older authentic one put back, is refused at start,
    reported in health and the log, and never served - even with Vault gone."""
    await asyncio.to_thread(vault.kv_put, "app/db", {"password": "first-pw-11"})
    config = persisted_config(workdir, store, vault)
    async with running_agent(workdir, config) as agent:
        path = await persisted_file(workdir)
        old = path.read_bytes()
        await asyncio.to_thread(vault.kv_put, "app/db", {"password": "second-pw-22"})
        async with agent.session() as http, asyncio.timeout(20):
            while (await secret(http, "vault/app/db"))[1]["version_id"] != "2":
                await asyncio.sleep(0.1)
        agent.stop()
    if damage == "tamper":
        data = bytearray(path.read_bytes())
        data[data.index(b'"nonce":"') + 12] ^= 0x04
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(old)
    vault.stop()  # refused connections: nothing else could serve it
    async with running_agent(workdir, config) as agent, agent.session() as http:
        health = await (await http.get("/v1/health")).json()
        assert health["cache"]["persist_refused"] == 1
        assert health["status"] == "degraded"
        status, body = await secret(http, "vault/app/db")
        assert status == 503, body
    assert "cache.persisted_refused" in agent.log()
    assert "first-pw-11" not in agent.log() and "second-pw-22" not in agent.log()


def persisted_config(workdir: Path, store: Store, server: BaoServer) -> str:
    """A config persisting the cache (a new key) with `server` as the Vault backend."""
    key = workdir / "persist.key"
    secretd("cache", "init-key", str(key))
    cache = (
        f'refresh_interval = "2s"\nmax_stale = "1h"\n'
        f'persist_dir = "{workdir}/persist"\npersist_key_file = "{key}"\n'
    )
    return config_text(
        workdir, store, allow=ALLOW_VAULT, cache=cache, declared=("vault/app/db",)
    ) + vault_section(server, workdir)


async def persisted_file(workdir: Path) -> Path:
    """The one entry file, once the agent has written it (bounded wait)."""
    async with asyncio.timeout(10):
        while True:
            found = list((workdir / "persist").glob("*.cache"))
            if found:
                return found[0]
            await asyncio.sleep(0.05)


async def test_a_reload_cannot_move_the_persisted_cache(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    """persist_dir and persist_key_file need a restart: a reload changing them is
    rejected and the old config keeps running (and writing where it did)."""
    store.put("app/k", b"reload-value-5")
    key = workdir / "persist.key"
    secretd("cache", "init-key", str(key))
    cache = f'persist_dir = "{workdir}/persist"\npersist_key_file = "{key}"\n'
    agent = await start_agent(cache=cache, declared=("app/k",))
    await persisted_file(workdir)
    rewrite(
        agent,
        config_text(
            workdir,
            store,
            allow=ALLOW_ROOT,
            declared=("app/k",),
            cache=cache.replace("/persist", "/elsewhere"),
        ),
    )
    sighup(agent)
    await wait_log(agent, "config.reload_rejected")
    assert "cache.persist_dir" in agent.log() and "restart the agent" in agent.log()
    assert not (workdir / "elsewhere").exists()
    async with agent.session() as http:
        assert (await secret(http, "app/k"))[1]["value"] == "reload-value-5"
