"""The Vault backend runs the shared backend contract against a real `bao server -dev`.

A KV v2 secret is a map, and the backend serves that map as a JSON object. The
seeder therefore stores a contract value `v` as the map ``{"value": v}`` and
tells the contract (`served`) that the backend answers with exactly that JSON
object; one extra test checks its `value` field is exactly the bytes put.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from secretd.backends.base import Backend
from secretd.config import BackendConfig
from secretd.model import SecretName
from tests.contract.contract import BackendContract, Seeder
from tests.servers.bao_server import BaoServer, bao_server, vault_config

__all__ = ["bao_server"]

pytestmark = pytest.mark.vault


def served(value: bytes) -> bytes:
    """What the Vault backend serves for a contract value stored by `KvSeeder`."""
    return orjson.dumps({"value": value.decode("utf-8")})


class KvSeeder:
    """Writes KV v2 versions over the server's HTTP API, as an operator's tool would."""

    supports_pending = False  # a KV write is always the new current version
    supports_promote = False
    supports_previous = True
    supports_binary = False  # KV maps hold JSON text
    supports_delete = True

    def __init__(self, server: BaoServer) -> None:
        self._server = server

    async def put(self, name: str, value: bytes, *, pending: bool = False) -> str:
        assert not pending
        data = {"value": value.decode("utf-8")}
        version = await asyncio.to_thread(self._server.kv_put, quote(name, safe="/"), data)
        return str(version)

    async def promote(self, name: str, version_id: str) -> None:
        raise NotImplementedError("KV v2 has no promote")

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._server.kv_delete_all, quote(name, safe="/"))

    def served(self, value: bytes) -> bytes:
        return served(value)


class TestVaultContract(BackendContract):
    @pytest.fixture
    def backend_config(self, bao_server: BaoServer, tmp_path: Path) -> BackendConfig:
        return vault_config(bao_server, tmp_path)

    @pytest.fixture
    def seeder(self, bao_server: BaoServer) -> Seeder:
        return KvSeeder(bao_server)

    async def test_the_kv_map_is_the_value_and_its_keys_are_fields(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/db")
        await seeder.put(name, b"s3cret-one")
        fetched = await backend.fetch(name)
        assert fetched.version.value.field("value").reveal() == b"s3cret-one"
