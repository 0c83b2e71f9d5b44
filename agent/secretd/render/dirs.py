"""Open a rendered file's directory so that no other local user can redirect it.

The agent often runs as root and writes secrets into paths such as
`/run/app/app.conf`. Whoever can replace a directory on that path can make
root write the secret where they can read it, or into a directory of root's
choosing they could not otherwise write (CVE-2021-25741 and friends). So,
like OpenSSH's StrictModes, `open_trusted_directory` walks the path from `/`
one component at a time, each opened relative to the one before with
`O_NOFOLLOW | O_DIRECTORY`, and refuses:

- a directory (the destination's or any above it) owned by anyone but a
  trusted owner: root, the agent's own user, or the template's `user` (the
  file will be theirs anyway);
- a directory that group or others can write, unless it has the sticky bit
  (like /tmp, where nobody may rename another's entries); the destination's
  own directory may not be group/other-writable even with the sticky bit
  (anyone could plant names beside the file);
- a symlink, unless it sits in a directory no untrusted user can write (then
  only a trusted user could have made it, as with Debian's /var/run -> /run),
  or in a sticky directory and is owned by a trusted owner (the kernel's
  protected_symlinks rule). Its target is walked by the same rules.

Because every step is relative to a descriptor already checked, nothing can be
swapped between the check and the use. The final descriptor is what the
writer creates, renames and fsyncs relative to.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import stat
from collections.abc import Collection
from pathlib import Path

from secretd.errors import RenderError

MAX_SYMLINKS = 40  # as the kernel's own limit on a path walk
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_STEP_FLAGS = _DIR_FLAGS | os.O_NOFOLLOW
RULE = (
    "the destination's directory and every directory above it must be owned by root, "
    "the agent's user or the template's user, and not writable by group or others "
    "(above it, unless sticky like /tmp)"
)


def open_trusted_directory(directory: Path, owners: Collection[int], *, dest: Path) -> int:
    """A descriptor of `directory`, reached from `/` by the rules above.

    `dest` names the file in messages. Raises RenderError naming the directory
    (or symlink) at fault and the rule.
    """
    walk = _Walk(owners, dest)
    try:
        # Not resolve(): the walk itself follows symlinks, checking each one.
        walk.run(directory if directory.is_absolute() else Path.cwd() / directory)
    except BaseException:
        walk.close()
        raise
    return walk.take()


class _Walk:
    """One path walk: the descriptor reached so far, and the path it stands for."""

    def __init__(self, owners: Collection[int], dest: Path) -> None:
        self._owners = frozenset(owners)
        self._dest = dest
        self._fd = -1
        self._where = Path("/")
        self._links = 0

    def run(self, directory: Path) -> None:
        self._restart()
        pending = list(directory.parts[1:])
        while pending:
            part = pending.pop(0)
            target = self._step(part)
            if target is not None:  # a symlink: walk its target in its place
                pending[:0] = [p for p in target.split("/") if p and p != "."]
                if target.startswith("/"):
                    self._restart()
        self._check_final()

    def take(self) -> int:
        fd, self._fd = self._fd, -1
        return fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _restart(self) -> None:
        self.close()
        self._fd = os.open("/", _DIR_FLAGS)
        self._where = Path("/")
        self._check(os.fstat(self._fd))

    def _step(self, part: str) -> str | None:
        """Enter `part`; the symlink's target instead when it is a symlink we may follow."""
        where = self._where.parent if part == ".." else self._where / part
        try:
            fd = os.open(part, _STEP_FLAGS, dir_fd=self._fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise RenderError(
                    f"{self._dest}: cannot open its directory: {where} ({exc.strerror}); "
                    "the previous file is unchanged"
                ) from None
            return self._link(part, where)
        os.close(self._fd)
        self._fd, self._where = fd, where
        self._check(os.fstat(fd))
        return None

    def _link(self, part: str, where: Path) -> str:
        try:
            st = os.stat(part, dir_fd=self._fd, follow_symlinks=False)
            if not stat.S_ISLNK(st.st_mode):
                raise RenderError(f"{self._dest}: cannot open its directory: {where} is not one")
            target = os.readlink(part, dir_fd=self._fd)
        except OSError as exc:
            raise RenderError(
                f"{self._dest}: cannot open its directory: {where} ({exc.strerror})"
            ) from None
        parent_mode = stat.S_IMODE(os.fstat(self._fd).st_mode)
        if parent_mode & 0o022 and st.st_uid not in self._owners:
            # Anyone may put a symlink in a sticky, world-writable directory.
            raise RenderError(
                f"{self._dest}: refusing to write: symlink {where} is owned by "
                f"{_who(st.st_uid)} in a directory others can write; {RULE}"
            )
        self._links += 1
        if self._links > MAX_SYMLINKS:
            raise RenderError(f"{self._dest}: cannot open its directory: too many symlinks")
        return target

    def _check(self, st: os.stat_result) -> None:
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid not in self._owners:
            raise self._error(self._where, f"is owned by {_who(st.st_uid)}")
        if mode & 0o022 and not mode & stat.S_ISVTX:
            raise self._error(
                self._where, f"is writable by group or others (mode {mode:04o}) and not sticky"
            )

    def _check_final(self) -> None:
        mode = stat.S_IMODE(os.fstat(self._fd).st_mode)
        if mode & 0o022:
            raise RenderError(
                f"{self._dest}: directory {self._where} is writable by group or others "
                f"(mode {mode:04o}); use a directory only its owner can write"
            )

    def _error(self, where: Path, problem: str) -> RenderError:
        return RenderError(f"{self._dest}: refusing to write: directory {where} {problem}; {RULE}")


def _who(uid: int) -> str:
    with contextlib.suppress(KeyError):
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    return f"uid {uid}"
