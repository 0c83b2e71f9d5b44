"""`secretd exec` owns its child's whole process tree: real supervisors, real
shells with background jobs, the fake agent on a real Unix socket. Leftovers
are looked for in /proc by the process group (= session) the child was given."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent_proc import short_tmp
from tests.fakes.api_server import FakeAgent
from tests.integration.waits import eventually

CLI = [sys.executable, "-m", "secretd.cli.main"]
# The shell writes its pid, then waits on a background sleep that carries the
# secret in its environment (the grandchild a rotation must not leave behind).
TREE = 'echo "$$" >> "$LOG"; sleep 3171 & wait'


@pytest.fixture
def tmp() -> Iterator[Path]:
    with short_tmp("ext-") as path:
        yield path


@pytest.fixture
def agent(tmp: Path) -> Iterator[FakeAgent]:
    with FakeAgent(tmp / "a.sock", {"db/app": json.dumps({"password": "one"})}) as fake:
        yield fake


def stat_of(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgid, session) of a live, non-zombie process; None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[2]), int(fields[3])


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = stat_of(int(entry.name))
            if found is not None and found[1] == pgid:
                members.append(int(entry.name))
    return sorted(members)


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (by parent links)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = stat_of(int(entry.name))
            if found is not None:
                parents[int(entry.name)] = found[0]
    below: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - below
        below |= frontier
    return below


def shells(log: Path) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


STARTED: set[int] = set()  # every process a test saw below a supervisor


def start(
    agent: FakeAgent, tmp: Path, *options: str, script: str = TREE
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, SECRETD_SOCKET=agent.socket_path, LOG=str(tmp / "log"))
    with (tmp / "stderr").open("ab") as stderr:  # a file: a leftover process may hold it
        return subprocess.Popen(
            [*CLI, "exec", *options, "--env", "PW=db/app#password", "--", "sh", "-c", script],
            env=env,
            stderr=stderr,
        )


def finish(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def seen(proc: subprocess.Popen[bytes]) -> None:
    STARTED.update(descendants(proc.pid))


def first_tree(proc: subprocess.Popen[bytes], tmp: Path) -> tuple[int, set[int]]:
    """The first shell `proc` ran and every process below `proc`, once both the
    shell and its background sleep run (all of them seen, for `cleanup`; the
    shell's group is cleaned up here when they do not)."""
    eventually(lambda: len(shells(tmp / "log")) == 1)
    child = shells(tmp / "log")[0]
    try:
        eventually(lambda: len(descendants(proc.pid)) == 2)
    except BaseException:
        cleanup(child)
        raise
    seen(proc)
    return child, descendants(proc.pid)


def cleanup(*groups: int) -> None:
    """Kill whatever a failing test left behind, by the pids it saw."""
    for pgid in groups:
        STARTED.update(group_members(pgid))
    for pid in sorted(STARTED):
        if stat_of(pid) is not None:
            os.kill(pid, signal.SIGKILL)
    STARTED.clear()


def test_the_child_leads_its_own_session_and_group(agent: FakeAgent, tmp: Path) -> None:
    proc = start(agent, tmp)
    try:
        eventually(lambda: len(shells(tmp / "log")) == 1)
        child = shells(tmp / "log")[0]
        assert stat_of(child) == (proc.pid, child, child)
        seen(proc)
        eventually(lambda: len(group_members(child)) == 2)  # sh and its sleep
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)
        cleanup(child)


def test_a_restart_leaves_no_grandchild_with_the_old_value(agent: FakeAgent, tmp: Path) -> None:
    proc = start(agent, tmp, "--restart", "--grace", "2s")
    groups: list[int] = []
    try:
        child, first = first_tree(proc, tmp)
        groups.append(child)
        agent.secrets.rotate("db/app", json.dumps({"password": "two"}))
        eventually(lambda: len(shells(tmp / "log")) == 2)
        groups.append(shells(tmp / "log")[1])
        seen(proc)
        eventually(lambda: all(stat_of(pid) is None for pid in first))  # the old sleep too
        assert len(group_members(groups[1])) in (1, 2)  # the new tree runs
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)
        cleanup(*groups)


def test_stopping_the_supervisor_ends_the_whole_tree(agent: FakeAgent, tmp: Path) -> None:
    proc = start(agent, tmp)
    child, tree = first_tree(proc, tmp)
    try:
        proc.send_signal(signal.SIGTERM)
        finish(proc)
        eventually(lambda: all(stat_of(pid) is None for pid in tree), within=5)
    finally:
        cleanup(child)


def test_a_child_ignoring_sigterm_is_killed_after_grace_on_stop(
    agent: FakeAgent, tmp: Path
) -> None:
    stubborn = "trap '' TERM; " + TREE
    proc = start(agent, tmp, "--grace", "500ms", script=stubborn)
    child, tree = first_tree(proc, tmp)
    try:
        proc.send_signal(signal.SIGTERM)
        code = finish(proc, timeout=15)  # before: waited for the child forever
        assert code == 128 + signal.SIGKILL
        eventually(lambda: all(stat_of(pid) is None for pid in tree), within=5)
    finally:
        cleanup(child)


def test_what_the_child_leaves_behind_when_it_dies_is_ended(agent: FakeAgent, tmp: Path) -> None:
    proc = start(agent, tmp, "--grace", "1s")
    child = 0
    try:
        eventually(lambda: len(descendants(proc.pid)) == 2)
        seen(proc)
        child = shells(tmp / "log")[0]
        sleeper = max(descendants(proc.pid))
        os.kill(child, signal.SIGKILL)  # the shell dies; its background sleep lives on
        assert finish(proc) == 128 + signal.SIGKILL
        eventually(lambda: stat_of(sleeper) is None, within=5)
    finally:
        cleanup(child)
