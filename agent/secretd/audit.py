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

Denials are bounded per caller (secretd.denials): beyond a small burst, a
caller's denials are counted and written as one summary line
(`result: "deny_suppressed"` with `count`, `first`, `last`,
`distinct_secrets`) when the summary interval ends or the log is closed.
Every denial is in a line or a count; reads, refreshes and other callers'
denials are never held back.

When a write fails (disk full, I/O error) the agent keeps serving: secretd
sits on the boot path of every service that needs a secret, and a full
/var/log must not take them all down. The first failure is logged as an error,
failures are counted (`failed_writes`, for health), and the first line after
recovery says how many were lost.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import orjson
import structlog

from secretd.clock import Clock, SystemClock
from secretd.denials import DENY_SUMMARY_SECONDS, LIMITED, DenyLimiter
from secretd.errors import ConfigError
from secretd.fileperm import owner_problem
from secretd.model import Caller, SecretName, name_problem, rfc3339

log = structlog.get_logger(__name__)

EVENTS = frozenset({"read", "deny", "refresh", "render", "credential", "rotate"})
_CORE_FIELDS = frozenset({"time", "event", "secret", "version_id", "caller", "result"})
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


class AuditSink(Protocol):
    """Where audit lines go (audit.AuditLog implements it): the API, the template
    runner and the credential service record through this one role."""

    def record(
        self,
        event: str,
        *,
        secret: str | None,
        version_id: str | None,
        caller: Caller | None,
        result: str,
        **extra: str,
    ) -> None: ...


class AuditLog:
    """Appends audit lines to a file descriptor; also a `CacheObserver` for refreshes."""

    def __init__(
        self,
        fd: int | None,
        *,
        owns_fd: bool,
        clock: Clock | None = None,
        denials: DenyLimiter | None = None,
        summary_seconds: float = DENY_SUMMARY_SECONDS,
    ) -> None:
        self._fd = fd
        self._owns_fd = owns_fd
        self._clock: Clock = clock or SystemClock()
        self._denials = denials or DenyLimiter(self._clock)
        self._summary_seconds = summary_seconds
        self._summary_timer: asyncio.TimerHandle | None = None
        self._failed_writes = 0
        self._torn_line = False  # a partial write left a line without its newline
        self._failing = False  # between a failed write and the next good one
        self._path: Path | None = None  # the file to open again on reopen()
        self._stamp = _Stamp()
        self._tails = _Tails()

    @classmethod
    def open(cls, target: str | None, *, clock: Clock | None = None) -> AuditLog:
        """`None`: auditing off; `"-"`: stderr; else a file path (append, 0600 when created).

        Raises ConfigError naming the path when it cannot be opened safely.
        """
        if target is None:
            return cls(None, owns_fd=False, clock=clock)
        if target == "-":
            return cls(sys.stderr.fileno(), owns_fd=False, clock=clock)
        audit = cls(_open_audit_file(Path(target)), owns_fd=True, clock=clock)
        audit._path = Path(target)
        return audit

    def reopen(self) -> None:
        """Open the file again by its path (after logrotate moved it away) and
        switch to it; on failure keep writing to the old descriptor.
        Raises ConfigError naming the path when the new file cannot be opened."""
        if self._path is None or not self._owns_fd:
            return
        fd = _open_audit_file(self._path)
        old, self._fd = self._fd, fd
        if old is not None:
            os.close(old)
        log.info("audit.reopened", path=str(self._path))

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
        unknown event), never on a write failure.

        Everything after the time is serialised once per distinct content (a
        line differs from the last one for the same caller, secret and
        version only in its time), and checked then: a line equal to one
        already checked holds the same text."""
        key = (event, secret, version_id, caller, result, *extra.items())
        tail = self._tails.get(key)
        if tail is None:
            _check_fields(event, secret, version_id, result, extra)
            tail = self._tails.add(key, _tail(event, secret, version_id, caller, result, extra))
        if self._fd is None:  # off: misuse is still refused, but no line is built
            return
        if (event, result) in LIMITED and not self._denials.admit(event, result, caller, secret):
            self._arm_summary()
            return
        moment = self._clock.now()
        if moment.tzinfo is not UTC:
            moment = moment.astimezone(UTC)
        self._write(self._stamp.of(moment) + _MILLISECONDS[moment.microsecond // 1000] + tail)

    def flush_denials(self) -> None:
        """Write a summary line for every caller's held-back denials (now, not later)."""
        if self._summary_timer is not None:
            self._summary_timer.cancel()
            self._summary_timer = None
        for held in self._denials.drain():
            if self._fd is None:
                continue
            entry: dict[str, object] = {
                "time": rfc3339(self._clock.now()),
                "event": held.event,
                "secret": None,
                "version_id": None,
                "caller": held.caller.describe() if held.caller is not None else None,
                "result": f"{held.result}_suppressed",
                "count": held.count,
                "first": held.first,
                "last": held.last,
                "distinct_secrets": len(held.names),
            }
            self._write(orjson.dumps(entry) + b"\n")

    def _arm_summary(self) -> None:
        """Summaries go out `summary_seconds` after the first held-back denial
        (without a running loop - a CLI, a test - at `flush_denials` or `close`)."""
        if self._summary_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._summary_timer = loop.call_later(self._summary_seconds, self.flush_denials)

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
        self.flush_denials()  # nothing held back is lost at shutdown or reload
        if self._fd is not None and self._owns_fd:
            os.close(self._fd)
        self._fd = None


