"""`BackendContract`: the behaviour every backend (file, vault, aws) must show.

A backend's contract test subclasses it and provides two fixtures:

    class TestVaultContract(BackendContract):
        @pytest.fixture
        def backend_config(self, ...) -> BackendConfig:
            # the backend is opened from it as the agent opens one, closed after
        @pytest.fixture
        def seeder(self, ...) -> Seeder:
            # writes versions through the backend's own native path
            # (the store API, the KV HTTP API, moto's PutSecretValue)

Tests use names under a fresh per-test prefix (`unique`), so a subclass may
share one server across tests. A `Seeder` says what its backend can express
through capability flags; tests needing a capability it lacks are skipped, not
passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import ClassVar, Protocol

import pytest

from secretd.backends.base import Backend, ListableBackend, WatchableBackend
from secretd.backends.registry import open_one
from secretd.config import BackendConfig
from secretd.errors import BackendError, NotFound
from secretd.model import CURRENT, PENDING, PREVIOUS, SecretName

WATCH_BOUND = 5.0  # generous: this proves delivery, the latency figure lives in tests/bench


class Seeder(Protocol):
    """Writes versions of secrets behind the backend's back, as an operator would."""

    supports_pending: bool  # put(pending=True) stages a version without making it current
    supports_promote: bool  # promote() makes a version current
    supports_previous: bool  # the former current version answers to stage "previous"
    supports_binary: bool  # values that are not UTF-8 survive
    supports_delete: bool  # delete() removes a secret entirely

    async def put(self, name: str, value: bytes, *, pending: bool = False) -> str:
        """Write a new version; returns the version id the backend will report."""
        ...

    async def promote(self, name: str, version_id: str) -> None: ...

    async def delete(self, name: str) -> None: ...

    def served(self, value: bytes) -> bytes:
        """What the backend serves for `value` as put (most: `value` itself; Vault
        wraps it in a KV map)."""
        ...


class CapableSeeder:
    """A Seeder's flags and `served` for a backend that can express every case and
    serves values exactly as put (the file store, AWS)."""

    supports_pending = True
    supports_promote = True
    supports_previous = True
    supports_binary = True
    supports_delete = True

    def served(self, value: bytes) -> bytes:
        return value


