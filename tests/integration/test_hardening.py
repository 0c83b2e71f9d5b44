"""Process hardening, observed from outside the hardened process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from secretd.hardening import HardeningReport
from tests.servers.canary_agent import file_store_config, running_agent
from tests.servers.second_user import as_user, ensure_test_user, needs_root, run_python_as

# Waits for a line, hardens, prints the report, waits again (so the parent can
# look at /proc while it lives), then allocates to show nothing broke.
CHILD = """
import json, resource, sys
from secretd.hardening import harden_process
from secretd.logs import configure_logging
configure_logging(stream=sys.stderr)
memlock = int(sys.argv[2])
if memlock >= 0:
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (memlock, memlock))
print("before", flush=True)
sys.stdin.readline()
report = harden_process(mlock=sys.argv[1] == "1")
print(json.dumps(report.as_dict()), flush=True)
sys.stdin.readline()
blocks = [bytearray(1024 * 1024) for _ in range(64)]
print("allocated", len(blocks), flush=True)
"""


@contextmanager
def child(
    argv_prefix: Sequence[str], mlock: bool, memlock: int = -1
) -> Iterator[subprocess.Popen[str]]:
    argv = [*argv_prefix, sys.executable, "-c", CHILD, "1" if mlock else "0", str(memlock)]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def step(proc: subprocess.Popen[str]) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else "child died"
    return line


def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline()


def owner(path: str) -> int:
    out = subprocess.run(["stat", "-c", "%u", path], capture_output=True, text=True, check=True)
    return int(out.stdout)


def core_limit(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            return line.split()[4:6]
    raise AssertionError("no core limit line")


@needs_root
def test_non_dumpable_and_no_core_as_seen_from_outside() -> None:
    user = ensure_test_user()
    with child(as_user(user, []), mlock=False) as proc:
        assert first_line(proc).strip() == "before"
        environ = f"/proc/{proc.pid}/environ"
        # A dumpable process owns its /proc files: the check below can fail.
        assert owner(environ) == user.uid
        report = json.loads(step(proc))
        assert owner(environ) == 0  # non-dumpable: /proc/PID files belong to root
        assert core_limit(proc.pid) == ["0", "0"]
        assert report["non_dumpable"] is True
        assert report["no_core"] is True
        assert report["mlock"] is None
        assert step(proc).startswith("allocated")


def test_mlock_as_root_locks_memory() -> None:
    with child([], mlock=True) as proc:
        assert first_line(proc).strip() == "before"
        report = json.loads(step(proc))
        if report["mlock"] is not True:
            pytest.skip(f"this host refuses mlockall even to root: {report['problems']}")
        status = Path(f"/proc/{proc.pid}/status").read_text()
        locked_kb = int(
            next(ln for ln in status.splitlines() if ln.startswith("VmLck:")).split()[1]
        )
        assert locked_kb > 0
        assert step(proc).startswith("allocated")


@needs_root
def test_mlock_with_a_small_memlock_limit_is_reported_not_fatal() -> None:
    user = ensure_test_user()
    with child(as_user(user, []), mlock=True, memlock=64 * 1024) as proc:
        assert first_line(proc).strip() == "before"
        report = json.loads(step(proc))
        assert report["mlock"] is False
        assert "RLIMIT_MEMLOCK" in report["problems"]["mlock"]
        assert report["non_dumpable"] is True
        # Later allocations still work: MCL_FUTURE was not left half-applied.
        assert step(proc).startswith("allocated")
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert "VmLck:\t       0 kB" in status


def test_report_features_and_dict() -> None:
    report = HardeningReport(True, False, None, {"no_core": "setrlimit failed"})
    assert report.features() == {"non_dumpable": True, "no_core": False, "mlock": None}
    assert report.as_dict()["problems"] == {"no_core": "setrlimit failed"}


AGENT_CONFIG = file_store_config(
    agent='log_level = "debug"\n', rest='[[allow]]\nsecrets = ["**"]\nuids = [0]\n'
)


@needs_root
def test_the_running_agent_is_non_dumpable_with_no_core_limit() -> None:
    user = ensure_test_user()
    with running_agent(AGENT_CONFIG, [("db/app", b"x")], user=user) as agent:
        pid = agent.proc.pid  # setpriv execs: this is the agent
        status = Path(f"/proc/{pid}/status").read_text()
        real_uid = next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1]
        assert int(real_uid) == user.uid
        assert owner(f"/proc/{pid}/environ") == 0  # non-dumpable while running as the user
        # So another process of the same user cannot read its memory or environment.
        for name in ("mem", "environ"):
            probe = run_python_as(user, f"open('/proc/{pid}/{name}', 'rb').read(1)")
            assert b"PermissionError" in probe.stderr, probe.stderr
        assert core_limit(pid) == ["0", "0"]
        assert agent.request("/v1/secrets/db/app?format=raw").body == b"x"
        assert agent.stop() == 0
