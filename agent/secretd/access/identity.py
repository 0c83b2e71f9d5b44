"""Who is on the other end of a Unix socket, from the kernel's word only.

`peer_caller(sock)` builds a `model.Caller` from:

- `SO_PEERCRED`: uid, gid and pid as the kernel recorded them at `connect()`;
- `SO_PEERGROUPS`: the supplementary groups at `connect()` (falls back to the
  `Groups:` line of `/proc/PID/status` where the kernel lacks the option);
- the systemd unit, parsed from `/proc/PID/cgroup` by `unit_from_cgroup`.

Nothing the client *says* is ever used. The pid is the weak part: the client
may exit and its pid be reused before we read `/proc`. So `/proc` is read once,
promptly, and then cross-checked: with `SO_PEERPIDFD` (Linux 6.5+) we confirm
the original process is still alive after the read (a pidfd pins the process,
not the number); without it we confirm the process's effective uid and gid are
still the peer's. Any doubt or failure gives `unit=None` - a caller with an
unknown unit simply matches no `units` rule.

Units are reported the way systemd names them. A process in a user manager
(`user@1000.service/app.slice/x.service`) is reported as
`user@1000.service/x.service`, so a unit any user can create in their own
manager can never pass for the system unit `x.service`.
"""

from __future__ import annotations

import array
import errno
import os
import platform
import re
import signal
import socket
import struct
from pathlib import Path

import structlog

from secretd.model import Caller

log = structlog.get_logger(__name__)

_UCRED = struct.Struct("iII")  # pid_t, uid_t, gid_t: ids are unsigned
_INVALID_ID = 0xFFFFFFFF  # (uid_t)-1: what the kernel reports when there is no peer
# asm-generic values; Python 3.11 does not name these two. Architectures with
# their own socket.h numbering (alpha, mips, parisc, sparc) fall back to /proc.
_GENERIC_ARCHES = ("x86_64", "i386", "i686", "aarch64", "riscv64", "s390x", "arm")
_SO_PEERGROUPS = 59
_SO_PEERPIDFD = 77
_MAX_GROUPS_BYTES = 1024  # CPython caps getsockopt buffers at 1024 bytes (256 gids)

# systemd's unit-name alphabet; processes live only in these unit types.
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]{1,250}\.(?:service|scope|socket|mount|swap)")
_USER_MANAGER = re.compile(r"user@[0-9]{1,10}\.service")
# /proc/PID/status with 65536 groups is ~450 KiB; anything longer is refused
# whole rather than cut (a cut "12345" would read as group 12).
_MAX_PROC_BYTES = 1024 * 1024


def unit_from_cgroup(text: str) -> str | None:
    """The systemd unit in a `/proc/PID/cgroup` text, or None when unknown.

    Uses the `name=systemd` hierarchy (cgroup v1 and hybrid) when present, else
    the unified `0::` line (cgroup v2). Two lines for one hierarchy, a deleted
    cgroup, or a path that does not look like systemd's layout give None.
    """
    systemd_paths: list[str] = []
    unified_paths: list[str] = []
    for line in text.splitlines():
        hierarchy, sep, rest = line.partition(":")
        controllers, sep2, path = rest.partition(":")
        if not sep or not sep2:
            continue
        if controllers == "name=systemd":
            systemd_paths.append(path)
        elif hierarchy == "0" and controllers == "":
            unified_paths.append(path)
    paths = systemd_paths or unified_paths
    if len(paths) != 1:
        return None  # none, or an ambiguous/hostile duplicate
    return unit_from_cgroup_path(paths[0])


def unit_from_cgroup_path(path: str) -> str | None:
    """The unit for one cgroup path such as ``/system.slice/app.service/sub``.

    Like systemd's `cg_path_get_unit`: skip the leading slices, and the first
    component after them is the unit; anything deeper is the unit's own
    (possibly delegated) business and is ignored.
    """
    if not path.startswith("/") or path.endswith(" (deleted)"):
        return None
    parts = [p for p in path.split("/") if p]
    unit, rest = _first_unit(parts)
    if unit is None or _USER_MANAGER.fullmatch(unit) is None:
        return unit
    inner, _ = _first_unit(rest)
    return f"{unit}/{inner}" if inner is not None else unit


def _first_unit(parts: list[str]) -> tuple[str | None, list[str]]:
    for index, part in enumerate(parts):
        if part.endswith(".slice"):
            continue
        if _UNIT_NAME.fullmatch(part) is None:
            return None, []
        return part, parts[index + 1 :]
    return None, []


