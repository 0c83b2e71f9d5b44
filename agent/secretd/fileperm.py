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


def check_private_file(
    path: Path,
    *,
    what: str,
    secret: bool,
    error: type[SecretdError] = ConfigError,
) -> os.stat_result:
    """Refuse `path` unless it is a regular file (not a symlink) with a trusted
    owner that no group or other can write, and - when `secret` - no group or
    other can read.

    Returns its stat result. Raises `error` with a message saying what to fix.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise error(f"{what} {path}: cannot stat ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise error(f"{what} {path}: is a symlink; point the config at the real file")
    judge(st, path, what=what, secret=secret, error=error)
    return st


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
    `check_private_file`'s rules (no symlink, trusted owner, mode)."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise error(f"{what} {path}: is a symlink; point the config at the real file") from None
        raise error(f"{what} {path}: cannot open ({exc.strerror})") from None
    try:
        judge(os.fstat(fd), path, what=what, secret=secret, error=error)
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


def _who(uid: int) -> str:
    with contextlib.suppress(KeyError):
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    return f"uid {uid}"
