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


async def watch_paths(
    directory: Path, stop: asyncio.Event, tuning: WatchTuning
) -> AsyncIterator[list[tuple[Path, bool]]]:
    """Yield batches of (record path, deleted) until `stop` is set."""
    polling = tuning.force_polling
    restarted = False
    while not stop.is_set():
        try:
            watcher = awatch(
                directory,
                watch_filter=is_record_path,
                debounce=tuning.debounce_ms,
                step=tuning.step_ms,
                rust_timeout=tuning.rust_timeout_ms,
                stop_event=stop,
                recursive=False,
                force_polling=polling,
                poll_delay_ms=tuning.poll_delay_ms,
            )
            if restarted:
                yield await asyncio.to_thread(_all_records, directory)
            async for batch in watcher:
                yield [(Path(path), change == Change.deleted) for change, path in batch]
            return  # awatch ends only when `stop` is set
        except (OSError, RuntimeError) as exc:
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
