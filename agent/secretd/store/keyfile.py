"""Store key files and the keyring.

A store key (the key-encryption key, KEK) is exactly 32 random bytes in a file
that only its owner (root or the user running secretd) can read. The key's id
is derived from the key itself, so a record names the key that sealed it
without revealing anything about it, and a wrong key shows up as an unknown id.

Key material lives in a `bytearray` that `StoreKey.wipe()` zeroes; the keyring
wipes every key it holds when closed. Python may still hold transient copies
inside cryptography's own contexts: see docs/security.md, "Memory: what a
Python daemon can honestly promise".
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secretd.durable import fsync_dir
from secretd.errors import KeyFileError, UnknownKeyId
from secretd.fileperm import open_private_file

KEY_BYTES = 32
KEY_ID_HEX = 16
_KEY_ID_LABEL = b"secretd store key id v1"
_MAC_KEY_LABEL = b"secretd store record mac v1"


def random_bytes(size: int) -> bytearray:
    """`size` bytes from the kernel CSPRNG, read straight into a wipeable buffer."""
    buf = bytearray(size)
    got = 0
    fd = os.open("/dev/urandom", os.O_RDONLY | os.O_CLOEXEC)
    try:
        while got < size:
            view = memoryview(buf)[got:]
            got += os.readv(fd, [view])
    finally:
        os.close(fd)
    return buf


def wipe(buf: bytearray) -> None:
    """Overwrite `buf` with zeros in place."""
    buf[:] = bytes(len(buf))


class StoreKey:
    """One 256-bit key-encryption key, plus the record-MAC key derived from it."""

    __slots__ = ("_mac_key", "_material", "key_id", "source")

    def __init__(self, material: bytearray, *, source: str) -> None:
        if len(material) != KEY_BYTES:
            raise KeyFileError(f"{source}: a store key is exactly {KEY_BYTES} bytes")
        self._material = material
        self.source = source
        digest = hmac.new(material, _KEY_ID_LABEL, hashlib.sha256).hexdigest()
        self.key_id = digest[:KEY_ID_HEX]
        self._mac_key = bytearray(KEY_BYTES)
        HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=_MAC_KEY_LABEL).derive_into(
            material, self._mac_key
        )

    @property
    def material(self) -> bytearray:
        """The raw key (for AES-GCM wrapping). Do not copy it into bytes."""
        return self._material

    @property
    def mac_key(self) -> bytearray:
        """HKDF-derived key for record MACs: never the KEK itself."""
        return self._mac_key

    def wipe(self) -> None:
        wipe(self._material)
        wipe(self._mac_key)

    def __repr__(self) -> str:
        return f"<StoreKey id={self.key_id} source={self.source}>"


def load_key_file(path: Path) -> StoreKey:
    """Load and check a key file: a regular file owned by root or us, unreadable
    and unwritable by others (checked on the descriptor read; a symlink only as
    secretd.fileperm allows), exactly 32 bytes."""
    fd = open_private_file(path, what="store key file", secret=True, error=KeyFileError)
    try:
        buf = bytearray(KEY_BYTES + 1)
        got = os.readv(fd, [buf])
    except OSError as exc:
        raise KeyFileError(f"store key file {path}: cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if got != KEY_BYTES:
        wipe(buf)
        size = "more than 32" if got > KEY_BYTES else str(got)
        raise KeyFileError(
            f"store key file {path}: holds {size} bytes; a store key is exactly "
            f"{KEY_BYTES} random bytes (create one with `secretd store init`)"
        )
    material = buf[:KEY_BYTES]
    wipe(buf)
    return StoreKey(material, source=str(path))


def create_key_file(path: Path) -> StoreKey:
    """Create `path` with 32 fresh random bytes, mode 0600; never overwrite."""
    material = random_bytes(KEY_BYTES)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        wipe(material)
        raise KeyFileError(f"store key file {path}: already exists") from None
    except OSError as exc:
        wipe(material)
        raise KeyFileError(f"store key file {path}: cannot create ({exc.strerror})") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask said
        os.write(fd, material)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    return StoreKey(material, source=str(path))


class Keyring:
    """One active key (seals new versions) and decrypt-only older keys, by id."""

    def __init__(self, active: StoreKey, older: Iterable[StoreKey] = ()) -> None:
        self._active = active
        self._by_id: dict[str, StoreKey] = {}
        for key in older:
            self._by_id.setdefault(key.key_id, key)
        self._by_id[active.key_id] = active

    @property
    def active(self) -> StoreKey:
        return self._active

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._by_id)

    def get(self, key_id: str) -> StoreKey:
        """The key with `key_id`; UnknownKeyId says which ids are loaded."""
        key = self._by_id.get(key_id)
        if key is None:
            raise UnknownKeyId(
                f"sealed with key id {key_id}, which none of the loaded keys "
                f"({', '.join(self.key_ids)}) has; give the right key with --key/--old-key "
                "(or key_file/old_key_files in the config)"
            )
        return key

    def add(self, key: StoreKey) -> bool:
        """Add a decrypt-only key; False (and nothing changes) if its id is known."""
        if key.key_id in self._by_id:
            return False
        self._by_id[key.key_id] = key
        return True

    def close(self) -> None:
        """Wipe every key held."""
        for key in self._by_id.values():
            key.wipe()
