"""Watching the file store's `secrets/` directory for changed records.

watchfiles' defaults (1600 ms debounce, 50 ms step) would add well over a
second to every rotation; the store writes one file per secret with one atomic
rename, so there is no burst worth waiting for. We wait a few milliseconds for
companions and check often. Where inotify is unavailable or fails (an inotify
limit, some network file systems), we fall back to polling and, after any
restart of the watcher, report every record once, because changes may have
been missed in between.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchfiles import Change, awatch

from secretd.store.format import RECORD_SUFFIX

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WatchTuning:
    """How the watcher trades CPU for latency (milliseconds)."""

    debounce_ms: int = 5  # after a first event, wait this long for more
    step_ms: int = 5  # how often the watcher thread checks for events
    rust_timeout_ms: int = 500  # bounds how long stopping the watcher can take
    poll_delay_ms: int = 50  # polling fallback interval
    force_polling: bool | None = None  # None: $WATCHFILES_FORCE_POLLING decides
    retry_seconds: float = 1.0  # pause before re-creating a failed watcher


def is_record_path(_change: Change, path: str) -> bool:
    """Only record files: temp files are dot-prefixed and renamed into place."""
    base = path.rsplit("/", 1)[-1]
    return base.endswith(RECORD_SUFFIX) and not base.startswith(".")


def _all_records(directory: Path) -> list[tuple[Path, bool]]:
    try:
        return [(p, False) for p in directory.iterdir() if is_record_path(Change.modified, p.name)]
    except OSError:
        return []


class _StopSignal:
    """What awatch polls from its thread to know when to stop: the backend
    closing, or this one watcher ending. awatch *sets* its stop event when its
    consumer is cancelled; that must end this watcher only, never close the
    backend or other watchers, so `set()` here touches this watcher's flag alone."""

    def __init__(self, closing: asyncio.Event) -> None:
        self._closing = closing
        self._ended = False

    def is_set(self) -> bool:
        return self._ended or self._closing.is_set()

    def set(self) -> None:
        self._ended = True


async def watch_paths(
    directory: Path, stop: asyncio.Event, tuning: WatchTuning
) -> AsyncIterator[list[tuple[Path, bool]]]:
    """Yield batches of (record path, deleted) until `stop` is set (the backend
    closes) or the consumer stops iterating."""
    polling = tuning.force_polling
    restarted = False
    signal = _StopSignal(stop)
    while not signal.is_set():
        try:
            watcher = awatch(
                directory,
                watch_filter=is_record_path,
                debounce=tuning.debounce_ms,
                step=tuning.step_ms,
                rust_timeout=tuning.rust_timeout_ms,
                stop_event=signal,
                recursive=False,
                force_polling=polling,
                poll_delay_ms=tuning.poll_delay_ms,
            )
            if restarted:
                yield await asyncio.to_thread(_all_records, directory)
            async for batch in watcher:
                yield [(Path(path), change == Change.deleted) for change, path in batch]
            return  # awatch ends only when the signal is set
        except BaseException as exc:
            if not isinstance(exc, OSError | RuntimeError):
                signal.set()  # cancelled or closed: end this watcher's thread
                with contextlib.suppress(RuntimeError):  # "already running": it ends itself
                    await watcher.aclose()
                raise
            log.warning(
                "store.watch_failed",
                directory=str(directory),
                error=f"{type(exc).__name__}: {exc}",
                fallback="polling",
            )
            polling, restarted = True, True
            try:
                async with asyncio.timeout(tuning.retry_seconds):
                    await stop.wait()
            except TimeoutError:
                pass
