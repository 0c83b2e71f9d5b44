"""Who still reads what: each secret's last read and read count, never a value.

Every surface that hands a value out notes the read here: the API's one read
path (`/v1/secrets`, the AWS- and Vault-compatible routes, and so `secretd
exec`), template renders and systemd credentials. `note` is a dict update, cheap
enough for the hot path.

The counts survive restarts in the agent's state directory, as the document
`usage.json`:

    {"since": 1767268800.0,
     "secrets": {"db/app": {"last_read": 1767355200.5, "reads": 1234}, ...}}

(`since`: when recording began, so a report can say how far back it knows.)
The document is written by a supervised task every FLUSH_INTERVAL when
something changed, and once more at stop: a crash loses at most that last
moment. A damaged document is read as empty, never trusted in part. Reads of
more than MAX_TRACKED distinct names are not recorded (names come only from
reads that served a value, so this bounds memory, not honesty, in practice).

`secretd unused` and `secretd status --json` show it through `GET /v1/usage`
(api/usage.py); `secretd_secret_last_read_timestamp_seconds` exports it for
declared secrets (docs/client.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

import structlog

from secretd.model import SecretName, name_problem
from secretd.state import StateDir

log = structlog.get_logger(__name__)

DOCUMENT = "usage.json"
FLUSH_INTERVAL = 30.0
MAX_TRACKED = 1_000_000


class UsageSink(Protocol):
    """Where a surface that served a value notes the read."""

    def note(self, name: SecretName) -> None:
        """`name` was just read (a value was handed out)."""
        ...


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """One secret's reads: when last (epoch seconds) and how many, since `Usage.since`."""

    last_read: float
    reads: int


class Usage:
    """Per-secret last read and read count, persisted in the state directory."""

    def __init__(
        self,
        state: StateDir | None,
        *,
        wall: Callable[[], float] = time.time,
        flush_interval: float = FLUSH_INTERVAL,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self._state = state
        self._wall = wall
        self._flush_interval = flush_interval
        self._max_tracked = max_tracked
        # name -> [last read, reads]: a list, so a read updates it in place.
        self._reads: dict[SecretName, list[float]] = {}
        self._dirty = False
        self.since = wall()
        if state is not None:
            self._load(state.read(DOCUMENT))

    def note(self, name: SecretName) -> None:
        """Record one read of `name` now: O(1), no I/O."""
        seen = self._reads.get(name)
        if seen is None:
            if len(self._reads) >= self._max_tracked:
                return
            self._reads[name] = [self._wall(), 1]
        else:
            seen[0] = self._wall()
            seen[1] += 1
        self._dirty = True

    def get(self, name: SecretName) -> ReadRecord | None:
        seen = self._reads.get(name)
        return None if seen is None else ReadRecord(seen[0], int(seen[1]))

    def records(self) -> dict[SecretName, ReadRecord]:
        """Every secret read since `since`, with its record."""
        return {name: ReadRecord(seen[0], int(seen[1])) for name, seen in self._reads.items()}

    def flush(self) -> None:
        """Write the document now if anything changed (blocking; failures are logged)."""
        document = self._take_document()
        if document is not None:
            self._write(document)

    async def flush_forever(self) -> None:
        """Flush every `flush_interval` (the writing in a thread) until cancelled,
        then once more."""
        try:
            while True:
                await asyncio.sleep(self._flush_interval)
                document = self._take_document()
                if document is not None:
                    await asyncio.to_thread(self._write, document)
        finally:
            self.flush()

    def _take_document(self) -> dict[str, Any] | None:
        """The document to write (built on the loop, where `note` runs), or None."""
        if self._state is None or not self._dirty:
            return None
        self._dirty = False
        secrets = {
            str(name): {"last_read": seen[0], "reads": int(seen[1])}
            for name, seen in self._reads.items()
        }
        return {"since": self.since, "secrets": secrets}

    def _write(self, document: Mapping[str, Any]) -> None:
        assert self._state is not None
        try:
            self._state.write(DOCUMENT, dict(document))
        except OSError as exc:
            self._dirty = True
            log.warning("usage.unsaved", document=DOCUMENT, error=exc.strerror)

    def _load(self, document: Mapping[str, Any]) -> None:
        since = document.get("since")
        if _number(since):
            self.since = float(since)
        else:
            self._dirty = True  # a first start: remember from when on reads are known
        secrets = document.get("secrets")
        if not isinstance(secrets, dict):
            return
        for raw, item in secrets.items():
            if not isinstance(item, dict) or name_problem(raw) is not None:
                continue
            last, reads = item.get("last_read"), item.get("reads")
            if not isinstance(reads, int) or isinstance(reads, bool) or reads <= 0:
                continue
            if _number(last) and len(self._reads) < self._max_tracked:
                self._reads[SecretName(raw)] = [float(last), reads]


def _number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
