"""Checks that a file the agent trusts is safe to trust.

The files: the config, template sources, store key files, the store directory,
the TCP token file, Vault token / AppRole files and CA file, and the audit log.
A file others can write could be swapped for an attacker's; a key file others
can read is already leaked; a file another user *owns* is theirs to rewrite
whatever its mode says. Root bypasses permissions, so we judge by mode bits and
ownership, never by trying access.

Owners we trust: root and the user we run as. `secretd check` run as root also
trusts the service user (`secretd`, the packaged unit's `User=`), so it can
validate the installed files before the service starts (`trusting_service_user`).

Reading through `read_private_file` checks the very descriptor it reads, so a
file swapped between the check and the read is never used.

A path whose last component is a symlink (a Kubernetes ConfigMap or Secret
mount, `..data/...`; Debian alternatives) is followed only when no untrusted
user could have made or redirected it: it is walked from `/` one component at
a time, each step opened relative to the directory before it (`O_NOFOLLOW`),
and every directory on the way - the link's own included - must have a
trusted owner and not be writable by group or others (above the file's own
directory a sticky one such as /tmp is accepted, as long as a link in it is
owned by a trusted user). The file itself then passes the same rules as any
other, checked on the descriptor that is read.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

from secretd.errors import ConfigError, SecretdError

SERVICE_USER = "secretd"
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_SYMLINKS = 40  # as the kernel's own limit on a path walk
# uids trusted beyond root and ourselves, for the duration of a `check`.
_also_trusted: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "secretd_also_trusted", default=frozenset()
)


@contextlib.contextmanager
def trusting_service_user() -> Iterator[None]:
    """While inside, a root process also trusts the service user's files (`check`)."""
    extra: frozenset[int] = frozenset()
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            extra = frozenset({pwd.getpwnam(SERVICE_USER).pw_uid})
    token = _also_trusted.set(extra)
    try:
        yield
    finally:
        _also_trusted.reset(token)


def trusted_owners() -> frozenset[int]:
    """root, the user we run as, and (inside `trusting_service_user`) the service user."""
    return frozenset({0, os.geteuid()}) | _also_trusted.get()


def owner_problem(uid: int) -> str | None:
    """Why a file owned by `uid` is not trusted, or None when it is."""
    owners = trusted_owners()
    if uid in owners:
        return None
    names = ", ".join(_who(owner) for owner in sorted(owners - {0}))
    rule = "root" + (f" or {names}" if names else "")
    return f"owned by {_who(uid)}; it must be owned by {rule}"


def open_private_file(
    path: Path,
    *,
    what: str,
    secret: bool,
    error: type[SecretdError] = ConfigError,
) -> int:
    """A read-only descriptor of `path` that passed the rules: a regular file with a
    trusted owner that no group or other can write (nor read, when `secret`),
    reached without a symlink an untrusted user could have made. The caller
    closes it. Raises `error` with a message saying what to fix."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file") from None
    except OSError as exc:
        if exc.errno != errno.ELOOP:  # ELOOP: O_NOFOLLOW met a symlink
            raise error(f"{what} {path}: cannot open ({exc.strerror})") from None
        fd = _LinkWalk(path, what, error).open()
    try:
        judge(os.fstat(fd), path, what=what, secret=secret, error=error)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_private_file(
    path: Path,
    *,
    what: str,
    secret: bool,
    error: type[SecretdError] = ConfigError,
) -> os.stat_result:
    """`open_private_file`'s check alone: the file's stat result."""
    fd = open_private_file(path, what=what, secret=secret, error=error)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def check_private_dir(path: Path, where: str, *, create: bool = True) -> None:
    """Create directory `path` (0700) if missing when `create`, then require that it
    is a directory, owned by root or us, that group and others cannot write (the
    agent keeps state there that others must not rewrite). Raises ConfigError
    starting with `where` and saying what to fix."""
    try:
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create or open ({exc.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{where}: not a directory")
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"{where}: owned by uid {st.st_uid}; chown it to this user")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise ConfigError(f"{where}: mode {mode:04o} lets others write it; chmod 0700 {path}")


def judge(
    st: os.stat_result,
    path: Path,
    *,
    what: str,
    secret: bool,
    error: type[SecretdError] = ConfigError,
    directory: bool = False,
) -> None:
    """The owner and mode rules on an already-made stat (of a descriptor, ideally)."""
    kind_ok = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    if not kind_ok:
        raise error(f"{what} {path}: not a {'directory' if directory else 'regular file'}")
    problem = owner_problem(st.st_uid)
    if problem is not None:
        raise error(f"{what} {path}: {problem}")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise error(f"{what} {path}: mode {mode:04o} lets others write it; chmod go-w {path}")
    if secret and mode & 0o044:
        raise error(f"{what} {path}: mode {mode:04o} lets others read it; chmod 0600 {path}")


def read_private_file(
    path: Path,
    *,
    what: str,
    secret: bool,
    limit: int,
    error: type[SecretdError] = ConfigError,
) -> bytes:
    """The first `limit` + 1 bytes of `path`, read from a descriptor that passed
    `open_private_file`'s rules."""
    fd = open_private_file(path, what=what, secret=secret, error=error)
    try:
        chunks: list[bytes] = []
        remaining = limit + 1
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 1 << 16))):
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{what} {path}: cannot read ({exc.strerror})") from None
    finally:
        os.close(fd)


