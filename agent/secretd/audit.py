"""The audit trail (docs/security.md): one JSON line per read, denial, refresh,
render, credential request and rotation step (docs/rotation.md).

A line holds `time` (RFC 3339 UTC), `event`, `secret`, `version_id`, `caller`
(`{"uid","gid","pid","unit"}` or `{"tcp": true}`, null for the agent itself)
and `result`, then any extra string fields. Never a value: `record` refuses
anything in `**extra` that is not a plain `str` (a `SecretValue`, bytes), and
a `secret` that is not a valid name (a caller may paste a value where a name
belongs) is written as null with `"invalid_name": true`.

The file is opened `O_APPEND | O_NOFOLLOW`, created 0600; each line goes out
in one `write(2)`, so concurrent writers and `logrotate copytruncate` never
interleave or lose a line, and the line is on disk before the reply leaves.

When a write fails (disk full, I/O error) the agent keeps serving: secretd
sits on the boot path of every service that needs a secret, and a full
/var/log must not take them all down. The first failure is logged as an error,
failures are counted (`failed_writes`, for health), and the first line after
recovery says how many were lost.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import orjson
import structlog

from secretd.clock import Clock, SystemClock
from secretd.errors import ConfigError
from secretd.model import Caller, SecretName, name_problem, rfc3339

log = structlog.get_logger(__name__)

EVENTS = frozenset({"read", "deny", "refresh", "render", "credential", "rotate"})
_CORE_FIELDS = frozenset({"time", "event", "secret", "version_id", "caller", "result"})
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


class AuditLog:
    """Appends audit lines to a file descriptor; also a `CacheObserver` for refreshes."""

    def __init__(self, fd: int | None, *, owns_fd: bool, clock: Clock | None = None) -> None:
        self._fd = fd
        self._owns_fd = owns_fd
        self._clock: Clock = clock or SystemClock()
        self._failed_writes = 0
        self._torn_line = False  # a partial write left a line without its newline
        self._failing = False  # between a failed write and the next good one

    @classmethod
    def open(cls, target: str | None, *, clock: Clock | None = None) -> AuditLog:
        """`None`: auditing off; `"-"`: stderr; else a file path (append, 0600 when created).

        Raises ConfigError naming the path when it cannot be opened safely.
        """
        if target is None:
            return cls(None, owns_fd=False, clock=clock)
        if target == "-":
            return cls(sys.stderr.fileno(), owns_fd=False, clock=clock)
        return cls(_open_audit_file(Path(target)), owns_fd=True, clock=clock)

    @property
    def enabled(self) -> bool:
        return self._fd is not None

    @property
    def failed_writes(self) -> int:
        """Lines lost to write errors since the log was opened."""
        return self._failed_writes

    def record(
        self,
        event: str,
        *,
        secret: str | None,
        version_id: str | None,
        caller: Caller | None,
        result: str,
        **extra: str,
    ) -> None:
        """Write one audit line. Raises ValueError/TypeError on misuse (a value, an
        unknown event), never on a write failure."""
        if self._fd is None:  # off: still refuse misuse, but build no line (the hot path)
            _check_fields(event, secret, version_id, result, extra)
            return
        self._write(self._format(event, secret, version_id, caller, result, extra))

    def _format(
        self,
        event: str,
        secret: str | None,
        version_id: str | None,
        caller: Caller | None,
        result: str,
        extra: dict[str, str],
    ) -> bytes:
        _check_fields(event, secret, version_id, result, extra)
        entry: dict[str, object] = {
            "time": rfc3339(self._clock.now()),
            "event": event,
            "secret": secret,
            "version_id": version_id,
            "caller": caller.describe() if caller is not None else None,
            "result": result,
        }
        checked = type(secret) is SecretName  # validated when it was made
        if secret is not None and not checked and name_problem(secret) is not None:
            entry["secret"] = None
            entry["invalid_name"] = True
        entry.update(extra)
        return orjson.dumps(entry) + b"\n"

    def _write(self, line: bytes) -> None:
        assert self._fd is not None
        if self._torn_line:
            line = b"\n" + line
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            self._write_failed(exc.strerror or str(exc.errno))
            return
        if written != len(line):
            self._torn_line = True
            self._write_failed("short write")
            return
        self._torn_line = False
        if self._failing:
            self._failing = False
            log.warning("audit.write_recovered", lost_lines=self._failed_writes)

    def _write_failed(self, reason: str) -> None:
        self._failed_writes += 1
        if not self._failing:
            self._failing = True
            log.error("audit.write_failed", reason=reason, policy="serving continues")

    # CacheObserver: only refreshes are audit events.

    def cache_lookup(self, result: str) -> None:
        pass

    def backend_call(self, backend: str, op: str, seconds: float, ok: bool) -> None:
        pass

    def secret_refreshed(
        self, name: SecretName, backend: str, version_id: str | None, result: str
    ) -> None:
        # Routine checks that found nothing new are counted in metrics only: with
        # thousands of polled secrets they would drown the trail (~33 lines/s).
        if result == "unchanged":
            return
        self.record(
            "refresh",
            secret=name,
            version_id=version_id,
            caller=None,
            result=result,
            backend=backend,
        )

    def close(self) -> None:
        if self._fd is not None and self._owns_fd:
            os.close(self._fd)
        self._fd = None


def _check_fields(
    event: str, secret: object, version_id: object, result: object, extra: dict[str, str]
) -> None:
    """Refuse misuse loudly: unknown events, reserved keys, anything but plain text."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    for key in extra:
        if key in _CORE_FIELDS:
            raise ValueError(f"audit field {key!r} is reserved")
    fields: dict[str, object] = {"secret": secret, "version_id": version_id, "result": result}
    fields.update(extra)
    for key, item in fields.items():
        if item is None and key in ("secret", "version_id"):
            continue
        if type(item) is not str and type(item) is not SecretName:
            raise TypeError(f"audit field {key!r} must be str, not {type(item).__name__}")


def _open_audit_file(path: Path) -> int:
    """Open for append, creating 0600; refuse symlinks, non-files and writable-by-others."""
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o600)
    except OSError as exc:
        raise ConfigError(f"audit_log {path}: cannot open ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"audit_log {path}: not a regular file")
        if stat.S_IMODE(st.st_mode) & 0o022:
            mode = stat.S_IMODE(st.st_mode)
            raise ConfigError(
                f"audit_log {path}: mode {mode:04o} lets others write it; chmod go-w {path}"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd
