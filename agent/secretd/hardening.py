"""Process hardening at start-up (docs/security.md, "Process hardening": leaks
into core dumps and swap).

`harden_process(mlock=...)` makes the process non-dumpable
(`prctl(PR_SET_DUMPABLE, 0)`: no core dumps, no same-user ptrace, /proc/PID
files owned by root), sets `RLIMIT_CORE` to (0, 0), and - when asked - locks
memory against swap with `mlockall`. No step is fatal: each one's outcome goes
into a `HardeningReport` that health and metrics show, and the caller decides
whether to log loudly.

`mlockall(MCL_FUTURE)` is only attempted when it cannot backfire: with a finite
`RLIMIT_MEMLOCK` and no `CAP_IPC_LOCK`, every later allocation beyond the
limit would fail with ENOMEM, so we report the limit instead of locking.
Call this after any change of uid: the kernel resets dumpability on setuid.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4  # Linux 4.4+: lock pages as they are touched, not all up front
CAP_IPC_LOCK = 14


@dataclass(frozen=True, slots=True)
class HardeningReport:
    """What `harden_process` achieved; `problems` explains each failure."""

    non_dumpable: bool
    core_disabled: bool
    mlock: bool | None  # None: not requested
    problems: dict[str, str] = field(default_factory=dict)

    def features(self) -> dict[str, bool | None]:
        """For metrics: feature name -> worked (None when not attempted)."""
        return {
            "non_dumpable": self.non_dumpable,
            "no_core": self.core_disabled,
            "mlock": self.mlock,
        }

    def as_dict(self) -> dict[str, object]:
        """For health and status output."""
        return {**self.features(), "problems": dict(self.problems)}


class _Libc:
    """The two libc calls Python does not wrap, with errno kept."""

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._lib.prctl.argtypes = [
            ctypes.c_int,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
            ctypes.c_ulong,
        ]
        self._lib.prctl.restype = ctypes.c_int
        self._lib.mlockall.argtypes = [ctypes.c_int]
        self._lib.mlockall.restype = ctypes.c_int

    def prctl(self, option: int, arg: int = 0) -> int:
        result = int(self._lib.prctl(option, arg, 0, 0, 0))
        if result < 0:
            raise _errno_error()
        return result

    def mlockall(self, flags: int) -> None:
        if self._lib.mlockall(flags) != 0:
            raise _errno_error()


def _errno_error() -> OSError:
    code = ctypes.get_errno()
    return OSError(code, os.strerror(code))


def harden_process(*, mlock: bool) -> HardeningReport:
    """Apply every hardening step; never raises for a step that fails."""
    problems: dict[str, str] = {}
    try:
        libc: _Libc | None = _Libc()
    except (OSError, AttributeError) as exc:
        libc = None
        problems["libc"] = f"cannot load libc: {exc}"
    non_dumpable = _set_non_dumpable(libc, problems)
    core_disabled = _disable_core(problems)
    locked = _lock_memory(libc, problems) if mlock else None
    report = HardeningReport(non_dumpable, core_disabled, locked, problems)
    log.info("process.hardened", **report.features(), problems=len(problems))
    return report


def _set_non_dumpable(libc: _Libc | None, problems: dict[str, str]) -> bool:
    if libc is None:
        problems.setdefault("non_dumpable", "libc unavailable")
        return False
    try:
        libc.prctl(PR_SET_DUMPABLE, 0)
        return libc.prctl(PR_GET_DUMPABLE) == 0
    except OSError as exc:
        problems["non_dumpable"] = f"prctl(PR_SET_DUMPABLE): {exc.strerror}"
        return False


def _disable_core(problems: dict[str, str]) -> bool:
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        return resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)
    except (OSError, ValueError) as exc:
        problems["no_core"] = f"setrlimit(RLIMIT_CORE): {exc}"
        return False


def _lock_memory(libc: _Libc | None, problems: dict[str, str]) -> bool:
    if libc is None:
        problems["mlock"] = "libc unavailable"
        return False
    refusal = _memlock_refusal()
    if refusal is not None:
        problems["mlock"] = refusal
        return False
    try:
        libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)
    except OSError:
        try:
            libc.mlockall(MCL_CURRENT | MCL_FUTURE)  # kernels before 4.4: EINVAL
        except OSError as exc:
            problems["mlock"] = f"mlockall: {exc.strerror} (errno {exc.errno})"
            return False
    return True


def _memlock_refusal() -> str | None:
    """Why locking all future memory would be unsafe here, or None when it is fine."""
    if _has_capability(CAP_IPC_LOCK):
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if hard != resource.RLIM_INFINITY:
        return (
            f"RLIMIT_MEMLOCK is {hard} bytes and CAP_IPC_LOCK is missing; locking all "
            "memory would make later allocations fail (set LimitMEMLOCK=infinity)"
        )
    if soft != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
        except (OSError, ValueError) as exc:
            return f"cannot raise RLIMIT_MEMLOCK: {exc}"
    return None


def _has_capability(bit: int, status: Path = Path("/proc/self/status")) -> bool:
    try:
        text = status.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split()[1], 16) >> bit & 1)
            except (IndexError, ValueError):
                return False
    return False
