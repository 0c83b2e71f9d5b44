"""Audit log: JSON lines per docs/security.md, file safety, never a value, failure policy."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from secretd.audit import _MILLISECONDS, AuditLog, _Stamp
from secretd.denials import DENY_BURST, DENY_REFILL_SECONDS, DenyLimiter
from secretd.errors import ConfigError
from secretd.model import Caller, SecretName, SecretValue, rfc3339
from tests.fakes.fake_clock import FakeClock

CANARY = "canary-7f3a9c-value"
CALLER = Caller(uid=1001, gid=1002, pid=4242, unit="app.service")
BOB = Caller(uid=1002, gid=1002, pid=7)


class FixedClock:
    def monotonic(self) -> float:
        return 0.0

    def now(self) -> datetime:
        return datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)

    async def sleep(self, seconds: float) -> None:
        return None


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def audit(audit_path: Path) -> Iterator[AuditLog]:
    log = AuditLog.open(str(audit_path), clock=FixedClock())
    yield log
    log.close()


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_read_line_has_every_field(audit: AuditLog, audit_path: Path) -> None:
    audit.record("read", secret="db/app", version_id="v3", caller=CALLER, result="ok")
    assert lines(audit_path) == [
        {
            "time": "2026-01-02T03:04:05.678Z",
            "event": "read",
            "secret": "db/app",
            "version_id": "v3",
            "caller": {"uid": 1001, "gid": 1002, "pid": 4242, "unit": "app.service"},
            "result": "ok",
        }
    ]


def test_deny_tcp_and_agent_callers(audit: AuditLog, audit_path: Path) -> None:
    audit.record("deny", secret="db/app", version_id=None, caller=Caller(tcp=True), result="403")
    audit.record("refresh", secret="db/app", version_id="v4", caller=None, result="changed")
    first, second = lines(audit_path)
    assert first["caller"] == {"tcp": True}
    assert first["version_id"] is None
    assert second["caller"] is None


def test_extra_fields_are_appended(audit: AuditLog, audit_path: Path) -> None:
    audit.record(
        "render", secret=None, version_id=None, caller=None, result="ok", template="/run/a.conf"
    )
    assert lines(audit_path)[0]["template"] == "/run/a.conf"


def test_observer_refresh_writes_a_line(audit: AuditLog, audit_path: Path) -> None:
    audit.cache_lookup("hit")
    audit.backend_call("local", "fetch", 0.1, True)
    audit.secret_refreshed(SecretName("db/app"), "local", "v9", "changed")
    [line] = lines(audit_path)
    assert line["event"] == "refresh"
    assert line["backend"] == "local"
    assert line["version_id"] == "v9"
    assert line["result"] == "changed"


def test_file_is_created_0600_whatever_the_umask(audit_path: Path) -> None:
    old = os.umask(0)
    try:
        AuditLog.open(str(audit_path)).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(audit_path.stat().st_mode) == 0o600


def test_appends_to_existing_content_and_survives_truncation(audit_path: Path) -> None:
    audit_path.write_bytes(b'{"earlier": true}\n')
    audit_path.chmod(0o640)  # an operator's choice of group-read is kept
    first = AuditLog.open(str(audit_path))
    second = AuditLog.open(str(audit_path))
    first.record("read", secret="a", version_id="1", caller=CALLER, result="ok")
    second.record("read", secret="b", version_id="1", caller=CALLER, result="ok")
    first.record("read", secret="c", version_id="1", caller=CALLER, result="ok")
    assert [ln.get("secret") for ln in lines(audit_path)] == [None, "a", "b", "c"]
    assert stat.S_IMODE(audit_path.stat().st_mode) == 0o640
    # logrotate copytruncate: the next line lands at the new end, no hole of NULs.
    os.truncate(audit_path, 0)
    first.record("read", secret="d", version_id="1", caller=CALLER, result="ok")
    assert b"\x00" not in audit_path.read_bytes()
    assert [ln["secret"] for ln in lines(audit_path)] == ["d"]
    first.close()
    second.close()


def test_refuses_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    with pytest.raises(ConfigError) as info:
        AuditLog.open(str(link))
    assert str(link) in str(info.value)


def test_refuses_a_directory_a_missing_directory_and_others_writable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        AuditLog.open(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        AuditLog.open(str(tmp_path / "missing" / "audit.jsonl"))
    assert "missing" in str(info.value)
    loose = tmp_path / "loose.jsonl"
    loose.write_bytes(b"")
    loose.chmod(0o662)
    with pytest.raises(ConfigError) as info:
        AuditLog.open(str(loose))
    assert "chmod" in str(info.value)


def test_refuses_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so opening for write won't block
    try:
        with pytest.raises(ConfigError):
            AuditLog.open(str(fifo))
    finally:
        os.close(reader)


@pytest.mark.parametrize(
    "bad",
    [SecretValue(CANARY.encode()), CANARY.encode(), bytearray(b"x"), 5, None, ["x"]],
)
def test_extra_refuses_anything_but_text(audit: AuditLog, audit_path: Path, bad: object) -> None:
    with pytest.raises(TypeError):
        audit.record("read", secret="a", version_id=None, caller=None, result="ok", value=bad)  # type: ignore[arg-type]
    assert audit_path.read_bytes() == b""


@pytest.mark.parametrize("field", ["version_id", "result"])
def test_core_fields_refuse_values(audit: AuditLog, field: str) -> None:
    kwargs: dict[str, object] = {"secret": "a", "version_id": None, "caller": None, "result": "ok"}
    kwargs[field] = SecretValue(CANARY.encode())
    with pytest.raises(TypeError):
        audit.record("read", **kwargs)  # type: ignore[arg-type]


def test_secret_refuses_a_value(audit: AuditLog) -> None:
    with pytest.raises(TypeError):
        audit.record(
            "read",
            secret=SecretValue(CANARY.encode()),  # type: ignore[arg-type]
            version_id=None,
            caller=None,
            result="ok",
        )


def test_reserved_fields_and_unknown_events_are_refused(audit: AuditLog) -> None:
    with pytest.raises(ValueError, match="reserved"):
        audit.record("read", secret="a", version_id=None, caller=None, result="ok", time="x")
    with pytest.raises(ValueError, match="unknown audit event"):
        audit.record("peek", secret="a", version_id=None, caller=None, result="ok")


@pytest.mark.parametrize(
    "raw", [CANARY + " with spaces", "../../etc/passwd", "a\nb", "x" * 600, "", "a//b"]
)
def test_an_invalid_name_is_never_echoed(audit: AuditLog, audit_path: Path, raw: str) -> None:
    audit.record("deny", secret=raw, version_id=None, caller=CALLER, result="invalid_name")
    [line] = lines(audit_path)
    assert line["secret"] is None
    assert line["invalid_name"] is True
    if raw:
        assert raw.encode() not in audit_path.read_bytes()


def test_hostile_extra_text_stays_on_one_json_line(audit: AuditLog, audit_path: Path) -> None:
    audit.record(
        "render", secret=None, version_id="v\n1", caller=None, result="ok", error='x"}\n{"a":1'
    )
    [line] = lines(audit_path)
    assert line["error"] == 'x"}\n{"a":1'


def test_disabled_log_writes_nothing_but_still_refuses_misuse() -> None:
    off = AuditLog.open(None)
    assert not off.enabled
    off.record("read", secret="a", version_id=None, caller=None, result="ok")
    with pytest.raises(TypeError):
        off.record("read", secret="a", version_id=None, caller=None, result="ok", v=b"x")  # type: ignore[arg-type]
    off.close()


def test_dash_writes_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    log = AuditLog.open("-")
    log.record("read", secret="db/app", version_id="v1", caller=CALLER, result="ok")
    log.close()  # must not close fd 2
    os.write(2, b"still open\n")
    err = capfd.readouterr().err
    assert orjson.loads(err.splitlines()[0])["secret"] == "db/app"
    assert "still open" in err


def test_write_failure_keeps_serving_logs_once_and_counts() -> None:
    full = os.open("/dev/full", os.O_WRONLY | os.O_CLOEXEC)
    log = AuditLog(full, owns_fd=True)
    with structlog.testing.capture_logs() as captured:
        for _ in range(3):
            log.record("read", secret="a", version_id="1", caller=CALLER, result="ok")
    log.close()
    assert log.failed_writes == 3
    assert [e["event"] for e in captured] == ["audit.write_failed"]
    assert CANARY not in repr(captured)


def test_recovery_after_a_torn_line_starts_a_fresh_line() -> None:
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    log = AuditLog(writer, owns_fd=True)
    try:
        _fill(writer)
        os.read(reader, 4096)  # room for part of the next (large) line only
        big = "x" * 20000
        with structlog.testing.capture_logs() as captured:
            log.record("read", secret="a", version_id="1", caller=CALLER, result="ok", note=big)
            assert log.failed_writes == 1
            _drain(reader)
            log.record("read", secret="b", version_id="2", caller=CALLER, result="ok")
        assert [e["event"] for e in captured] == ["audit.write_failed", "audit.write_recovered"]
        assert captured[1]["lost_lines"] == 1
        tail = _drain(reader)
        assert tail.startswith(b"\n")
        assert orjson.loads(tail.strip())["secret"] == "b"
    finally:
        log.close()
        os.close(reader)


def _fill(fd: int) -> None:
    for _ in range(1024):  # a pipe holds at most a few MiB; bounded anyway
        try:
            os.write(fd, b"#" * 65536)
        except BlockingIOError:
            return


def _drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    for _ in range(1024):
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


WRITER = """
import sys
from secretd.audit import _MILLISECONDS, AuditLog, _Stamp
from secretd.denials import DENY_BURST, DENY_REFILL_SECONDS, DenyLimiter
from secretd.model import Caller
log = AuditLog.open(sys.argv[1])
me = int(sys.argv[2])
who = Caller(uid=me, gid=me, pid=me)
for i in range(int(sys.argv[3])):
    log.record("read", secret=f"w{me}/s{i}", version_id="v" * 300, caller=who, result="ok")
