"""The store directory on disk: paths, metadata, locking, safe reads and atomic writes.

    DIR/store.json          {"format": 1, "key_file": "...", "old_key_files": [...]}
    DIR/.lock               flock()ed by writers (readers never lock: writes are renames)
    DIR/secrets/<sha256(name)>.secret   one record per secret (format.py)

Ownership: new files take the owner (when written by root) and group of the
`secrets/` directory, and mode 0640 when that directory is group-readable,
else 0600. So a store made 0750 root:secretd, or 0700 secretd:secretd, stays
readable by the agent whoever writes to it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from secretd.durable import fsync_dir, replace_file
from secretd.errors import IntegrityError, StoreError
from secretd.store.format import RECORD_SUFFIX, record_filename

META_NAME = "store.json"
LOCK_NAME = ".lock"
SECRETS_DIR = "secrets"
STORE_FORMAT = 1
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True, slots=True)
class StoreMeta:
    """What `store init` (and `rekey`) recorded about the store's keys."""

    key_file: Path | None
    old_key_files: tuple[Path, ...] = ()


class StoreLayout:
    """Paths and file operations for one store directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.secrets_dir = root / SECRETS_DIR
        self.meta_path = root / META_NAME
        self.lock_path = root / LOCK_NAME

    def record_path(self, name: str) -> Path:
        return self.secrets_dir / record_filename(name)

    def is_store(self) -> bool:
        return self.meta_path.is_file() and self.secrets_dir.is_dir()

    def require_store(self) -> None:
        if not self.is_store():
            raise StoreError(
                f"{self.root}: not a secretd store (no {META_NAME}); create one with "
                "`secretd store init`"
            )

    def read_meta(self) -> StoreMeta:
        self.require_store()
        data = read_bounded(self.meta_path, 64 * 1024, what="store metadata")
        try:
            doc = orjson.loads(data or b"")
            key_file = doc["key_file"]
            old = doc.get("old_key_files", [])
            if doc.get("format") != STORE_FORMAT or not isinstance(old, list):
                raise ValueError
            return StoreMeta(
                Path(key_file) if isinstance(key_file, str) else None,
                tuple(Path(p) for p in old if isinstance(p, str)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise StoreError(f"{self.meta_path}: malformed store metadata") from None

    def write_meta(self, meta: StoreMeta) -> None:
        doc = {
            "format": STORE_FORMAT,
            "key_file": str(meta.key_file) if meta.key_file else None,
            "old_key_files": [str(p) for p in meta.old_key_files],
        }
        self.write_atomic(self.meta_path, orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's writer lock (blocking): writers never lose a version."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.lock_path, flags, 0o600)
        except OSError as exc:
            raise StoreError(f"{self.lock_path}: cannot open lock ({exc.strerror})") from None
        try:
            if os.geteuid() == 0:  # root must not leave a lock the store's owner cannot open
                owner = self.root.stat()
                with contextlib.suppress(OSError):
                    os.fchown(fd, owner.st_uid, owner.st_gid)
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def record_files(self) -> list[Path]:
        """Every record file (not temp files), sorted."""
        try:
            entries = list(self.secrets_dir.iterdir())
        except FileNotFoundError:
            return []
        return sorted(
            entry
            for entry in entries
            if entry.name.endswith(RECORD_SUFFIX) and not entry.name.startswith(".")
        )

    def remove_stale_temps(self) -> int:
        """Remove the temp files writers killed mid-write left behind; how many.
        Only under `locked()`: no writer is running then, so none is in use."""
        try:
            entries = list(self.secrets_dir.iterdir())
        except FileNotFoundError:
            return 0
        stale = [entry for entry in entries if entry.name.startswith(_TMP_PREFIX)]
        for entry in stale:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        return len(stale)

    def _new_file_attrs(self, directory: Path) -> tuple[int, int, int]:
        """(mode, uid, gid) for a new file in `directory`, following the directory."""
        st = directory.stat()
        mode = 0o640 if st.st_mode & stat.S_IRGRP else 0o600
        uid = st.st_uid if os.geteuid() == 0 else -1
        return mode, uid, st.st_gid

    def write_atomic(self, path: Path, data: bytes) -> None:
        """Temp file in the same directory (owner, group and mode set on the
        descriptor), fsync, rename over `path`, fsync the directory. On any
        failure the old file stays as it was and the temp file is removed."""
        try:
            self._write_atomic(path, data)
        except OSError as exc:
            raise StoreError(f"cannot write {path} ({exc.strerror or exc})") from None

    def _write_atomic(self, path: Path, data: bytes) -> None:
        directory = path.parent
        mode, uid, gid = self._new_file_attrs(directory)
        tmp = directory / f"{_TMP_PREFIX}{secrets.token_hex(8)}-{path.name}"

        def own(fd: int) -> None:
            with contextlib.suppress(PermissionError):
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)

        replace_file(tmp, path, data, prepare=own)
        fsync_dir(directory)

    def make_dirs(self) -> None:
        """Create DIR (0700 when new) and DIR/secrets with DIR's mode and group."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = self.root.stat()
        self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(PermissionError):
            os.chown(self.secrets_dir, st.st_uid if os.geteuid() == 0 else -1, st.st_gid)
        self.secrets_dir.chmod(stat.S_IMODE(st.st_mode) & 0o750)
        fsync_dir(self.root)


def read_bounded(path: Path, limit: int, *, what: str) -> bytes | None:
    """The bytes of regular file `path` (None if absent). Refuses symlinks and
    files over `limit` bytes; other OSErrors propagate for the caller to map."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink where a file should be
            raise IntegrityError(f"{what} {path} is a symlink; refusing it") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IntegrityError(f"{what} {path} is not a regular file")
        if st.st_size > limit:
            raise IntegrityError(f"{what} {path} is larger than {limit} bytes")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total) or 1):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise IntegrityError(f"{what} {path} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
