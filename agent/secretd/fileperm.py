"""Checks that a sensitive file (store key, TCP token, config) is safe to trust.

A file others can write could be swapped for an attacker's; a key file others
can read is already leaked. Root bypasses permissions, so we judge by mode bits
and ownership, never by trying access.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from secretd.errors import ConfigError, SecretdError


def check_private_file(
    path: Path,
    *,
    what: str,
    secret: bool,
    error: type[SecretdError] = ConfigError,
) -> os.stat_result:
    """Refuse `path` unless it is a regular file (not a symlink) owned by root or
    us (any owner when we are root) that no group or other can write, and - when
    `secret` - no group or other can read.

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
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path}: not a regular file")
    # Root may check files of the service user (e.g. `secretd check` before start);
    # anyone else trusts only root's files and its own.
    if os.geteuid() != 0 and st.st_uid not in (0, os.geteuid()):
        raise error(f"{what} {path}: owned by uid {st.st_uid}; chown it to root or this user")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise error(f"{what} {path}: mode {mode:04o} lets others write it; chmod go-w {path}")
    if secret and mode & 0o044:
        raise error(f"{what} {path}: mode {mode:04o} lets others read it; chmod 0600 {path}")
    return st
