"""The Vault backend against a fake KV v2 server (tests/fakes/hostile_vault.py)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from secretd.backends.vault import VaultBackend, open_backend
from secretd.config.schema import VaultBackendConfig
from secretd.errors import BackendAuthError
from secretd.model import SecretName
from tests.fakes.hostile_vault import TOKEN, HostileVault
from tests.hostile_backends.cases import MAX_SECRET_BYTES, HostileBackendCases, HostileRig, Storm
from tests.servers.bao_server import write_private

OLD = "canary-vault-old-58aa"
GOOD = "canary-vault-good-0b9f"
STORM_WINDOW = 3.0
# Logins back off 1 s doubling: a 3 s window holds at most four attempts.
STORM_LIMIT = 6


class VaultRig:
    name = SecretName("app/db")
    good = orjson.dumps({"password": GOOD})
    canaries = (OLD, GOOD, TOKEN)
    timeout = 2.0

    def __init__(self, fake: HostileVault, backend: VaultBackend, config: VaultBackendConfig):
        self.fake = fake
        self.backend = backend
        self.config = config

    def supports(self, case: str) -> bool:
        return True

    async def misbehave(self, case: str) -> None:
        self.fake.misbehave(case)

    async def behave(self) -> None:
        self.fake.misbehave(None)

    async def storm(self) -> Storm:
        """Tokens that live a millisecond: a fresh backend must not loop on them."""
        self.fake.misbehave("storm")
        before = self.fake.hits["lookup"] + self.fake.hits["login"] + self.fake.hits["renew"]
        fresh = await open_backend("v2", self.config, max_secret_bytes=MAX_SECRET_BYTES)
        try:
            await asyncio.sleep(STORM_WINDOW)
            with pytest.raises(BackendAuthError) as caught:
                await fresh.fetch(self.name)
        finally:
            await fresh.aclose()
        after = self.fake.hits["lookup"] + self.fake.hits["login"] + self.fake.hits["renew"]
        return Storm(after - before, STORM_LIMIT, caught.value)


class TestVaultHostile(HostileBackendCases):
    @pytest.fixture
    async def rig(self) -> AsyncIterator[HostileRig]:
        with tempfile.TemporaryDirectory(prefix="hv-") as tmp:
            token = write_private(Path(tmp) / "token", TOKEN)
            async with HostileVault() as fake:
                fake.put(str(VaultRig.name), {"password": OLD})
                fake.put(str(VaultRig.name), {"password": GOOD})
                config = VaultBackendConfig.model_validate(
                    {
                        "type": "vault",
                        "address": fake.url,
                        "auth": {"method": "token", "token_file": str(token)},
                        "timeout": "2s",
                    }
                )
                backend = await open_backend("v", config, max_secret_bytes=MAX_SECRET_BYTES)
                try:
                    yield VaultRig(fake, backend, config)
                finally:
                    await backend.aclose()
