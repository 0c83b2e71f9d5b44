"""Key files: created 0600 with 32 random bytes; loose modes, symlinks and wrong
lengths are refused with a message saying what to fix; the keyring by key id."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from secretd.errors import KeyFileError, UnknownKeyId
from secretd.store.keyfile import (
    Keyring,
    StoreKey,
    create_key_file,
    load_key_file,
    random_bytes,
    wipe,
)


def test_created_key_is_32_bytes_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "k"
    old_umask = os.umask(0)
    try:
        key = create_key_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    assert load_key_file(path).key_id == key.key_id


def test_create_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"keep me")
    with pytest.raises(KeyFileError, match="already exists"):
        create_key_file(path)
    assert path.read_bytes() == b"keep me"


def test_two_created_keys_differ(tmp_path: Path) -> None:
    one, two = create_key_file(tmp_path / "a"), create_key_file(tmp_path / "b")
    assert one.key_id != two.key_id
    assert (tmp_path / "a").read_bytes() != (tmp_path / "b").read_bytes()


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        (0o644, "lets others read"),
        (0o640, "lets others read"),
        (0o604, "lets others read"),
        (0o620, "lets others write"),
        (0o602, "lets others write"),
        (0o666, "lets others write"),
    ],
)
def test_loose_modes_are_refused(tmp_path: Path, mode: int, problem: str) -> None:
    path = tmp_path / "k"
    create_key_file(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match=problem) as caught:
        load_key_file(path)
    assert str(path) in str(caught.value)


def test_0400_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "k"
    create_key_file(path)
    path.chmod(0o400)
    assert len(load_key_file(path).material) == 32


def test_symlink_is_followed_only_through_directories_others_cannot_write(
    tmp_path: Path,
) -> None:
    real = tmp_path / "real"
    create_key_file(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    assert load_key_file(link).material == load_key_file(real).material
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # anyone could have planted or swapped the link
    (open_dir / "link").symlink_to(real)
    with pytest.raises(KeyFileError, match=r"symlink.*open is writable by group or others"):
        load_key_file(open_dir / "link")


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_wrong_length_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"\1" * size)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="exactly 32"):
        load_key_file(path)


def test_missing_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such file"):
        load_key_file(tmp_path / "absent")
    (tmp_path / "d").mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_key_file(tmp_path / "d")


def test_key_id_is_derived_from_the_key_and_reveals_nothing_plain() -> None:
    material = random_bytes(32)
    key = StoreKey(bytearray(material), source="a")
    assert key.key_id == StoreKey(bytearray(material), source="b").key_id
    assert key.key_id not in material.hex()
    assert bytes(key.mac_key) != bytes(material)


def test_wipe_zeroes_key_material() -> None:
    key = StoreKey(random_bytes(32), source="k")
    key.wipe()
    assert bytes(key.material) == bytes(32)
    assert bytes(key.mac_key) == bytes(32)
    buf = bytearray(b"secret")
    wipe(buf)
    assert buf == bytearray(6)


def test_keyring_finds_keys_by_id_and_names_the_unknown() -> None:
    active, old = StoreKey(random_bytes(32), source="a"), StoreKey(random_bytes(32), source="o")
    ring = Keyring(active, [old])
    assert ring.get(old.key_id) is old
    assert ring.active is active
    assert sorted(ring.key_ids) == sorted([active.key_id, old.key_id])
    with pytest.raises(UnknownKeyId, match=r"0000000000000000.*--old-key"):
        ring.get("0000000000000000")


def test_keyring_close_wipes_every_key() -> None:
    active, old = StoreKey(random_bytes(32), source="a"), StoreKey(random_bytes(32), source="o")
    Keyring(active, [old]).close()
    assert bytes(active.material) == bytes(old.material) == bytes(32)