def groups_from_status(text: str) -> frozenset[int]:
    """The supplementary gids on the `Groups:` line of a `/proc/PID/status` text."""
    for line in text.splitlines():
        if line.startswith("Groups:"):
            fields = line[len("Groups:") :].split()
            if all(f.isdigit() for f in fields):
                return frozenset(int(f) for f in fields)
            return frozenset()
    return frozenset()


def effective_ids_from_status(text: str) -> tuple[int, int] | None:
    """(euid, egid) from the `Uid:`/`Gid:` lines of a `/proc/PID/status` text."""
    ids: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Uid", "Gid"):
            fields = rest.split()
            if len(fields) < 2 or not fields[1].isdigit():
                return None
            ids[key] = int(fields[1])
    if len(ids) != 2:
        return None
    return ids["Uid"], ids["Gid"]


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of a connected AF_UNIX peer, via SO_PEERCRED.

    Raises OSError when there are none: the kernel answers an unconnected or
    non-Unix socket with uid/gid (uid_t)-1 rather than an error, and that must
    never become an identity.
    """
    if sock.family != socket.AF_UNIX:
        raise OSError(errno.EINVAL, "peer credentials need an AF_UNIX socket")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    if uid == _INVALID_ID or gid == _INVALID_ID:
        raise OSError(errno.ENOTCONN, "the socket has no peer credentials")
    return pid, uid, gid


def peer_caller(sock: socket.socket, *, proc_root: Path = Path("/proc")) -> Caller:
    """The `Caller` on the other end of the connected AF_UNIX socket `sock`.

    `proc_root` exists for tests that lay out sample `/proc` files. Raises
    OSError when the socket carries no peer credentials (close it).
    """
    pid, uid, gid = peer_credentials(sock)
    groups = _peer_groups(sock)
    if pid <= 0:
        return Caller(uid=uid, gid=gid, pid=None, extra_gids=groups or frozenset())
    pidfd = _peer_pidfd(sock)
    try:
        cgroup_text = _read_proc(proc_root / str(pid) / "cgroup")
        status_text = _read_proc(proc_root / str(pid) / "status")
        trusted = _still_the_peer(pidfd, status_text, uid, gid)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    unit = unit_from_cgroup(cgroup_text) if trusted and cgroup_text is not None else None
    if groups is None:
        groups = groups_from_status(status_text) if trusted and status_text else frozenset()
    if not trusted:
        log.debug("caller.proc_unverified", pid=pid, uid=uid)
    return Caller(uid=uid, gid=gid, pid=pid, unit=unit, extra_gids=groups)


def _generic_arch() -> bool:
    machine = platform.machine()
    return machine.startswith(_GENERIC_ARCHES)


def _peer_groups(sock: socket.socket) -> frozenset[int] | None:
    """Supplementary groups at connect time, or None when the kernel cannot say."""
    option = getattr(socket, "SO_PEERGROUPS", _SO_PEERGROUPS if _generic_arch() else None)
    if option is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, option, _MAX_GROUPS_BYTES)
    except OSError:
        return None  # ENOPROTOOPT on old kernels, ERANGE beyond 256 groups
    gids = array.array("I")
    usable = len(raw) - len(raw) % gids.itemsize
    gids.frombytes(raw[:usable])
    return frozenset(gids)


def _peer_pidfd(sock: socket.socket) -> int | None:
    option = getattr(socket, "SO_PEERPIDFD", _SO_PEERPIDFD if _generic_arch() else None)
    if option is None:
        return None
    try:
        fd = sock.getsockopt(socket.SOL_SOCKET, option)
    except OSError:
        return None
    return fd if fd >= 0 else None


def _read_proc(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_PROC_BYTES:
                return None
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _still_the_peer(pidfd: int | None, status_text: str | None, uid: int, gid: int) -> bool:
    """Whether what we read under /proc/PID belonged to the peer, not a pid reuser."""
    if status_text is None:
        return False
    if pidfd is not None:
        try:
            signal.pidfd_send_signal(pidfd, 0)
        except PermissionError:
            pass  # alive, just not ours to signal
        except OSError:
            return False  # ESRCH: exited, the pid may already name someone else
        return True
    # No pidfd: the best remaining check is that the process still has the
    # peer's effective ids. A reuse by the same user gains nothing it lacked.
    return effective_ids_from_status(status_text) == (uid, gid)
