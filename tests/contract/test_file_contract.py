"""The file backend runs the shared backend contract against a real store directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from secretd.backends.base import Backend
from secretd.backends.file import open_backend
from secretd.config import FileBackendConfig
from tests.contract.contract import BackendContract, Seeder
from tests.fakes.store_seeder import StoreSeeder, init_store


class TestFileContract(BackendContract):
    @pytest.fixture
    def store_dir(self, tmp_path: Path) -> Path:
        root = tmp_path / "store"
        init_store(root)
        return root

    @pytest.fixture
    async def backend(self, store_dir: Path) -> AsyncIterator[Backend]:
        config = FileBackendConfig(type="file", path=store_dir)
        opened = await open_backend("local", config, max_secret_bytes=self.max_secret_bytes)
        yield opened
        await opened.aclose()

    @pytest.fixture
    def seeder(self, store_dir: Path) -> Seeder:
        return StoreSeeder(store_dir)
