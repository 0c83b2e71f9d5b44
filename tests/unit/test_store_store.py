"""FileStore on a real directory: property round trips through put/open_version,
history bounds, file modes, and key loading that never leaks loaded keys."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secretd.errors import KeyFileError, NotFound, TooLarge
from secretd.model import SecretName
from secretd.store.keyfile import Keyring
from secretd.store.store import FileStore
from secretd.store.versions import MAX_UNSTAGED_VERSIONS

segment = st.text(alphabet="ABCxyz019_+=.@-", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
names = st.lists(segment, min_size=1, max_size=4).map("/".join)


@pytest.fixture(scope="module")
def opened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FileStore, Keyring]]:
    root = tmp_path_factory.mktemp("prop") / "store"
    store, key, _ = FileStore.init(root, root.with_name("k"))
    key.wipe()
    keyring = store.keyring(None)
    yield store, keyring
    keyring.close()


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, value=st.binary(min_size=1, max_size=512))
def test_put_then_read_round_trips(
    opened: tuple[FileStore, Keyring], name: str, value: bytes
) -> None:
    store, keyring = opened
    version_id = store.put(SecretName(name), value, keyring)
    version, generation = store.open_version(SecretName(name), keyring)
    assert (version.version_id, version.value.reveal()) == (version_id, value)
    assert "current" in version.stages and generation >= 1
    assert SecretName(name) in store.names()[0]


def test_history_through_the_store_is_bounded(tmp_path: Path) -> None:
    store, key, _ = FileStore.init(tmp_path / "s", tmp_path / "k")
    ring = Keyring(key)
    name = SecretName("busy")
    ids = [store.put(name, f"v{i}".encode(), ring) for i in range(MAX_UNSTAGED_VERSIONS + 5)]
    kept = [v.version_id for v in store.history(name, ring)]
    assert kept == ids[-(MAX_UNSTAGED_VERSIONS + 2) :]  # current + previous + 10 unstaged
    with pytest.raises(NotFound):
        store.open_version(name, ring, version_id=ids[0])


def test_private_store_gets_private_files(tmp_path: Path) -> None:
    store, key, _ = FileStore.init(tmp_path / "s", tmp_path / "k")
    store.put(SecretName("a"), b"v", Keyring(key))
    for path in (tmp_path / "s").rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))


def test_value_limits_on_write_and_read(tmp_path: Path) -> None:
    store, key, _ = FileStore.init(tmp_path / "s", tmp_path / "k")
    ring = Keyring(key)
    small = FileStore(tmp_path / "s", max_secret_bytes=8)
    with pytest.raises(TooLarge, match="max_secret_bytes"):
        small.put(SecretName("a"), b"123456789", ring)
    store.put(SecretName("a"), b"123456789", ring)
    with pytest.raises(TooLarge, match=r"larger than limits\.max_secret_bytes"):
        small.open_version(SecretName("a"), ring)


def test_a_bad_old_key_wipes_the_keys_already_loaded(tmp_path: Path) -> None:
    store, key, _ = FileStore.init(tmp_path / "s", tmp_path / "k")
    bad = tmp_path / "bad"
    bad.write_bytes(b"short")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError, match="exactly 32"):
        store.keyring(None, [bad])
    # the recorded key still loads and works afterwards
    assert store.keyring(None).active.key_id == key.key_id
