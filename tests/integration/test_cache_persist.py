"""The persisted cache (cache/persist.py) over real files: what a restart brings back,
and what it refuses. Two `SecretCache`s on one directory stand for an agent before
and after a restart; time is a FakeClock (wall and monotonic)."""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from secretd.backends.file_marks import GenerationMarks
from secretd.cache.persist import DiskPersister, open_persister
from secretd.cache.persist_format import file_name
from secretd.cache.secret_cache import SecretCache
from secretd.config import CacheSection
from secretd.errors import BackendUnavailable, ConfigError
from secretd.model import SecretName
from secretd.state import StateDir
from secretd.store.keyfile import StoreKey, create_key_file, load_key_file
from tests.fakes.cache_rig import cache_over
from tests.fakes.fake_clock import FakeClock
from tests.fakes.memory_backend import MemoryBackend

SETTINGS = {"refresh_interval": "1m", "max_stale": "1h"}


@dataclass
class Host:
    """One agent's cache, backend and persister on the shared directory."""

    cache: SecretCache
    backend: MemoryBackend
    persister: DiskPersister

    async def flush(self) -> None:
        """What the persister's task does at stop: write everything queued."""
        task = asyncio.create_task(self.persister.run())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def key(tmp_path: Path) -> StoreKey:
    return create_key_file(tmp_path / "persist.key")


def start(
    tmp_path: Path,
    clock: FakeClock,
    key: StoreKey,
    backend: MemoryBackend | None = None,
    *,
    backend_name: str = "memory",
) -> Host:
    backend = backend or MemoryBackend(backend_name, clock=clock)
    state = StateDir.open(tmp_path / "state")
    directory = tmp_path / "persist"
    directory.mkdir(mode=0o700, exist_ok=True)
    marks = GenerationMarks(state, directory, kind="cache-persist")
    persister = DiskPersister(
        directory, key, marks, max_secret_bytes=65536, wall=lambda: clock.now().timestamp()
    )
    cache = cache_over(backend, CacheSection(**SETTINGS), seed=3, clock=clock, persister=persister)
    return Host(cache, backend, persister)


async def first_run(tmp_path: Path, clock: FakeClock, key: StoreKey) -> tuple[Host, str]:
    host = start(tmp_path, clock, key)
    vid = host.backend.put("app/db", b"persisted-value-41")
    assert (await host.cache.read(SecretName("app/db"))).version.value.reveal() == (
        b"persisted-value-41"
    )
    await host.flush()
    return host, vid


async def restore(host: Host) -> tuple[int, int]:
    """Restore `host`'s cache: how many entries it took back, how many it refused."""
    restored = await host.cache.restore()
    return restored, host.cache.persist_refused()


async def checked_again(host: Host, clock: FakeClock) -> None:
    """Past the refresh interval: app/db checked with the backend, the answer persisted."""
    clock.advance(61)
    await host.cache.refresh_target.check("memory", [SecretName("app/db")])
    await host.flush()


def entry_file(tmp_path: Path, name: str) -> Path:
    return tmp_path / "persist" / file_name(name)


async def test_a_restart_with_the_backend_down_serves_the_persisted_value_stale(
    tmp_path: Path, key: StoreKey
) -> None:
    clock = FakeClock()
    _, vid = await first_run(tmp_path, clock, key)
    path = entry_file(tmp_path, "app/db")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert b"persisted-value-41" not in path.read_bytes()  # sealed, never plaintext

    clock.advance(90)  # down for longer than refresh_interval (1m)
    down = MemoryBackend("memory", clock=clock)
    down.fail = BackendUnavailable("memory backend is down")
    host = start(tmp_path, clock, key, down)
    assert await host.cache.restore() == 1
    served = await host.cache.read(SecretName("app/db"))
    assert served.version.value.reveal() == b"persisted-value-41"
    assert (served.version.version_id, served.stale) == (vid, True)
    assert down.calls["fetch"] == 0  # served from disk, the dead backend was not waited on
    due = host.cache.refresh_target.due_checks(clock.monotonic())
    assert due == {"memory": ["app/db"]}  # checked at once


