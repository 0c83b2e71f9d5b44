"""The agent's Unix socket file (docs/api.md, docs/security.md).

Bind to a temporary name in the target directory, set mode and group, listen,
then rename over the final path, so no client ever sees the socket with the
wrong permissions. A socket file left by a dead agent (connect ->
ECONNREFUSED) is replaced; a live agent's is never stolen; anything that is
not a socket is refused. An inherited (socket-activated) socket is adopted as
is and never removed.
"""

from __future__ import annotations

import errno
import grp
import os
import secrets
import socket
import stat
from pathlib import Path

import structlog

from secretd.errors import ConfigError, SecretdError

log = structlog.get_logger(__name__)

MIN_BACKLOG = 1024
_SUN_PATH_MAX = 107  # 108 bytes including the terminating NUL


class ListenerError(SecretdError):
    """The socket cannot be created (in use by a live agent, not a socket, ...)."""


class UnixListener:
    """A listening Unix socket that we created (and remove on close) or adopted."""

    def __init__(self, sock: socket.socket, path: Path | None, inode: int | None) -> None:
        self.sock = sock
        self.path = path
        self._inode = inode

    @classmethod
    def create(
        cls, path: Path, *, mode: int, group: str | None, backlog: int = MIN_BACKLOG
    ) -> UnixListener:
        gid = _group_id(group)
        _check_path_free(path)
        tmp = path.parent / f".secretd-{secrets.token_hex(6)}.sock"
        if len(os.fsencode(tmp)) > _SUN_PATH_MAX or len(os.fsencode(path)) > _SUN_PATH_MAX:
            raise ConfigError(f"agent.socket {path}: path too long for a Unix socket (max 107)")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(os.fsdecode(tmp))
            # Before listen(): until then connect() is refused, so nobody can slip in.
            tmp.chmod(mode)
            if gid is not None:
                os.chown(tmp, -1, gid, follow_symlinks=False)
            sock.listen(max(backlog, MIN_BACKLOG))
            tmp.rename(path)
            inode = os.lstat(path).st_ino
        except OSError as exc:
            sock.close()
            tmp.unlink(missing_ok=True)
            raise ListenerError(f"agent.socket {path}: cannot create ({exc.strerror})") from None
        except BaseException:
            sock.close()
            tmp.unlink(missing_ok=True)
            raise
        sock.setblocking(False)
        log.info("socket.created", path=str(path), mode=f"{mode:04o}", group=group)
        return cls(sock, path, inode)

    @classmethod
    def adopt(cls, sock: socket.socket) -> UnixListener:
        """An already bound and listening socket (systemd socket activation)."""
        sock.setblocking(False)
        return cls(sock, None, None)

    def close(self) -> None:
        """Close, and remove the socket file if it is still the one we created."""
        self.sock.close()
        if self.path is None:
            return
        try:
            if os.lstat(self.path).st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass


def _group_id(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"agent.socket_group: no such group {group!r}") from None


def _check_path_free(path: Path) -> None:
    """Refuse a path holding a non-socket or a live agent's socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise ConfigError(
                f"agent.socket {path}: directory {path.parent} does not exist"
            ) from None
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenerError(f"agent.socket {path}: exists and is not a socket; remove it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fsdecode(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            log.info("socket.stale_replaced", path=str(path))
            return
        raise ListenerError(f"agent.socket {path}: cannot probe ({exc.strerror})") from None
    finally:
        probe.close()
    raise ListenerError(f"agent.socket {path}: another agent is serving on it; stop it first")
