"""The token keeper against a fake Vault (tests/fakes/hostile_vault.py) whose
tokens live a millisecond: a token shorter-lived than the floor is an error with
backoff, never a login or renewal loop. Bounds are request counts over a fixed
window, not speeds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from secretd.backends.vault import VaultBackend, open_backend
from secretd.backends.vault_token import MIN_TOKEN_TTL
from secretd.config.schema import VaultBackendConfig
from secretd.errors import BackendAuthError
from secretd.model import SecretName
from tests.fakes.hostile_vault import TOKEN, HostileVault
from tests.servers.bao_server import write_private

WINDOW = 3.0
# Logins back off 1 s doubling (each at least half its ceiling): in a 3 s window
# that is at most 4 attempts; a loop made hundreds a second.
MAX_AUTH_REQUESTS = 6


@pytest.fixture
async def vault() -> AsyncIterator[HostileVault]:
    async with HostileVault() as fake:
        fake.put("app/db", {"password": "pw"})
        yield fake


def config(fake: HostileVault, tmp_path: Path, **auth: Any) -> VaultBackendConfig:
    if not auth:
        auth = {"method": "token", "token_file": str(write_private(tmp_path / "t", TOKEN))}
    raw = {"type": "vault", "address": fake.url, "auth": auth, "timeout": "2s"}
    return VaultBackendConfig.model_validate(raw)


async def opened(fake: HostileVault, tmp_path: Path, **auth: Any) -> VaultBackend:
    return await open_backend("v", config(fake, tmp_path, **auth), max_secret_bytes=4096)


async def test_a_millisecond_token_is_an_error_not_a_login_loop(
    vault: HostileVault, tmp_path: Path
) -> None:
    vault.token_ttl = 0.001
    backend = await opened(vault, tmp_path)
    try:
        await asyncio.sleep(WINDOW)
        with pytest.raises(BackendAuthError, match="floor") as caught:
            await backend.fetch(SecretName("app/db"))
        assert TOKEN not in str(caught.value)
    finally:
        await backend.aclose()
    assert 1 <= vault.hits["lookup"] <= MAX_AUTH_REQUESTS, vault.hits
    assert vault.hits["data"] == vault.hits["metadata"] == 0  # never read with it


async def test_millisecond_renewals_are_refused_not_repeated(
    vault: HostileVault, tmp_path: Path
) -> None:
    vault.token_ttl = MIN_TOKEN_TTL * 1.2  # renewed at 2/3 of it: inside the window
    vault.renew_ttl = 0.001
    role = write_private(tmp_path / "role", "role-id")
    secret = write_private(tmp_path / "secret", "secret-id")
    backend = await opened(
        vault, tmp_path, method="approle", role_id_file=str(role), secret_id_file=str(secret)
    )
    try:
        await asyncio.sleep(MIN_TOKEN_TTL)
        fetched = await backend.fetch(SecretName("app/db"))  # the login's token still works
        assert fetched.version.version_id == "1"
    finally:
        await backend.aclose()
    assert vault.hits["renew"] <= 2, vault.hits
    assert vault.hits["login"] <= 3, vault.hits


async def test_the_agent_reports_a_short_lived_token_in_health(
    vault: HostileVault, tmp_path: Path
) -> None:
    from tests.e2e.agent_proc import running_agent

    vault.token_ttl = 0.001
    token = write_private(tmp_path / "t", TOKEN)
    config = (
        f'[agent]\nsocket = "{tmp_path}/s.sock"\nstate_dir = "{tmp_path}/state"\n'
        'log_format = "json"\n\n'
        f'[backends.v]\ntype = "vault"\nmount = ""\naddress = "{vault.url}"\n'
        f'auth = {{ method = "token", token_file = "{token}" }}\ntimeout = "2s"\n\n'
        '[[secret]]\nname = "app/db"\n\n[[allow]]\nsecrets = ["**"]\nuids = [0]\n'
    )
    async with running_agent(tmp_path, config) as agent:
        await asyncio.sleep(WINDOW)
        async with agent.session() as session, session.get("/v1/health") as response:
            health = await response.json()
    error = health["backends"]["v"]["last_error"]
    assert health["backends"]["v"]["ok"] is False
    assert "floor" in error and TOKEN not in error, error
    assert vault.hits["lookup"] <= MAX_AUTH_REQUESTS + 2, vault.hits  # + the agent's start-up
