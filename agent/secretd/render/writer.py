"""Atomic, symlink-proof writes of rendered files (docs/render.md, "Writing files").

Every step works relative to a descriptor of the destination's directory, so
nothing is resolved twice by path:

1. open the directory from `/`, one component at a time, refusing any
   directory on the way that another user owns or can write, and any symlink
   such a user could have planted (render.dirs); the destination's own
   directory may not be writable by group or others at all;
2. `lstat` the destination through the directory: a symlink or a non-regular
   file is refused; a regular file with the same bytes, mode and owner means
   there is nothing to do (no write, and the caller runs no command);
3. create a uniquely named temporary file beside it with
   `O_CREAT|O_EXCL|O_NOFOLLOW`, set owner and mode on the descriptor, write
   every byte (short writes looped), `fsync`;
4. `rename` it over the destination (both names relative to the directory)
   and `fsync` the directory.

Any failure removes the temporary file, leaves the old destination as it was,
and raises RenderError naming the destination and the reason (no contents).
This module is synchronous; the runner calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from secretd.durable import write_all
from secretd.errors import RenderError
from secretd.render.dirs import open_trusted_directory

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


@dataclass(frozen=True, slots=True)
class FileSpec:
    """Where and how a rendered file is written. `uid`/`gid` None: leave as created.
    `uid` (the template's user) may also own the directories on the way."""

    path: Path
    mode: int = 0o600
    uid: int | None = None
    gid: int | None = None


def write_atomic(spec: FileSpec, data: bytes) -> bool:
    """Make `spec.path` hold exactly `data` with `spec`'s mode and owner.

    Returns True when the file was written, False when it already matched.
    Raises RenderError on any refusal or failure; the old file is then untouched.
    """
    dir_fd = _open_directory(spec)
    try:
        if _unchanged(dir_fd, spec, data):
            return False
        temp = _write_temp(dir_fd, spec, data)
        try:
            os.rename(temp, spec.path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            _discard(dir_fd, temp)
            raise _failure(spec.path, "cannot rename into place", exc) from None
        try:
            os.fsync(dir_fd)
        except OSError as exc:
            # The new file is in place; only its durability across a crash is in doubt.
            reason = exc.strerror or type(exc).__name__
            raise RenderError(
                f"{spec.path}: written, but the directory fsync failed ({reason})"
            ) from None
        return True
    finally:
        os.close(dir_fd)


def check_destination(spec: FileSpec, *, also_trusted: Collection[int] = ()) -> None:
    """`secretd check`: would `write_atomic` accept this destination? Its directory
    is opened by the same rules, and an existing file must be a regular one;
    nothing is written. `also_trusted`: owners the agent will run as.
    Raises RenderError naming the directory or file and the rule."""
    dir_fd = _open_directory(spec, also_trusted)
    try:
        _existing(dir_fd, spec)
    finally:
        os.close(dir_fd)


def _open_directory(spec: FileSpec, also_trusted: Collection[int] = ()) -> int:
    path = spec.path
    if not path.name or path.name in (".", ".."):
        raise RenderError(f"{path}: not a file path")
    owners = {0, os.geteuid(), *also_trusted} | ({spec.uid} if spec.uid is not None else set())
    return open_trusted_directory(path.parent, owners, dest=path)


def _unchanged(dir_fd: int, spec: FileSpec, data: bytes) -> bool:
    """True when the destination already is a regular file with these bytes, mode, owner."""
    st = _existing(dir_fd, spec)
    if st is None:
        return False
    if stat.S_IMODE(st.st_mode) != spec.mode or st.st_size != len(data):
        return False
    if (spec.uid is not None and st.st_uid != spec.uid) or (
        spec.gid is not None and st.st_gid != spec.gid
    ):
        return False
    return _read_existing(dir_fd, spec.path, len(data)) == data


def _existing(dir_fd: int, spec: FileSpec) -> os.stat_result | None:
    """The destination's lstat, None when absent; a symlink or non-file is refused."""
    try:
        st = os.stat(spec.path.name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _failure(spec.path, "cannot stat", exc) from None
    if stat.S_ISLNK(st.st_mode):
        raise RenderError(f"{spec.path}: is a symlink; refusing to write through or over it")
    if not stat.S_ISREG(st.st_mode):
        raise RenderError(f"{spec.path}: exists and is not a regular file")
    return st


def _read_existing(dir_fd: int, path: Path, size: int) -> bytes | None:
    try:
        fd = os.open(path.name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None  # vanished or swapped meanwhile: just rewrite it
    try:
        chunks, remaining = [], size + 1  # one more byte tells us it grew
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _write_temp(dir_fd: int, spec: FileSpec, data: bytes) -> str:
    """Create, fill and fsync the temporary file; return its name (relative to dir_fd)."""
    for _attempt in range(16):
        temp = f".{spec.path.name}.{secrets.token_hex(6)}.secretd-tmp"
        try:
            fd = os.open(temp, _TEMP_FLAGS, 0o600, dir_fd=dir_fd)
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise _failure(spec.path, "cannot create a temporary file beside it", exc) from None
    else:
        raise RenderError(f"{spec.path}: cannot find a free temporary name beside it")
    try:
        try:
            if spec.uid is not None or spec.gid is not None:
                os.fchown(
                    fd, -1 if spec.uid is None else spec.uid, -1 if spec.gid is None else spec.gid
                )
            os.fchmod(fd, spec.mode)  # after chown: chown may clear set-id bits
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _discard(dir_fd, temp)
        raise _failure(spec.path, "cannot write", exc) from None
    return temp


def _discard(dir_fd: int, temp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(temp, dir_fd=dir_fd)


def _failure(path: Path, what: str, exc: OSError) -> RenderError:
    reason = exc.strerror or type(exc).__name__
    return RenderError(f"{path}: {what} ({reason}); the previous file is unchanged")
