"""Durable file writes shared by the store, the cache's disk copy and the state
directory: write every byte, replace a file atomically, make a rename durable.

`replace_file` is the classic sequence: a new temporary file (0600, `O_EXCL |
O_NOFOLLOW`, so a planted file or link is never written through) in the target's
directory, every byte written and fsynced, then renamed over the target. A
failure anywhere leaves the target as it was and removes the temporary file.
The directory is not fsynced there: a caller that writes many files does that
once (`fsync_dir`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`, looping over short writes."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # pragma: no cover - os.write raises rather than return 0
            raise OSError(0, "write made no progress")
        view = view[written:]


def replace_file(
    tmp: Path, target: Path, data: bytes, *, prepare: Callable[[int], None] | None = None
) -> None:
    """Create `tmp`, let `prepare` set owner or mode on its descriptor, write `data`,
    fsync, rename over `target`. Raises OSError; `tmp` is gone either way."""
    fd = os.open(tmp, _NEW_FILE, 0o600)
    try:
        try:
            if prepare is not None:
                prepare(fd)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.rename(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename or create in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