# A line is `{"time":"<second>` (`_Stamp`), `.<ms>Z",` and the rest (`_Tails`).
_MILLISECONDS = tuple(b'.%03dZ",' % ms for ms in range(1000))


class _Stamp:
    """The start of a line up to its time's second, as `rfc3339` writes the
    time, formatted once per second: `{"time":"2026-01-02T03:04:05`."""

    def __init__(self) -> None:
        self._second: tuple[int, ...] = ()
        self._prefix = b""

    def of(self, moment: datetime) -> bytes:
        """For `moment` in UTC (the milliseconds are the caller's to add)."""
        second = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
        if second != self._second:
            text = rfc3339(moment)  # "...T03:04:05.678Z"
            self._second, self._prefix = second, b'{"time":"' + text[:-5].encode("ascii")
        return self._prefix


class _Tails:
    """Lines after their time, by content (`AuditLog.record`). Bounded, so a
    flood of distinct names cannot grow it."""

    MAX = 4096

    def __init__(self) -> None:
        self._known: dict[tuple[object, ...], bytes] = {}

    def get(self, key: tuple[object, ...]) -> bytes | None:
        return self._known.get(key)

    def add(self, key: tuple[object, ...], tail: bytes) -> bytes:
        if len(self._known) >= self.MAX:
            self._known.clear()
        self._known[key] = tail
        return tail


def _tail(
    event: str,
    secret: str | None,
    version_id: str | None,
    caller: Caller | None,
    result: str,
    extra: dict[str, str],
) -> bytes:
    """A line without its time: `"event":...}` and the newline."""
    entry: dict[str, object] = {
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
    return orjson.dumps(entry)[1:] + b"\n"  # without its "{"


def _check_fields(
    event: str, secret: object, version_id: object, result: object, extra: dict[str, str]
) -> None:
    """Refuse misuse loudly: unknown events, reserved keys, anything but plain text."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    for key, item in extra.items():
        if key in _CORE_FIELDS:
            raise ValueError(f"audit field {key!r} is reserved")
        _check_text(key, item)
    if secret is not None:
        _check_text("secret", secret)
    if version_id is not None:
        _check_text("version_id", version_id)
    _check_text("result", result)


def _check_text(key: str, item: object) -> None:
    if type(item) is not str and type(item) is not SecretName:
        raise TypeError(f"audit field {key!r} must be str, not {type(item).__name__}")


def check_audit_target(target: str | None) -> None:
    """For `secretd check`: an existing audit log must pass the rules `open` applies
    (nothing is created). Raises ConfigError naming the path."""
    if target is None or target == "-":
        return
    path = Path(target)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise ConfigError(f"audit_log {path}: directory {path.parent} does not exist") from None
        return  # the agent creates it (0600) at start
    except OSError as exc:
        raise ConfigError(f"audit_log {path}: cannot stat ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(f"audit_log {path}: is a symlink")
    _check_audit_stat(path, st)


def _check_audit_stat(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"audit_log {path}: not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise ConfigError(
            f"audit_log {path}: mode {mode:04o} lets others write it; chmod go-w {path}"
        )
    problem = owner_problem(st.st_uid)  # its owner could rewrite the trail
    if problem is not None:
        raise ConfigError(f"audit_log {path}: {problem}")


def _open_audit_file(path: Path) -> int:
    """Open for append, creating 0600; refuse symlinks, non-files and writable-by-others."""
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o600)
    except OSError as exc:
        raise ConfigError(f"audit_log {path}: cannot open ({exc.strerror})") from None
    try:
        _check_audit_stat(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd
