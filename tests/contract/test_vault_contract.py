"""The Vault backend runs the shared backend contract against a real `bao server -dev`.

A KV v2 secret is a map, and the backend serves that map as a JSON object. The
seeder therefore stores a contract value `v` as the map ``{"value": v}``, and
the few contract tests that compare raw bytes are restated here for that
shape (same property, KV-shaped value): the served value is exactly the JSON
object, and its `value` field is exactly the bytes put.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest

from secretd.backends.base import Backend
from secretd.backends.vault import open_backend
from secretd.errors import BackendError, BackendNotFound
from secretd.model import CURRENT, PREVIOUS, SecretName
from tests.contract.contract import BackendContract, Seeder
from tests.fakes.bao_server import BaoServer, bao_server, vault_config

__all__ = ["bao_server"]

pytestmark = pytest.mark.vault


def served(value: bytes) -> bytes:
    """What the Vault backend serves for a contract value stored by `KvSeeder`."""
    return orjson.dumps({"value": value.decode("utf-8")})


OVERHEAD = len(served(b""))


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


class TestVaultContract(BackendContract):
    @pytest.fixture
    async def backend(self, bao_server: BaoServer, tmp_path: Path) -> AsyncIterator[Backend]:
        config = vault_config(bao_server, tmp_path)
        opened = await open_backend("vault", config, max_secret_bytes=self.max_secret_bytes)
        yield opened
        await opened.aclose()

    @pytest.fixture
    def seeder(self, bao_server: BaoServer) -> Seeder:
        return KvSeeder(bao_server)

    # -- the byte-comparing tests, restated for a KV-shaped value --------------

    async def test_fetch_returns_the_value_put(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/db")
        version_id = await seeder.put(name, b"s3cret-one")
        fetched = await backend.fetch(name)
        assert fetched.name == name
        assert fetched.version.version_id == version_id
        assert fetched.version.value.reveal() == served(b"s3cret-one")
        assert fetched.version.value.field("value").reveal() == b"s3cret-one"
        assert CURRENT in fetched.version.stages
        assert fetched.version.created_at.tzinfo is not None

    async def test_text_with_any_unicode_round_trips(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        value = 'pässwörd ✓ "quoted" $HOME {{ x }}\n\ttab'.encode()
        name = SecretName(f"{unique}/unicode")
        await seeder.put(name, value)
        assert (await backend.fetch(name)).version.value.field("value").reveal() == value

    async def test_concurrent_fetches_agree(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/busy")
        version_id = await seeder.put(name, b"same for all")
        results = await asyncio.gather(*(backend.fetch(name) for _ in range(20)))
        assert {r.version.version_id for r in results} == {version_id}
        assert {r.version.value.reveal() for r in results} == {served(b"same for all")}

    async def test_a_new_put_becomes_current(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/rotating")
        await seeder.put(name, b"old")
        new_id = await seeder.put(name, b"new")
        fetched = await backend.fetch(name)
        assert fetched.version.version_id == new_id
        assert fetched.version.value.reveal() == served(b"new")

    async def test_old_version_stays_readable_by_id(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/history")
        old_id = await seeder.put(name, b"old")
        await seeder.put(name, b"new")
        fetched = await backend.fetch(name, version_id=old_id)
        assert fetched.version.version_id == old_id
        assert fetched.version.value.reveal() == served(b"old")
        assert CURRENT not in fetched.version.stages

    async def test_former_current_is_previous(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/prev")
        old_id = await seeder.put(name, b"old")
        await seeder.put(name, b"new")
        fetched = await backend.fetch(name, stage=PREVIOUS)
        assert fetched.version.version_id == old_id
        assert PREVIOUS in fetched.version.stages
        assert fetched.version.value.reveal() == served(b"old")

    async def test_value_at_the_size_limit_is_served(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/at-limit")
        await seeder.put(name, b"x" * (self.max_secret_bytes - OVERHEAD))
        assert len((await backend.fetch(name)).version.value) == self.max_secret_bytes

    async def test_value_over_the_size_limit_is_refused(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/over-limit")
        await seeder.put(name, b"x" * (self.max_secret_bytes - OVERHEAD + 1))
        with pytest.raises(BackendError) as caught:
            await backend.fetch(name)
        assert not isinstance(caught.value, BackendNotFound)
        assert "xxxxxxxx" not in str(caught.value)
