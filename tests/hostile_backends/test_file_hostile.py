"""The file backend against hostile files in its store directory: the record of a
secret replaced by a huge sparse file, a FIFO, garbage, another secret's record,
an older record put back, a symlink; and a storm of rewrites."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from secretd.backends.file import FileBackend, open_backend
from secretd.config import FileBackendConfig
from secretd.model import SecretName
from tests.fakes.store_seeder import StoreSeeder, init_store
from tests.hostile_backends.cases import MAX_SECRET_BYTES, HostileBackendCases, HostileRig, Storm

OLD = "canary-file-old-7a10"
GOOD = "canary-file-good-e2c4"
OTHER = "canary-file-other-55d1"
REWRITES = 300
HUGE = 1024**3  # sparse: costs no disk, and must cost no memory


class FileRig:
    name = SecretName("app/db")
    good = GOOD.encode()
    canaries = (OLD, GOOD, OTHER)
    timeout = 2.0

    def __init__(self, backend: FileBackend, seeder: StoreSeeder, old_record: bytes) -> None:
        self.backend = backend
        self.seeder = seeder
        self.path = seeder.store.layout.record_path(self.name)
        self.other = seeder.store.layout.record_path("app/other")
        self.record = self.path.read_bytes()
        self.old_record = old_record

    def supports(self, case: str) -> bool:
        return case not in ("drip", "wrong_version")  # a file neither drips nor answers askew

    async def misbehave(self, case: str) -> None:
        self.path.unlink()
        if case == "oversize":
            with self.path.open("wb") as handle:
                handle.truncate(HUGE)
        elif case == "hang":
            os.mkfifo(self.path)  # opening it for reading would wait for a writer
        elif case == "wrong_shape":
            self.path.write_bytes(b'{"format": 1, "versions": [[[[')
        elif case == "wrong_name":
            self.path.write_bytes(self.other.read_bytes())
        elif case == "rollback":
            self.path.write_bytes(self.old_record)
        elif case == "redirect":
            self.path.symlink_to(self.other)

    async def behave(self) -> None:
        self._replace(self.record)

    def _replace(self, data: bytes) -> None:
        temporary = self.path.with_name(".hostile.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, self.path)

    async def storm(self) -> Storm:
        """REWRITES atomic rewrites of the record while the backend watches and reads:
        every read is whole, and the watch never reports more changes than happened."""
        events = 0

        async def watch() -> None:
            nonlocal events
            async for _name in self.backend.changes():
                events += 1

        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.sleep(0.2)
            for n in range(REWRITES):
                self._replace(self.record)
                if n % 15 == 0:
                    fetched = await self.backend.fetch(self.name)
                    assert fetched.version.value.reveal() == self.good
            await asyncio.sleep(0.5)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        assert events >= 1, "the watch saw none of the rewrites"
        return Storm(events, REWRITES)


class TestFileHostile(HostileBackendCases):
    @pytest.fixture
    async def rig(self) -> AsyncIterator[HostileRig]:
        with tempfile.TemporaryDirectory(prefix="hf-") as tmp:
            root = Path(tmp) / "store"
            key = init_store(root)
            seeder = StoreSeeder(root)
            await seeder.put("app/other", OTHER.encode())
            await seeder.put(str(FileRig.name), OLD.encode())
            old_record = seeder.store.layout.record_path(FileRig.name).read_bytes()
            await seeder.put(str(FileRig.name), GOOD.encode())
            config = FileBackendConfig.model_validate(
                {"type": "file", "path": str(root), "key_file": str(key), "timeout": "2s"}
            )
            backend = await open_backend("local", config, max_secret_bytes=MAX_SECRET_BYTES)
            try:
                yield FileRig(backend, seeder, old_record)
            finally:
                await backend.aclose()