async def test_a_restart_within_the_interval_keeps_the_schedule(
    tmp_path: Path, key: StoreKey
) -> None:
    """Confirmed 20 s before the restart: served as without a restart (not stale),
    checked when due; only a failed check makes it stale."""
    clock = FakeClock()
    await first_run(tmp_path, clock, key)
    clock.advance(20)
    down = MemoryBackend("memory", clock=clock)
    down.fail = BackendUnavailable("memory backend is down")
    host = start(tmp_path, clock, key, down)
    assert await host.cache.restore() == 1
    assert (await host.cache.read(SecretName("app/db"))).stale is False
    assert host.cache.refresh_target.due_checks(clock.monotonic()) == {}
    entry = host.cache.core.table.get(SecretName("app/db"))
    assert entry is not None
    assert 0 < entry.next_check - clock.monotonic() <= 40  # the rest of its interval
    clock.advance(entry.next_check - clock.monotonic())
    await host.cache.refresh_target.check("memory", [SecretName("app/db")])
    assert (await host.cache.read(SecretName("app/db"))).stale is True


async def test_max_stale_counts_from_the_persisted_confirmation_not_the_restart(
    tmp_path: Path, key: StoreKey
) -> None:
    clock = FakeClock()
    await first_run(tmp_path, clock, key)
    clock.advance(50 * 60)  # the agent was down for 50 minutes; max_stale is 1 h
    down = MemoryBackend("memory", clock=clock)
    down.fail = BackendUnavailable("down")
    host = start(tmp_path, clock, key, down)
    assert await host.cache.restore() == 1
    assert (await host.cache.read(SecretName("app/db"))).stale is True
    clock.advance(11 * 60)  # 61 minutes after the backend last confirmed it
    with pytest.raises(BackendUnavailable, match="max_stale"):
        await host.cache.read(SecretName("app/db"))

    later = start(tmp_path, clock, key, down)  # a restart now brings nothing back
    assert await later.cache.restore() == 0
    assert not entry_file(tmp_path, "app/db").exists()


async def test_the_backend_answering_replaces_the_restored_entry(
    tmp_path: Path, key: StoreKey
) -> None:
    clock = FakeClock()
    first, vid = await first_run(tmp_path, clock, key)
    clock.advance(90)
    host = start(tmp_path, clock, key, first.backend)
    await host.cache.restore()
    assert (await host.cache.read(SecretName("app/db"))).stale is True
    await host.cache.refresh_target.check("memory", [SecretName("app/db")])
    assert (await host.cache.read(SecretName("app/db"))).stale is False  # confirmed

    newer = first.backend.put("app/db", b"rotated-value-42")
    clock.advance(61)
    await host.cache.refresh_target.check("memory", [SecretName("app/db")])
    served = await host.cache.read(SecretName("app/db"))
    assert (served.version.version_id, served.stale) == (newer, False)
    await host.flush()
    again = start(tmp_path, clock, key, first.backend)
    await again.cache.restore()
    assert (await again.cache.read(SecretName("app/db"))).version.version_id == newer != vid


async def test_a_tampered_entry_is_refused_and_reported(tmp_path: Path, key: StoreKey) -> None:
    clock = FakeClock()
    await first_run(tmp_path, clock, key)
    path = entry_file(tmp_path, "app/db")
    data = bytearray(path.read_bytes())
    data[data.index(b'"ciphertext":"') + 20] ^= 0x02
    path.write_bytes(bytes(data))
    down = MemoryBackend("memory", clock=clock)
    down.fail = BackendUnavailable("down")
    host = start(tmp_path, clock, key, down)
    assert await restore(host) == (0, 1)
    with pytest.raises(BackendUnavailable):
        await host.cache.read(SecretName("app/db"))


