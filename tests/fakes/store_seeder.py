"""A `Seeder` (tests/contract) for the file store: writes versions with the
store's own API, as `secretd store put` would, with a generous size limit so
tests can plant values larger than the backend under test accepts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from secretd.model import SecretName
from secretd.store.store import FileStore
from tests.contract.contract import CapableSeeder

SEEDER_MAX_SECRET_BYTES = 1024 * 1024


class StoreSeeder(CapableSeeder):
    """Seeds a store directory whose recorded key file is readable by us."""

    def __init__(self, root: Path) -> None:
        self.store = FileStore(root, max_secret_bytes=SEEDER_MAX_SECRET_BYTES)

    def _put(self, name: str, value: bytes, pending: bool) -> str:
        keyring = self.store.keyring(None)
        try:
            stage = "pending" if pending else None
            return self.store.put(SecretName(name), value, keyring, stage=stage)
        finally:
            keyring.close()

    async def put(self, name: str, value: bytes, *, pending: bool = False) -> str:
        return await asyncio.to_thread(self._put, name, value, pending)

    def _promote(self, name: str, version_id: str) -> None:
        keyring = self.store.keyring(None)
        try:
            self.store.promote(SecretName(name), version_id, keyring)
        finally:
            keyring.close()

    async def promote(self, name: str, version_id: str) -> None:
        await asyncio.to_thread(self._promote, name, version_id)

    async def delete(self, name: str) -> None:
        # The store has no delete command: an operator removes the record file.
        await asyncio.to_thread(self.store.layout.record_path(name).unlink)


def init_store(root: Path) -> Path:
    """A fresh store at `root` with a new key next to it; returns the key path."""
    key_path = root.with_name(root.name + ".key")
    _store, key, _created = FileStore.init(root, key_path)
    key.wipe()
    return key_path
