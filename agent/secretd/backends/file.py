"""The file backend: serves the envelope-encrypted file store (store/) to the cache.

Reading, verifying and decrypting are blocking work, so they run in a thread
under `asyncio.timeout(config.timeout)`. Errors are mapped at this boundary:

    NotFound (no secret, version or stage)      -> NotFound, as it is
    StoreError (tampered, unknown key id, ...)  -> BadBackendAnswer (the cache keeps the last good)
    TooLarge (over limits.max_secret_bytes)      -> BadBackendAnswer
    OSError (permissions, I/O)                   -> BackendUnavailable
    timeout                                      -> BackendTimeout

Each record carries a generation that grows with every write; a record whose
generation is lower than one already seen (a replayed or restored older file)
is refused. The marks survive reloads (the backend object is kept) and
restarts (backends.file_marks, in the agent's state directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import structlog

from secretd.backends.file_marks import GenerationMarks
from secretd.backends.file_watch import WatchTuning, watch_paths
from secretd.config import FileBackendConfig
from secretd.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadBackendAnswer,
    ConfigError,
    NotFound,
    StoreError,
    TooLarge,
    UnknownKeyId,
)
from secretd.fileperm import owner_problem
from secretd.model import CURRENT, Fetched, SecretName
from secretd.state import StateDir
from secretd.store.keyfile import Keyring
from secretd.store.store import FileStore

log = structlog.get_logger(__name__)

_StatKey = tuple[int, int, int]
_T = TypeVar("_T")
_LEARN_INTERVAL = 1.0  # seconds between re-reads of store.json for new keys


async def open_backend(
    name: str, config: FileBackendConfig, *, max_secret_bytes: int, state: StateDir | None = None
) -> FileBackend:
    """Open the store at `config.path` with its keyring (key_file, else the one
    recorded by `store init`, plus old_key_files) and its rollback marks (kept in
    `state` when given, else in memory only). Raises ConfigError."""
    store = FileStore(config.path, max_secret_bytes=max_secret_bytes)
    try:
        keyring = await asyncio.to_thread(_open_keyring, store, config)
    except StoreError as exc:
        raise ConfigError(f"backend {name!r}: {exc.message}") from None
    except OSError as exc:
        raise ConfigError(f"backend {name!r}: {config.path}: {exc.strerror}") from None
    marks = await asyncio.to_thread(GenerationMarks, state, config.path)
    return FileBackend(name, store, keyring, timeout=config.timeout, marks=marks)


def _open_keyring(store: FileStore, config: FileBackendConfig) -> Keyring:
    store.layout.require_store()
    for directory in (store.root, store.layout.secrets_dir):
        st = directory.stat(follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o002:
            raise StoreError(f"{directory}: must be a directory others cannot write (chmod o-w)")
        problem = owner_problem(st.st_uid)  # its owner could roll records back
        if problem is not None:
            raise StoreError(f"store {directory}: {problem}")
    return store.keyring(config.key_file, config.old_key_files)


class FileBackend:
    """A WatchableBackend and ListableBackend over one store directory."""

    def __init__(
        self,
        name: str,
        store: FileStore,
        keyring: Keyring,
        *,
        timeout: float = 10.0,
        tuning: WatchTuning | None = None,
        marks: GenerationMarks | None = None,
    ) -> None:
        self.name = name
        self._store = store
        self._keyring = keyring
        self._timeout = timeout
        self._tuning = tuning or WatchTuning()
        self._stop = asyncio.Event()
        self._marks = marks or GenerationMarks(None, store.root)
        self._index: dict[str, tuple[_StatKey, SecretName]] = {}  # file name -> name
        self._index_lock = threading.Lock()  # the index is updated from worker threads
        self._key_lock = threading.Lock()
        self._keys_learnt_at = -_LEARN_INTERVAL

    @contextlib.contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        """Map store and OS errors to BackendError subclasses."""
        try:
            yield
        except NotFound:
            raise  # an answer, not a failure: passed on as it is
        except (StoreError, TooLarge) as exc:
            raise BadBackendAnswer(f"file backend {self.name!r}: {exc.message}") from None
        except OSError as exc:
            raise BackendUnavailable(
                f"file backend {self.name!r}: {what}: {exc.strerror or type(exc).__name__}"
            ) from None

    async def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        if self._stop.is_set():
            raise BackendUnavailable(f"file backend {self.name!r} is closed")
        try:
            async with asyncio.timeout(self._timeout):
                with self._mapped(what):
                    return await asyncio.to_thread(fn)
        except TimeoutError:
            raise BackendTimeout(
                f"file backend {self.name!r}: {what} took longer than {self._timeout:g}s"
            ) from None

    async def fetch(
        self, name: SecretName, *, version_id: str | None = None, stage: str | None = None
    ) -> Fetched:
        name = SecretName(name)

        def read() -> tuple[Fetched, int]:
            version, generation = self._store.open_version(
                name, self._keyring, version_id=version_id, stage=stage
            )
            return Fetched(name, version), generation

        fetched, generation = await self._call(f"reading {name!r}", self._learning(read))
        if generation < self._marks.seen(name):
            # A reader that opened the file just before a rename can see the older
            # one: read again before calling it a rollback.
            fetched, generation = await self._call(f"reading {name!r}", self._learning(read))
        self._note_generation(name, generation)
        return fetched

    def _learning(self, read: Callable[[], _T]) -> Callable[[], _T]:
        """`read`, retried once after learning new keys when a record names an
        unknown key id: after `secretd store rekey`, store.json names the new key,
        and the running agent picks it up without a restart."""

        def attempt() -> _T:
            try:
                return read()
            except UnknownKeyId:
                try:
                    learnt = self._learn_keys()
                except StoreError as exc:
                    log.warning("store.keys_unreadable", backend=self.name, error=exc.message)
                    learnt = False
                if not learnt:
                    raise
                return read()

        return attempt

    def _learn_keys(self) -> bool:
        """Add the keys store.json names; at most once a second. True if any was new."""
        with self._key_lock:
            now = time.monotonic()
            if now - self._keys_learnt_at < _LEARN_INTERVAL:
                return False
            self._keys_learnt_at = now
            learnt = False
            for key in self._store.recorded_keys():
                if self._keyring.add(key):
                    learnt = True
                    log.info("store.key_learnt", backend=self.name, key_id=key.key_id)
                else:
                    key.wipe()
            return learnt

    def _note_generation(self, name: SecretName, generation: int) -> None:
        seen = self._marks.seen(name)
        if generation < seen:
            raise BadBackendAnswer(
                f"file backend {self.name!r}: secret {name!r} went back from generation "
                f"{seen} to {generation} (an older file was put back?); to accept a restored "
                f"store, stop the agent and remove {self._marks.where}"
            )
        self._marks.note(name, generation)

    async def check(self) -> list[str]:
        """`secretd check`: every record verifies and its current version opens
        with the loaded keys (values are decrypted and dropped, never shown)."""
        return await asyncio.to_thread(self._check_records)

    def _check_records(self) -> list[str]:
        names, problems = self._store.names()
        for name in names:
            try:  # learning new keys as the running agent would
                self._learning(lambda: self._store.open_version(name, self._keyring))()  # noqa: B023
            except (StoreError, NotFound, TooLarge) as exc:
                problems.append(f"backend {self.name!r}: {exc.message}")
        return problems

    async def run(self) -> None:
        """Background work: keep the rollback marks saved. Runs until cancelled."""
        await self._marks.flush_forever()

    async def current_versions(self, names: Sequence[SecretName]) -> Mapping[SecretName, str]:
        def read() -> dict[SecretName, tuple[str, int]]:
            found: dict[SecretName, tuple[str, int]] = {}
            for raw in names:
                name = SecretName(raw)
                record = self._store.read_record(name, self._keyring)
                if record is not None:
                    found[name] = (record.stages[CURRENT], record.generation)
            return found

        found = await self._call("reading current versions", self._learning(read))
        for name, (_vid, generation) in found.items():
            self._note_generation(name, generation)
        return {name: vid for name, (vid, _generation) in found.items()}

    async def list_names(self, prefix: str = "") -> Sequence[SecretName]:
        names = await self._call("listing secrets", self._scan)
        return sorted(n for n in names if n.startswith(prefix))

    def _scan(self) -> list[SecretName]:
        """Every readable record's name, reading only files that changed since last time."""
        fresh: dict[str, tuple[_StatKey, SecretName]] = {}
        for path in self._store.layout.record_files():
            entry = self._index_entry(path)
            if entry is not None:
                fresh[path.name] = entry
        with self._index_lock:
            self._index = fresh
        return [name for _key, name in fresh.values()]

    def _index_entry(self, path: Path) -> tuple[_StatKey, SecretName] | None:
        """(stat key, name) of a record file; a damaged file keeps its last known name."""
        with self._index_lock:
            cached = self._index.get(path.name)
        try:
            st = path.stat(follow_symlinks=False)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if cached is not None and cached[0] == key:
                return cached
            entry = (key, self._store.name_of(path))
        except FileNotFoundError:
            return None
        except (StoreError, OSError) as exc:
            log.warning("store.record_skipped", backend=self.name, path=str(path), error=str(exc))
            return cached
        with self._index_lock:
            self._index[path.name] = entry
        return entry

    async def changes(self) -> AsyncIterator[SecretName]:
        """Yield the name of every record that was written, replaced or removed.

        The directory watch is in place by the time the first `__anext__()` first
        suspends: nothing written after that is missed. The names already on
        disk (needed to name later deletions) are learnt in parallel.
        """
        scanned = asyncio.ensure_future(self._call("listing secrets", self._scan))
        try:
            async for name in self._watched(scanned):
                yield name
        finally:
            if not scanned.done():
                scanned.cancel()
            with contextlib.suppress(asyncio.CancelledError, BackendError):
                await scanned

    async def _watched(
        self, scanned: asyncio.Future[list[SecretName]]
    ) -> AsyncIterator[SecretName]:
        async for batch in watch_paths(self._store.layout.secrets_dir, self._stop, self._tuning):
            if not scanned.done():
                with contextlib.suppress(BackendError):
                    await scanned
            names: dict[SecretName, None] = {}
            for path, deleted in batch:
                name = await asyncio.to_thread(self._changed_name, path, deleted)
                if name is not None:
                    names[name] = None
            for name in names:
                yield name

    def _changed_name(self, path: Path, deleted: bool) -> SecretName | None:
        if deleted:
            with self._index_lock:
                cached = self._index.pop(path.name, None)
        else:
            cached = self._index_entry(path)
        return cached[1] if cached is not None else None

    async def aclose(self) -> None:
        """Stop watchers and wipe the keys. Idempotent."""
        if not self._stop.is_set():
            self._stop.set()
            self._keyring.close()
            await asyncio.to_thread(self._marks.flush)