log.close()
"""


def test_concurrent_writer_processes_never_interleave_lines(audit_path: Path) -> None:
    writers, per_writer = 4, 300
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(audit_path), str(n), str(per_writer)])
        for n in range(writers)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    parsed = lines(audit_path)  # every line is whole JSON
    assert len(parsed) == writers * per_writer
    for n in range(writers):
        mine = [ln["secret"] for ln in parsed if ln["caller"]["uid"] == n]  # type: ignore[index]
        assert mine == [f"w{n}/s{i}" for i in range(per_writer)]  # in order per writer


def test_unchanged_refreshes_are_not_audited(tmp_path: Path) -> None:
    path = tmp_path / "audit-refresh.jsonl"
    log = AuditLog.open(str(path))
    log.secret_refreshed(SecretName("db/app"), "local", "v1", "unchanged")
    log.secret_refreshed(SecretName("db/app"), "local", "v2", "changed")
    log.close()
    lines = [orjson.loads(line) for line in path.read_text().splitlines()]
    assert [(line["event"], line["result"]) for line in lines] == [("refresh", "changed")]


# -- denials: bounded per caller (issue 11, item 7) --------------------------------

OTHER = Caller(uid=1002, gid=1002, pid=5151, unit=None)


def deny(audit: AuditLog, caller: Caller, name: str = "db/root") -> None:
    audit.record("deny", secret=name, version_id=None, caller=caller, result="deny")


def test_a_callers_denials_beyond_the_burst_become_one_summary(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = FakeClock()
    audit = AuditLog.open(str(path), clock=clock)
    for i in range(1000):
        deny(audit, CALLER, f"db/n{i % 40}")
        clock.advance(0.001)
    audit.record("read", secret="db/app", version_id="v1", caller=OTHER, result="ok")
    deny(audit, OTHER)  # another caller has its own budget
    assert len(lines(path)) == DENY_BURST + 2  # nothing for the rest yet
    audit.flush_denials()
    written = lines(path)
    single = [x for x in written if x["result"] == "deny" and x["caller"]["uid"] == 1001]
    (summary,) = [x for x in written if x["result"] == "deny_suppressed"]
    assert len(single) == DENY_BURST
    assert summary["count"] == 1000 - DENY_BURST
    assert summary["caller"] == {"uid": 1001, "gid": 1002, "pid": None, "unit": None}
    assert summary["secret"] is None and summary["version_id"] is None
    assert summary["first"] < summary["last"]
    assert summary["distinct_secrets"] == 32  # counted up to a bound
    audit.close()


def test_the_budget_refills_and_close_flushes_what_is_held(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = FakeClock()
    audit = AuditLog.open(str(path), clock=clock)
    for _ in range(DENY_BURST + 5):
        deny(audit, CALLER)
    audit.flush_denials()
    clock.advance(DENY_REFILL_SECONDS * 3)
    for _ in range(5):
        deny(audit, CALLER)  # three refilled tokens, then held again
    audit.close()  # shutdown or reload: the held denials are written, not lost
    results = [x["result"] for x in lines(path)]
    assert results == ["deny"] * DENY_BURST + ["deny_suppressed"] + ["deny"] * 3 + [
        "deny_suppressed"
    ]
    assert [x["count"] for x in lines(path) if "count" in x] == [5, 2]


def test_tcp_callers_share_one_budget(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog.open(str(path), clock=FakeClock())
    for _ in range(DENY_BURST * 3):
        deny(audit, Caller(tcp=True))
    audit.close()
    summary = lines(path)[-1]
    assert summary["caller"] == {"tcp": True} and summary["count"] == DENY_BURST * 2


async def test_summaries_go_out_on_their_own_after_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(
        os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
        owns_fd=True,
        summary_seconds=0.05,
    )
    for _ in range(DENY_BURST + 3):
        deny(audit, CALLER)
    deadline = asyncio.get_running_loop().time() + 10
    while not any(x["result"] == "deny_suppressed" for x in lines(path)):
        assert asyncio.get_running_loop().time() < deadline, "no summary was written"
        await asyncio.sleep(0.01)
    assert lines(path)[-1]["count"] == 3
    audit.close()
    assert len(lines(path)) == DENY_BURST + 1  # written once, not again at close


def test_many_callers_are_tracked_in_bounded_memory() -> None:
    clock = FakeClock()
    limiter = DenyLimiter(clock, burst=1, refill_seconds=1.0, max_callers=8)
    for uid in range(100):
        assert limiter.admit("deny", "deny", Caller(uid=uid, gid=uid), "db/x") is True
    assert limiter.tracked() <= 8
    assert limiter.admit("deny", "deny", Caller(uid=99, gid=99), "db/x") is False  # remembered


def test_refused_credential_peers_are_bounded_too_and_nothing_else_is(tmp_path: Path) -> None:
    """A non-root peer posing as systemd on the socket is the other denial any
    local user can cause at will; reads, renders and refreshes are never held."""
    path = tmp_path / "audit.jsonl"
    audit = AuditLog.open(str(path), clock=FakeClock())
    for _ in range(DENY_BURST + 40):
        audit.record(
            "credential",
            secret=None,
            version_id=None,
            caller=OTHER,
            result="forbidden_peer",
            unit_requested="app.service",
            credential="db",
        )
        audit.record("read", secret="db/app", version_id="v1", caller=OTHER, result="ok")
        audit.record("render", secret=None, version_id=None, caller=None, result="error")
    deny(audit, OTHER)  # its own budget: a different kind of denial
    audit.close()
    written = lines(path)
    (summary,) = [x for x in written if x["result"] == "forbidden_peer_suppressed"]
    assert summary["event"] == "credential" and summary["count"] == 40
    assert sum(x["result"] == "forbidden_peer" for x in written) == DENY_BURST
    assert sum(x["event"] == "read" for x in written) == DENY_BURST + 40
    assert sum(x["event"] == "render" for x in written) == DENY_BURST + 40
    assert [x["result"] for x in written if x["event"] == "deny"] == ["deny"]


def test_lines_of_the_same_read_differ_only_in_their_time(audit_path: Path) -> None:
    clock = FakeClock(wall=datetime(2026, 1, 2, 3, 4, 5, 999000, tzinfo=UTC))
    log = AuditLog.open(str(audit_path), clock=clock)
    for _ in range(3):
        log.record("read", secret="db/app", version_id="v3", caller=CALLER, result="ok")
        clock.advance(0.0011)  # across a second and millisecond boundaries
    log.record("read", secret="db/app", version_id="v3", caller=BOB, result="ok")
    log.close()
    found = lines(audit_path)
    assert [x["time"] for x in found] == [
        "2026-01-02T03:04:05.999Z",
        "2026-01-02T03:04:06.000Z",
        "2026-01-02T03:04:06.001Z",
        "2026-01-02T03:04:06.002Z",
    ]
    assert all({**x, "time": None} == {**found[0], "time": None} for x in found[:3])
    assert found[3]["caller"] == {"uid": 1002, "gid": 1002, "pid": 7, "unit": None}


def test_misuse_is_refused_even_after_an_equal_valid_line(audit: AuditLog) -> None:
    audit.record("read", secret="db/app", version_id="v3", caller=CALLER, result="ok")
    with pytest.raises(TypeError):
        audit.record(
            "read",
            secret="db/app",
            version_id=SecretValue(b"v3"),  # type: ignore[arg-type]
            caller=CALLER,
            result="ok",
        )
    with pytest.raises(ValueError, match="reserved"):
        audit.record("read", secret="db/app", version_id="v3", caller=CALLER, result="ok", time="x")


@given(st.datetimes(timezones=st.just(UTC)))
def test_the_time_prefix_is_rfc3339(moment: datetime) -> None:
    stamp = _Stamp()
    for shift in (timedelta(0), timedelta(microseconds=999), timedelta(seconds=1)):
        at = moment + shift if moment.year < 9999 else moment
        head = stamp.of(at) + _MILLISECONDS[at.microsecond // 1000]
        assert head == b'{"time":"' + rfc3339(at).encode() + b'",'


def test_other_time_zones_are_written_in_utc(audit_path: Path) -> None:
    class Berlin(FixedClock):
        def now(self) -> datetime:
            return datetime(2026, 1, 2, 4, 4, 5, 678000, tzinfo=timezone(timedelta(hours=1)))

    log = AuditLog.open(str(audit_path), clock=Berlin())
    log.record("read", secret="db/app", version_id="v3", caller=CALLER, result="ok")
    log.close()
    assert lines(audit_path)[0]["time"] == "2026-01-02T03:04:05.678Z"
