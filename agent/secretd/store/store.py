"""The envelope-encrypted file store: the operations behind `secretd store` and
the file backend. Blocking code: async callers run it via asyncio.to_thread.

Writers hold the store lock across read-modify-write, so concurrent `put`s
never lose a version; readers never lock, because every write is an atomic
rename of a complete file. Every record is verified (header MAC, then the
envelope) before anything in it is trusted or re-written.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from secretd.durable import fsync_dir
from secretd.errors import IntegrityError, NotFound, StoreError, TooLarge
from secretd.model import CURRENT, SecretName, SecretValue, Version, utc_now
from secretd.store import versions
from secretd.store.envelope import open_envelope, rewrap, seal
from secretd.store.format import (
    MAX_VERSIONS_PER_RECORD,
    SealedVersion,
    SecretRecord,
    decode_record,
    encode_record,
    peek_name,
    record_filename,
)
from secretd.store.keyfile import Keyring, StoreKey, create_key_file, load_key_file
from secretd.store.layout import StoreLayout, StoreMeta, read_bounded

DEFAULT_MAX_SECRET_BYTES = 65536


@contextlib.contextmanager
def about(what: str) -> Iterator[None]:
    """Prefix any StoreError raised inside with the secret/file it concerns."""
    try:
        yield
    except StoreError as exc:
        raise type(exc)(f"{what}: {exc.message}") from None


def record_size_limit(max_secret_bytes: int) -> int:
    """The largest record file worth reading: every version at the size limit."""
    per_version = (max_secret_bytes + 64) * 4 // 3 + 512
    return MAX_VERSIONS_PER_RECORD * per_version + 64 * 1024


def load_keys(paths: Sequence[Path]) -> list[StoreKey]:
    """Load every key file, wiping the ones already loaded if a later one fails."""
    keys: list[StoreKey] = []
    try:
        for path in paths:
            keys.append(load_key_file(path))
    except BaseException:
        for key in keys:
            key.wipe()
        raise
    return keys


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """What `history` shows: never a value."""

    version_id: str
    created_at: datetime
    stages: frozenset[str]
    key_id: str


class FileStore:
    """One store directory."""

    def __init__(self, root: Path, *, max_secret_bytes: int = DEFAULT_MAX_SECRET_BYTES) -> None:
        self.layout = StoreLayout(root)
        self.max_secret_bytes = max_secret_bytes
        self._record_limit = record_size_limit(max_secret_bytes)

    @property
    def root(self) -> Path:
        return self.layout.root

    # -- setup and keys -------------------------------------------------------

    @classmethod
    def init(cls, root: Path, key_file: Path) -> tuple[FileStore, StoreKey, bool]:
        """Create the store at `root`, recording `key_file` (created if absent).

        Returns the store, the key and whether the key file was created.
        """
        store = cls(root)
        if store.layout.meta_path.exists():
            raise StoreError(f"{root}: already a secretd store; nothing changed")
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root}: exists and is not a directory")
        if root.is_dir() and any(root.iterdir()):
            raise StoreError(f"{root}: exists and is not empty; give a new or empty directory")
        key_file = key_file.absolute()
        created = not (key_file.exists() or key_file.is_symlink())
        key = create_key_file(key_file) if created else load_key_file(key_file)
        store.layout.make_dirs()
        with store.layout.locked():
            store.layout.write_meta(StoreMeta(key_file))
        return store, key, created

    def meta(self) -> StoreMeta:
        return self.layout.read_meta()

    def keyring(self, key_file: Path | None, old_key_files: Sequence[Path] = ()) -> Keyring:
        """The active key (`key_file`, else the one recorded by init/rekey) plus
        decrypt-only keys: `old_key_files` and any the store recorded."""
        meta = self.meta()
        active_path = key_file or meta.key_file
        if active_path is None:
            raise StoreError(f"{self.root}: no key file recorded; pass --key FILE")
        paths = {active_path.absolute(): None}
        for path in (*old_key_files, *meta.old_key_files):
            paths.setdefault(path.absolute(), None)
        keys = load_keys(list(paths))
        return Keyring(keys[0], keys[1:])

    def recorded_keys(self) -> list[StoreKey]:
        """The keys store.json names now (after a rekey: the new one and any old ones)."""
        meta = self.meta()
        paths = [meta.key_file] if meta.key_file else []
        return load_keys([*paths, *meta.old_key_files])

    # -- reading --------------------------------------------------------------

    def read_record(self, name: SecretName, keyring: Keyring) -> SecretRecord | None:
        """The verified record of `name`, or None when the store has no such secret."""
        path = self.layout.record_path(name)
        with about(f"secret {name!r} ({path})"):
            data = read_bounded(path, self._record_limit, what="record file")
            if data is None:
                return None
            return decode_record(data, keyring, expected_name=name)

    def open_version(
        self,
        name: SecretName,
        keyring: Keyring,
        *,
        version_id: str | None = None,
        stage: str | None = None,
    ) -> tuple[Version, int]:
        """One decrypted version (by id, else stage, else current) and the
        record's generation. NotFound when the secret, version or stage is absent."""
        record = self.read_record(name, keyring)
        if record is None:
            raise NotFound(f"secret {name!r} is not in the store")
        if version_id is not None:
            sealed = record.version(version_id)
            if sealed is None:
                raise NotFound(f"secret {name!r} has no version {version_id!r}")
        else:
            target = record.stages.get(stage or CURRENT)
            if target is None:
                raise NotFound(f"secret {name!r} has no version in stage {stage!r}")
            sealed = record.version(target)
            assert sealed is not None
        return self._decrypt(record, sealed, keyring), record.generation

    def _decrypt(self, record: SecretRecord, sealed: SealedVersion, keyring: Keyring) -> Version:
        name = record.name
        if len(sealed.envelope.ciphertext) - 16 > self.max_secret_bytes:
            raise TooLarge(
                f"secret {name!r} version {sealed.version_id} is larger than "
                f"limits.max_secret_bytes ({self.max_secret_bytes})"
            )
        with about(f"secret {name!r} version {sealed.version_id}"):
            plain = open_envelope(keyring, sealed.envelope, name, sealed.version_id)
        value = SecretValue(plain)
        del plain
        return Version(
            sealed.version_id, record.stages_of(sealed.version_id), sealed.created_at, value
        )

    def history(self, name: SecretName, keyring: Keyring) -> list[VersionInfo]:
        """Versions of `name`, oldest first, with stages: no values."""
        record = self.read_record(name, keyring)
        if record is None:
            raise NotFound(f"secret {name!r} is not in the store")
        return [
            VersionInfo(
                v.version_id, v.created_at, record.stages_of(v.version_id), v.envelope.key_id
            )
            for v in record.versions
        ]

    def name_of(self, path: Path) -> SecretName:
        """The (unverified) secret name a record file claims, checked against
        its file name, so a file copied to another name is refused."""
        data = read_bounded(path, self._record_limit, what="record file")
        if data is None:
            raise FileNotFoundError(path)
        with about(f"record file {path}"):
            name = peek_name(data)
            if record_filename(name) != path.name:
                raise IntegrityError("holds a different secret (was it copied or moved here?)")
        return name

    def names(self) -> tuple[list[SecretName], list[str]]:
        """Every secret name (sorted), and one problem line per unreadable file."""
        found: list[SecretName] = []
        problems: list[str] = []
        for path in self.layout.record_files():
            try:
                found.append(self.name_of(path))
            except FileNotFoundError:
                continue  # removed while we listed
            except StoreError as exc:
                problems.append(exc.message)
            except OSError as exc:
                problems.append(f"record file {path}: cannot read ({exc.strerror})")
        return sorted(found), problems

    # -- writing --------------------------------------------------------------

    def put(
        self,
        name: SecretName,
        value: bytes,
        keyring: Keyring,
        *,
        stage: str | None = None,
        now: datetime | None = None,
    ) -> str:
        """Add a version of `name` holding `value`; returns its version id."""
        if len(value) > self.max_secret_bytes:
            raise TooLarge(
                f"value for secret {name!r} is {len(value)} bytes; limits.max_secret_bytes "
                f"is {self.max_secret_bytes}"
            )
        label = versions.check_put_stage(stage)
        version_id = secrets.token_hex(16)
        envelope = seal(keyring.active, name, version_id, value)
        sealed = SealedVersion(version_id, now or utc_now(), envelope)
        with self.layout.locked():
            record = self.read_record(name, keyring)
            updated = versions.add_version(record, name, sealed, label)
            self._write(updated, keyring.active)
        return version_id

    def delete(self, name: SecretName) -> bool:
        """Remove `name` with every version it has; False when it is not there.
        Under the store lock, like every write. A record file holding another
        name (copied or moved here) is refused, not removed."""
        path = self.layout.record_path(name)
        with self.layout.locked():
            try:
                self.name_of(path)
            except FileNotFoundError:
                return False
            path.unlink()
            fsync_dir(self.layout.secrets_dir)
        return True

    def promote(self, name: SecretName, version_id: str, keyring: Keyring) -> bool:
        """Make `version_id` current. False when it already was."""
        with self.layout.locked():
            record = self.read_record(name, keyring)
            if record is None:
                raise NotFound(f"secret {name!r} is not in the store")
            updated = versions.promote(record, version_id)
            if updated is record:
                return False
            self._write(updated, keyring.active)
        return True

    # -- rotation (docs/rotation.md): one pending version, its id the rotation token

    def stage_pending(
        self, name: SecretName, value: bytes, keyring: Keyring, *, version_id: str
    ) -> bool:
        """Stage `value` as the pending version `version_id`. False when that
        version already is pending (a retry); Conflict when another one is."""
        if len(value) > self.max_secret_bytes:
            raise TooLarge(f"value for secret {name!r} is larger than limits.max_secret_bytes")
        sealed = SealedVersion(version_id, utc_now(), seal(keyring.active, name, version_id, value))
        return self._update(name, keyring, lambda r: versions.stage_pending(r, name, sealed))

    def finish_pending(self, name: SecretName, version_id: str, keyring: Keyring) -> bool:
        """Make pending `version_id` current. False when it already was."""
        return self._update(
            name, keyring, lambda r: versions.finish_pending(_must(r, name), version_id)
        )

    def drop_pending(self, name: SecretName, version_id: str, keyring: Keyring) -> bool:
        """Take the pending label off `version_id`. False when it had none."""
        return self._update(
            name, keyring, lambda r: versions.drop_pending(_must(r, name), version_id)
        )

    def _update(
        self,
        name: SecretName,
        keyring: Keyring,
        change: Callable[[SecretRecord | None], SecretRecord],
    ) -> bool:
        """Read-modify-write under the store lock; False (nothing written) when
        `change` hands back the record it was given."""
        with self.layout.locked():
            record = self.read_record(name, keyring)
            updated = change(record)
            if updated is record:
                return False
            self._write(updated, keyring.active)
        return True

    def _write(self, record: SecretRecord, key: StoreKey) -> None:
        self.layout.write_atomic(self.layout.record_path(record.name), encode_record(record, key))

    def rekey(
        self,
        keyring: Keyring,
        new_key: StoreKey,
        new_key_file: Path,
        progress: Callable[[SecretName], None] = lambda _name: None,
    ) -> tuple[int, int]:
        """Re-wrap every data key under `new_key` (values are never decrypted).

        Crash-safe: the metadata first records the new key as active and the old
        ones as decrypt-only, then each record is replaced atomically, then the
        old keys are forgotten. Killed midway, every record verifies under the
        recorded keyring, and running rekey again finishes the job (and removes
        the temp file a kill in the middle of a record's write leaves).
        Returns (records re-wrapped, records already under the new key).
        """
        old_paths = tuple(Path(k.source) for k in _keys_of(keyring) if k.key_id != new_key.key_id)
        full = Keyring(new_key, _keys_of(keyring))
        done = skipped = 0
        with self.layout.locked():
            self.layout.remove_stale_temps()
            self.layout.write_meta(StoreMeta(new_key_file, old_paths))
            for path in self.layout.record_files():
                name = self.name_of(path)
                record = self.read_record(name, full)
                if record is None:
                    continue
                if _all_under(record, new_key):
                    skipped += 1
                    continue
                self._write(_rewrapped(record, full, new_key), new_key)
                done += 1
                progress(name)
            self.layout.write_meta(StoreMeta(new_key_file))
        return done, skipped


def _must(record: SecretRecord | None, name: SecretName) -> SecretRecord:
    if record is None:
        raise NotFound(f"secret {name!r} is not in the store")
    return record


def _keys_of(keyring: Keyring) -> list[StoreKey]:
    return [keyring.get(key_id) for key_id in keyring.key_ids]


def _all_under(record: SecretRecord, key: StoreKey) -> bool:
    return record.mac_key_id == key.key_id and all(
        v.envelope.key_id == key.key_id for v in record.versions
    )


def _rewrapped(record: SecretRecord, keyring: Keyring, new_key: StoreKey) -> SecretRecord:
    with about(f"secret {record.name!r}"):
        moved = tuple(
            SealedVersion(
                v.version_id,
                v.created_at,
                rewrap(keyring, new_key, v.envelope, record.name, v.version_id),
            )
            for v in record.versions
        )
    return SecretRecord(record.name, record.generation + 1, moved, dict(record.stages))
