"""The persisted cache: current versions kept envelope-encrypted on disk, so an
agent restarted while its backend is down still serves them (docs/cache.md).

- `Persister` is what `CacheCore` tells: an entry was stored or confirmed
  (`save`), a name went away (`drop`: deleted at the backend, or evicted).
  `NoPersister` keeps nothing (no `[cache] persist_dir`: nothing is written).
- `DiskPersister` queues those notes on the event loop (a dict update) and
  writes them from `run()` - a supervised task - in a worker thread, at most
  one batch per WRITE_GAP (the latest note per name wins), and once more at
  stop. Each file is written whole and atomically (temporary file, fsync,
  rename, fsync of the directory), mode 0600, in a 0700 directory.
- `restore()` reads the directory at start (in a thread): every entry that
  verifies, is not older than its name's rollback mark, still belongs to the
  backend serving its name and was confirmed within `max_stale`. Entries that
  do not verify (tampered), were sealed with another key (foreign) or carry a
  lower generation than already seen (rolled back: an older file put back) are
  refused, logged (`cache.persisted_refused`) and counted in health until the
  name is written again or the file removed; they are never served.

The rollback marks - the highest generation written or read per name - live in
the agent's state directory (`cache-persist-<hash>.json`), apart from the
files, as the file store's do (backends/file_marks.py); a dropped name's mark
moves one past its last file, so that file cannot be put back either.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from secretd.backends.file_marks import GenerationMarks
from secretd.cache.entries import Entry
from secretd.cache.persist_format import SUFFIX, Persisted, decode, encode, file_name
from secretd.config import CacheSection
from secretd.durable import fsync_dir, replace_file
from secretd.errors import ConfigError, IntegrityError, KeyFileError, UnknownKeyId
from secretd.fileperm import check_private_dir
from secretd.model import SecretName
from secretd.state import StateDir

if TYPE_CHECKING:  # cryptography is imported only when a persisted cache is configured
    from secretd.store.keyfile import StoreKey

log = structlog.get_logger(__name__)

WRITE_GAP = 1.0  # seconds between two batches of writes
_TMP = ".tmp-"
_FRAMING = 64 * 1024


class Persister(Protocol):
    """Told by the cache about its current versions."""

    def save(self, entry: Entry) -> None:
        """`entry` was stored, moved or confirmed: keep its version and confirmation time."""
        ...

    def drop(self, name: SecretName) -> None:
        """`name` is no longer cached (gone at its backend, or evicted)."""
        ...


class NoPersister:
    """Keeps nothing: the cache is memory only."""

    def save(self, entry: Entry) -> None:
        pass

    def drop(self, name: SecretName) -> None:
        pass


class DiskPersister:
    """Current versions in `directory`, sealed with `key`; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        key: StoreKey,
        marks: GenerationMarks,
        *,
        max_secret_bytes: int,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self._key = key
        self._marks = marks
        self._max_file = 2 * max_secret_bytes + _FRAMING  # base64 plus the header
        self._wall = wall
        self._pending: dict[SecretName, Persisted | None] = {}
        self._wake = asyncio.Event()
        self._writing = threading.Lock()  # one batch at a time, also at stop
        self._refused: dict[str, str] = {}  # file name -> reason, until replaced

    # -- told by the cache (on the loop) ----------------------------------------

    def save(self, entry: Entry) -> None:
        self._pending[entry.name] = Persisted(
            name=entry.name,
            backend=entry.backend,
            generation=1,  # the real one is taken when written
            version=entry.version,
            confirmed_at=entry.last_success_at.timestamp(),
            arn=entry.arn,
        )
        self._wake.set()

    def drop(self, name: SecretName) -> None:
        self._pending[name] = None
        self._wake.set()

    @property
    def key_id(self) -> str:
        """The id of the key entries are sealed with (never the key)."""
        return self._key.key_id

    def refused(self) -> int:
        """How many files were refused and are still there."""
        return len(self._refused)

    # -- the writer ----------------------------------------------------------------

    async def run(self) -> None:
        """Write what the cache told, batch by batch, until cancelled; then the rest
        (after the batch under way, so an older note never lands last)."""
        writing: asyncio.Future[None] | None = None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                batch = self._take()
                if batch:
                    writing = asyncio.ensure_future(asyncio.to_thread(self._apply, batch))
                    await asyncio.shield(writing)
                await asyncio.sleep(WRITE_GAP)
        finally:
            if writing is not None and not writing.done():
                await asyncio.wait({writing})
            self._apply(self._take())

    def _take(self) -> list[tuple[SecretName, Persisted | None]]:
        batch = list(self._pending.items())
        self._pending.clear()
        return batch

    def _apply(self, batch: list[tuple[SecretName, Persisted | None]]) -> None:
        with self._writing:
            changed = False
            for name, item in batch:
                try:
                    changed = (self._remove(name) if item is None else self._write(item)) or changed
                except OSError as exc:
                    log.warning("cache.entry_unsaved", secret=name, error=exc.strerror)
            if changed:
                with contextlib.suppress(OSError):
                    fsync_dir(self.directory)
            self._marks.flush()

    def _write(self, item: Persisted) -> bool:
        generation = self._marks.seen(item.name) + 1
        data = encode(self._key, dataclasses.replace(item, generation=generation))
        target = file_name(item.name)
        tmp = self.directory / f"{_TMP}{secrets.token_hex(8)}"
        replace_file(tmp, self.directory / target, data)
        self._marks.note(item.name, generation)
        self._refused.pop(target, None)
        return True

    def _remove(self, name: SecretName) -> bool:
        target = file_name(name)
        try:
            (self.directory / target).unlink()
        except FileNotFoundError:
            return False
        # One past the removed file's generation: putting it back is a rollback.
        self._marks.note(name, self._marks.seen(name) + 1)
        self._refused.pop(target, None)
        return True

    # -- at start ------------------------------------------------------------------

    def restore(
        self, backend_of: Callable[[SecretName], str | None], *, max_stale: float
    ) -> list[Persisted]:
        """The entries to seed the cache with (blocking: call in a thread)."""
        restored: list[Persisted] = []
        with self._writing:
            for path in sorted(self.directory.iterdir()):
                if path.name.startswith(_TMP):
                    with contextlib.suppress(OSError):
                        path.unlink()  # a write cut short by a crash
                    continue
                if path.suffix != SUFFIX:
                    continue
                item = self._read(path)
                if item is not None and self._usable(path, item, backend_of, max_stale):
                    restored.append(item)
            self._marks.flush()
        return restored

    def _read(self, path: Path) -> Persisted | None:
        try:
            raw = _read_file(path, self._max_file)
            item = decode(self._key, raw, stored_as=path.name)
        except UnknownKeyId as exc:
            self._refuse(path, f"foreign: {exc.message}")
            return None
        except IntegrityError as exc:
            self._refuse(path, f"tampered: {exc.message}")
            return None
        except OSError as exc:
            log.warning("cache.persisted_unreadable", file=str(path), error=exc.strerror)
            return None
        seen = self._marks.seen(item.name)
        if item.generation < seen:
            self._refuse(
                path,
                f"rolled back: generation {item.generation} of {item.name!r}, "
                f"generation {seen} was already written (an older file put back?)",
            )
            return None
        self._marks.note(item.name, item.generation)
        return item

    def _usable(
        self,
        path: Path,
        item: Persisted,
        backend_of: Callable[[SecretName], str | None],
        max_stale: float,
    ) -> bool:
        reason = None
        if backend_of(item.name) != item.backend:
            reason = "another backend serves the name now"
        elif self._wall() - item.confirmed_at > max_stale:
            reason = "its backend last confirmed it longer than max_stale ago"
        if reason is None:
            return True
        log.info("cache.persisted_dropped", secret=item.name, reason=reason)
        with contextlib.suppress(OSError):
            self._remove(item.name)
        return False

    def _refuse(self, path: Path, reason: str) -> None:
        self._refused[path.name] = reason
        log.error(
            "cache.persisted_refused",
            file=str(path),
            reason=reason,
            policy="never served; replaced when the secret is cached again, or remove the file",
        )


