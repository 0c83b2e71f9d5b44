"""Rollback high-water marks of one file store: the highest generation seen per secret.

Every record of the store carries a generation that grows with each write. A
record whose generation is lower than one already seen is an older file put
back (a restored backup, or an attacker replaying an authentic old record), and
the file backend refuses it. The marks live in the agent's state directory -
beside the store, never inside it, so whoever can put back an old record cannot
put back old marks with it - and so survive reloads and restarts.

Marks are written at most once per `FLUSH_INTERVAL` (and on close): a crash
can forget the increases of that last moment, nothing older. To accept a
deliberately restored store, stop the agent and delete the document named in
the refusal (docs/store.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

import structlog

from secretd.model import SecretName
from secretd.state import StateDir

log = structlog.get_logger(__name__)

FLUSH_INTERVAL = 1.0


def document_name(store_root: Path, kind: str = "file-store") -> str:
    """The state document of the store at `store_root` (by its resolved path).
    `kind` tells apart the users of marks (the persisted cache has its own)."""
    digest = hashlib.sha256(str(store_root.resolve()).encode()).hexdigest()[:24]
    return f"{kind}-{digest}.json"


class GenerationMarks:
    """Highest generation seen per secret; persisted when a state directory is given."""

    def __init__(
        self, state: StateDir | None, store_root: Path, *, kind: str = "file-store"
    ) -> None:
        self._state = state
        self._root = store_root
        self.document = document_name(store_root, kind)
        self._marks: dict[str, int] = {}
        self._dirty = False
        self._lock = threading.Lock()  # noted from worker threads, flushed from the loop
        if state is not None:
            self._marks = _valid_marks(state.read(self.document).get("generations"))

    @property
    def where(self) -> str:
        """Where the marks are kept, for messages."""
        if self._state is None:
            return "memory (no state_dir)"
        return str(self._state.path / self.document)

    def seen(self, name: SecretName) -> int:
        with self._lock:
            return self._marks.get(name, 0)

    def note(self, name: SecretName, generation: int) -> None:
        """Raise the mark of `name` to `generation` (never lowers it)."""
        with self._lock:
            if generation > self._marks.get(name, 0):
                self._marks[name] = generation
                self._dirty = True

    def flush(self) -> None:
        """Write the marks if they changed. Failures are logged; marks stay in memory."""
        if self._state is None:
            return
        with self._lock:
            if not self._dirty:
                return
            marks = {str(name): generation for name, generation in self._marks.items()}
            document = {"store": str(self._root), "generations": marks}
            self._dirty = False
        try:
            self._state.write(self.document, document)
        except OSError as exc:
            with self._lock:
                self._dirty = True
            log.warning("store.marks_unsaved", document=self.document, error=exc.strerror)

    async def flush_forever(self) -> None:
        """Flush every FLUSH_INTERVAL until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL)
                await asyncio.to_thread(self.flush)
        finally:
            self.flush()


def _valid_marks(raw: object) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {
        str(name): value
        for name, value in raw.items()
        if isinstance(value, int) and not isinstance(value, bool) and value > 0
    }
