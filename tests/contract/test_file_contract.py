"""The file backend runs the shared backend contract against a real store directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from secretd.config import BackendConfig, FileBackendConfig
from tests.contract.contract import BackendContract, Seeder
from tests.fakes.store_seeder import StoreSeeder, init_store


class TestFileContract(BackendContract):
    @pytest.fixture
    def store_dir(self, tmp_path: Path) -> Path:
        root = tmp_path / "store"
        init_store(root)
        return root

    @pytest.fixture
    def backend_config(self, store_dir: Path) -> BackendConfig:
        return FileBackendConfig(type="file", path=store_dir)

    @pytest.fixture
    def seeder(self, store_dir: Path) -> Seeder:
        return StoreSeeder(store_dir)