async def test_a_changed_confirmation_time_is_tampering(tmp_path: Path, key: StoreKey) -> None:
    clock = FakeClock()
    await first_run(tmp_path, clock, key)
    path = entry_file(tmp_path, "app/db")
    text = path.read_text()
    start_of = text.index('"confirmed_at":') + len('"confirmed_at":')
    end_of = text.index(",", start_of)
    path.write_text(text[:start_of] + "99999999999" + text[end_of:])
    host = start(tmp_path, clock, key)
    assert await restore(host) == (0, 1)


async def test_an_entry_sealed_with_another_key_is_refused_as_foreign(
    tmp_path: Path, key: StoreKey
) -> None:
    clock = FakeClock()
    await first_run(tmp_path, clock, key)
    other = create_key_file(tmp_path / "other.key")
    host = start(tmp_path, clock, other)
    assert await restore(host) == (0, 1)


async def test_an_entry_copied_under_another_name_is_refused(tmp_path: Path, key: StoreKey) -> None:
    clock = FakeClock()
    await first_run(tmp_path, clock, key)
    entry_file(tmp_path, "app/other").write_bytes(entry_file(tmp_path, "app/db").read_bytes())
    host = start(tmp_path, clock, key)
    assert await restore(host) == (1, 1)  # the genuine one taken back, the copy refused


async def test_an_older_entry_put_back_is_refused_as_rolled_back(
    tmp_path: Path, key: StoreKey
) -> None:
    clock = FakeClock()
    first, _ = await first_run(tmp_path, clock, key)
    old = entry_file(tmp_path, "app/db").read_bytes()
    newer = first.backend.put("app/db", b"rotated-value-42")
    await checked_again(first, clock)
    entry_file(tmp_path, "app/db").write_bytes(old)  # an authentic, older file
    host = start(tmp_path, clock, key, first.backend)
    assert await restore(host) == (0, 1)
    # the next answer of the backend replaces it, and the refusal with it
    assert (await host.cache.read(SecretName("app/db"))).version.version_id == newer
    await host.flush()
    assert host.cache.persist_refused() == 0


async def test_a_deleted_secret_is_removed_and_cannot_be_put_back(
    tmp_path: Path, key: StoreKey
) -> None:
    clock = FakeClock()
    first, _ = await first_run(tmp_path, clock, key)
    old = entry_file(tmp_path, "app/db").read_bytes()
    first.backend.delete("app/db")
    await checked_again(first, clock)
    assert not entry_file(tmp_path, "app/db").exists()
    entry_file(tmp_path, "app/db").write_bytes(old)
    host = start(tmp_path, clock, key)
    assert await restore(host) == (0, 1)


async def test_an_entry_of_a_backend_no_longer_serving_the_name_is_dropped(
    tmp_path: Path, key: StoreKey
) -> None:
    clock = FakeClock()
    await first_run(tmp_path, clock, key)
    host = start(tmp_path, clock, key, backend_name="elsewhere")
    assert await restore(host) == (0, 0)
    assert not entry_file(tmp_path, "app/db").exists()


def test_without_persist_dir_there_is_no_persister(tmp_path: Path) -> None:
    state = StateDir.open(tmp_path / "state")
    assert open_persister(CacheSection(), state, max_secret_bytes=65536) is None
    assert sorted(os.listdir(tmp_path)) == ["state"]


def test_the_persist_key_follows_the_store_key_rules(tmp_path: Path) -> None:
    state = StateDir.open(tmp_path / "state")
    key = tmp_path / "k"
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    settings = CacheSection(persist_dir=tmp_path / "p", persist_key_file=key)
    with pytest.raises(ConfigError, match=r"cache\.persist_key_file"):
        open_persister(settings, state, max_secret_bytes=65536)
    key.chmod(0o600)
    persister = open_persister(settings, state, max_secret_bytes=65536)
    assert persister is not None
    assert stat.S_IMODE(os.stat(tmp_path / "p").st_mode) == 0o700
    assert load_key_file(key).key_id == persister.key_id