class BackendContract:
    """Subclass me and provide the `backend_config` and `seeder` fixtures."""

    max_secret_bytes: ClassVar[int] = 4096

    @pytest.fixture
    def backend_config(self) -> BackendConfig:
        raise NotImplementedError("a BackendContract subclass provides `backend_config`")

    @pytest.fixture
    async def backend(self, backend_config: BackendConfig) -> AsyncIterator[Backend]:
        """The backend, opened through the registry as the agent opens it."""
        opened = await open_one("contract", backend_config, max_secret_bytes=self.max_secret_bytes)
        async with aclosing(opened):
            yield opened

    @pytest.fixture
    def seeder(self) -> Seeder:
        raise NotImplementedError("a BackendContract subclass provides the `seeder` fixture")

    @pytest.fixture
    def unique(self) -> str:
        return f"contract-{secrets.token_hex(5)}"

    # -- reading the current version --------------------------------------

    async def test_fetch_returns_the_value_put(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/db")
        version_id = await seeder.put(name, b"s3cret-one")
        fetched = await backend.fetch(name)
        assert fetched.name == name
        assert fetched.version.version_id == version_id
        assert fetched.version.value.reveal() == seeder.served(b"s3cret-one")
        assert CURRENT in fetched.version.stages
        assert fetched.version.created_at.tzinfo is not None

    @pytest.mark.parametrize(
        ("kind", "value"),
        [
            ("unicode", 'pässwörd ✓ "quoted" $HOME {{ x }}\n\ttab'.encode()),
            ("binary", bytes(range(256)) * 3),
        ],
    )
    async def test_value_round_trips(
        self, backend: Backend, seeder: Seeder, unique: str, kind: str, value: bytes
    ) -> None:
        if kind == "binary" and not seeder.supports_binary:
            pytest.skip("this backend stores text only")
        name = SecretName(f"{unique}/{kind}")
        await seeder.put(name, value)
        assert (await backend.fetch(name)).version.value.reveal() == seeder.served(value)

    async def test_every_allowed_name_character_works(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/A-z_0+9=x.y@host/deep/er")
        await seeder.put(name, b"v")
        assert (await backend.fetch(name)).name == name

    async def test_concurrent_fetches_agree(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/busy")
        version_id = await seeder.put(name, b"same for all")
        results = await asyncio.gather(*(backend.fetch(name) for _ in range(20)))
        assert {r.version.version_id for r in results} == {version_id}
        assert {r.version.value.reveal() for r in results} == {seeder.served(b"same for all")}

    # -- versions and stages ----------------------------------------------

    async def test_a_new_put_becomes_current(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/rotating")
        await seeder.put(name, b"old")
        new_id = await seeder.put(name, b"new")
        fetched = await backend.fetch(name)
        assert fetched.version.version_id == new_id
        assert fetched.version.value.reveal() == seeder.served(b"new")

    async def test_old_version_stays_readable_by_id(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/history")
        old_id = await seeder.put(name, b"old")
        await seeder.put(name, b"new")
        fetched = await backend.fetch(name, version_id=old_id)
        assert fetched.version.version_id == old_id
        assert fetched.version.value.reveal() == seeder.served(b"old")
        assert CURRENT not in fetched.version.stages

    async def test_former_current_is_previous(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        if not seeder.supports_previous:
            pytest.skip("this backend has no previous stage")
        name = SecretName(f"{unique}/prev")
        old_id = await seeder.put(name, b"old")
        await seeder.put(name, b"new")
        fetched = await backend.fetch(name, stage=PREVIOUS)
        assert fetched.version.version_id == old_id
        assert PREVIOUS in fetched.version.stages
        assert fetched.version.value.reveal() == seeder.served(b"old")

    async def test_pending_put_leaves_current_alone(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        if not seeder.supports_pending:
            pytest.skip("this backend cannot stage a pending version")
        name = SecretName(f"{unique}/pending")
        current_id = await seeder.put(name, b"live")
        pending_id = await seeder.put(name, b"next", pending=True)
        assert (await backend.fetch(name)).version.version_id == current_id
        staged = await backend.fetch(name, stage=PENDING)
        assert staged.version.version_id == pending_id
        assert staged.version.value.reveal() == seeder.served(b"next")
        assert PENDING in staged.version.stages

    async def test_promote_moves_current_and_previous(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        if not (seeder.supports_pending and seeder.supports_promote):
            pytest.skip("this backend cannot stage and promote versions")
        name = SecretName(f"{unique}/promote")
        old_id = await seeder.put(name, b"live")
        new_id = await seeder.put(name, b"next", pending=True)
        await seeder.promote(name, new_id)
        assert (await backend.fetch(name)).version.value.reveal() == seeder.served(b"next")
        if seeder.supports_previous:
            assert (await backend.fetch(name, stage=PREVIOUS)).version.version_id == old_id

    # -- absence and limits -----------------------------------------------

    async def test_missing_secret_is_backend_not_found(self, backend: Backend, unique: str) -> None:
        with pytest.raises(NotFound):
            await backend.fetch(SecretName(f"{unique}/never-written"))

    @pytest.mark.parametrize(
        "asked",
        [{"version_id": "0123456789abcdef0123456789abcdef"}, {"stage": PREVIOUS}],
        ids=["version", "stage"],
    )
    async def test_a_missing_version_or_stage_is_backend_not_found(
        self, backend: Backend, seeder: Seeder, unique: str, asked: dict[str, str]
    ) -> None:
        name = SecretName(f"{unique}/one-version")
        await seeder.put(name, b"only")
        with pytest.raises(NotFound):
            await backend.fetch(name, **asked)

    async def test_deleted_secret_is_backend_not_found(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        if not seeder.supports_delete:
            pytest.skip("this seeder cannot delete")
        name = SecretName(f"{unique}/doomed")
        await seeder.put(name, b"v")
        await seeder.delete(name)
        with pytest.raises(NotFound):
            await backend.fetch(name)

    async def test_value_at_the_size_limit_is_served(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/at-limit")
        await seeder.put(name, b"x" * (self.max_secret_bytes - len(seeder.served(b""))))
        assert len((await backend.fetch(name)).version.value) == self.max_secret_bytes

    async def test_value_over_the_size_limit_is_refused(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        name = SecretName(f"{unique}/over-limit")
        await seeder.put(name, b"x" * (self.max_secret_bytes - len(seeder.served(b"")) + 1))
        with pytest.raises(BackendError) as caught:
            await backend.fetch(name)
        assert not isinstance(caught.value, NotFound)
        assert "xxxxxxxx" not in str(caught.value)

    # -- batch, list, watch -------------------------------------------------

    async def test_current_versions_reports_current_and_omits_missing(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        first, second = SecretName(f"{unique}/a"), SecretName(f"{unique}/b")
        await seeder.put(first, b"1")
        first_id = await seeder.put(first, b"2")
        second_id = await seeder.put(second, b"3")
        missing = SecretName(f"{unique}/missing")
        answer = await backend.current_versions([first, second, missing])
        assert dict(answer) == {first: first_id, second: second_id}

    async def test_list_names_by_prefix(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        if not isinstance(backend, ListableBackend):
            pytest.skip("not a ListableBackend")
        for suffix in ("app/db", "app/api", "other"):
            await seeder.put(f"{unique}/{suffix}", b"v")
        listed = await backend.list_names(f"{unique}/app/")
        assert sorted(listed) == [f"{unique}/app/api", f"{unique}/app/db"]

    async def test_changes_reports_a_put(
        self, backend: Backend, seeder: Seeder, unique: str
    ) -> None:
        if not isinstance(backend, WatchableBackend):
            pytest.skip("not a WatchableBackend")
        name = SecretName(f"{unique}/watched")
        await seeder.put(name, b"before")
        changes = backend.changes()
        waiter = asyncio.ensure_future(_first_matching(changes, name))
        try:
            # Keep writing until the watcher (which starts lazily) reports one.
            for _ in range(int(WATCH_BOUND / 0.25)):
                await seeder.put(name, b"after")
                done, _pending = await asyncio.wait({waiter}, timeout=0.25)
                if done:
                    break
            assert waiter.done(), f"no change reported within {WATCH_BOUND}s"
            assert waiter.result() == name
        finally:
            await backend.aclose()  # stops the watcher thread promptly
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            closer = getattr(changes, "aclose", None)
            if closer is not None:
                await closer()

    async def test_aclose_twice_is_harmless(self, backend: Backend) -> None:
        await backend.aclose()
        await backend.aclose()


async def _first_matching(changes: AsyncIterator[SecretName], name: str) -> str:
    async for changed in changes:
        if changed == name:
            return str(changed)
    raise AssertionError("the change stream ended")