def _read_file(path: Path, limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise IntegrityError("not a regular file")
        raw = handle.read(limit + 1)
    if len(raw) > limit:
        raise IntegrityError("larger than any entry can be")
    return raw


def open_persister(
    settings: CacheSection, state: StateDir | None, *, max_secret_bytes: int
) -> DiskPersister | None:
    """The persister `[cache]` asks for (None without persist_dir). Blocking: loads
    the key and creates or checks the directory. Raises ConfigError naming the key."""
    if settings.persist_dir is None or settings.persist_key_file is None:
        return None
    key = load_persist_key(settings.persist_key_file)
    directory = settings.persist_dir
    check_private_dir(directory, f"cache.persist_dir {directory}")
    marks = GenerationMarks(state, directory, kind="cache-persist")
    return DiskPersister(directory, key, marks, max_secret_bytes=max_secret_bytes)


def check_persist_settings(settings: CacheSection) -> None:
    """`secretd check`: the key loads and an existing directory is acceptable."""
    if settings.persist_dir is None or settings.persist_key_file is None:
        return
    load_persist_key(settings.persist_key_file).wipe()
    if settings.persist_dir.exists():
        where = f"cache.persist_dir {settings.persist_dir}"
        check_private_dir(settings.persist_dir, where, create=False)


def load_persist_key(path: Path) -> StoreKey:
    from secretd.store.keyfile import load_key_file

    try:
        return load_key_file(path)
    except KeyFileError as exc:
        text = exc.message.replace("store key file", "cache.persist_key_file", 1)
        text = text.replace("`secretd store init`", "`secretd cache init-key`")
        raise ConfigError(text) from None