class _LinkWalk:
    """`path` opened from `/` one component at a time (see the module docstring)."""

    def __init__(self, path: Path, what: str, error: type[SecretdError]) -> None:
        self._path = path if path.is_absolute() else Path.cwd() / path
        self._what = what
        self._error = error
        self._fd = -1
        self._where = Path("/")
        self._links = 0

    def open(self) -> int:
        """The file's descriptor (not yet judged: the caller does)."""
        try:
            self._enter_root()
            pending = list(self._path.parts[1:])
            while pending:
                part = pending.pop(0)
                target = self._link_target(part)
                if target is not None:
                    pending[:0] = [p for p in target.split("/") if p and p != "."]
                    if target.startswith("/"):
                        self._enter_root()
                elif pending:
                    self._enter(part)
                else:
                    return self._open_file(part)
            raise self._fail("is not a file")
        finally:
            if self._fd >= 0:
                os.close(self._fd)

    def _enter_root(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._where = -1, Path("/")
        self._fd = os.open("/", _DIR_FLAGS)
        self._judge_directory(final=False)

    def _enter(self, part: str) -> None:
        try:
            fd = os.open(part, _DIR_FLAGS, dir_fd=self._fd)
        except OSError as exc:
            raise self._fail(f"cannot open {self._where / part} ({exc.strerror})") from None
        os.close(self._fd)
        self._fd = fd
        self._where = self._where.parent if part == ".." else self._where / part
        self._judge_directory(final=False)

    def _link_target(self, part: str) -> str | None:
        """The target when `part` is a symlink we may follow; None when it is not one."""
        try:
            st = os.stat(part, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            raise self._error(f"{self._what} {self._path}: no such file") from None
        except OSError as exc:
            raise self._fail(f"cannot stat {self._where / part} ({exc.strerror})") from None
        if not stat.S_ISLNK(st.st_mode):
            return None
        if st.st_uid not in trusted_owners():  # in a sticky directory others can write
            raise self._fail(f"symlink {self._where / part} is {owner_problem(st.st_uid)}")
        self._links += 1
        if self._links > MAX_SYMLINKS:
            raise self._fail("too many symlinks")
        return os.readlink(part, dir_fd=self._fd)

    def _open_file(self, part: str) -> int:
        self._judge_directory(final=True)
        try:
            return os.open(part, _READ_FLAGS, dir_fd=self._fd)
        except OSError as exc:  # ELOOP: made a symlink since we looked
            raise self._fail(f"cannot open ({exc.strerror})") from None

    def _judge_directory(self, *, final: bool) -> None:
        st = os.fstat(self._fd)
        problem = owner_problem(st.st_uid)
        if problem is not None:
            raise self._fail(f"directory {self._where} is {problem}")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022 and (final or not mode & stat.S_ISVTX):
            raise self._fail(
                f"directory {self._where} is writable by group or others (mode {mode:04o})"
            )

    def _fail(self, problem: str) -> SecretdError:
        return self._error(
            f"{self._what} {self._path}: reached through a symlink, and {problem}; "
            "every directory on the way must be owned by root (or the agent's user) "
            "and not writable by others"
        )


def _who(uid: int) -> str:
    with contextlib.suppress(KeyError):
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    return f"uid {uid}"
