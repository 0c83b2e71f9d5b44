"""`secretd get`, `status` and `exec` as real processes against the fake agent
on a real Unix socket; `exec` supervises real children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent_proc import short_tmp
from tests.fakes.api_server import FakeAgent
from tests.integration.waits import eventually

CANARY = "canary-7Hq2-pw"
CLI = [sys.executable, "-m", "secretd.cli.main"]

# The child: logs "start PID VALUE" and each signal it gets; exits 0 on TERM.
CHILD = r"""
import os, signal, sys, time
log = sys.argv[1]
def note(line):
    with open(log, "a") as f:
        f.write(line + "\n")
def on(sig, frame):
    note(f"signal {os.getpid()} {signal.Signals(sig).name}")
    if sig == signal.SIGTERM and os.environ.get("IGNORE_TERM") != "1":
        sys.exit(0)
if os.environ.get("NO_HANDLERS") != "1":
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGINT):
        signal.signal(s, on)
note(f"start {os.getpid()} {os.environ.get('PW', '-')}")
if len(sys.argv) > 2:
    sys.exit(int(sys.argv[2]))
for _ in range(600):
    time.sleep(0.1)
"""


@pytest.fixture
def tmp() -> Iterator[Path]:
    with short_tmp("cli-") as path:
        yield path


@pytest.fixture
def agent(tmp: Path) -> Iterator[FakeAgent]:
    secrets: dict[str, str | bytes] = {
        "db/app": json.dumps({"password": CANARY, "user": "app"}),
        "bin": b"\xff\x00z",
    }
    with FakeAgent(tmp / "a.sock", secrets) as fake:
        fake.secrets.rotate("hidden/x", "x")
        fake.secrets.forbid("hidden/x")
        yield fake


def cli(
    agent: FakeAgent | None, *args: str, sock: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = dict(
        os.environ, SECRETD_SOCKET=sock or (agent.socket_path if agent else "/tmp/none.sock")
    )
    return subprocess.run([*CLI, *args], env=env, capture_output=True, timeout=30, check=False)


def one_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert text.count("\n") == 1 and "Traceback" not in text, text
    return text


# -- get --------------------------------------------------------------------


def test_get_prints_the_raw_value(agent: FakeAgent) -> None:
    assert cli(agent, "get", "db/app", "--field", "password").stdout == CANARY.encode()
    assert cli(agent, "get", "bin").stdout == b"\xff\x00z"
    document = json.loads(cli(agent, "get", "bin", "--json").stdout)
    assert document["value_b64"] == "/wB6" and document["version_id"] == "v1"
    agent.secrets.rotate("db/app", "two")
    assert cli(agent, "get", "db/app", "--stage", "previous", "--field", "user").stdout == b"app"
    assert cli(agent, "get", "db/app", "--version", "v2").stdout == b"two"


def test_get_into_a_closed_pipe_is_quiet(agent: FakeAgent) -> None:
    agent.secrets.rotate("big", "x" * 1_000_000)
    env = dict(os.environ, SECRETD_SOCKET=agent.socket_path)
    proc = subprocess.Popen(
        [*CLI, "get", "big"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(10) == b"x" * 10
    proc.stdout.close()  # the reader goes away mid-value
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 1
    assert b"Traceback" not in err and b"Exception" not in err


def test_get_warns_about_a_stale_value(tmp: Path) -> None:
    stale = (
        b'{"name": "db/app", "version_id": "v1", "stages": ["current"], '
        b'"created_at": "2026-01-01T00:00:00Z", "value": "old", "stale": true}'
    )
    with FakeAgent(tmp / "s.sock") as fake:
        fake.canned(stale)
        result = cli(fake, "get", "db/app")
    assert (result.returncode, result.stdout) == (0, b"old")
    assert "stale" in one_line(result.stderr)


def test_get_socket_option_beats_the_environment(agent: FakeAgent) -> None:
    result = cli(None, "get", "bin", "--socket", agent.socket_path)
    assert result.returncode == 0 and result.stdout == b"\xff\x00z"


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("get", "no/such"), 1, "no/such"),
        (("get", "hidden/x"), 1, "not allowed"),
        (("get", "a/../b"), 2, "invalid secret name"),
        (("get", "db/app", "--field", "nope"), 2, "field"),
        (("get", "db/app", "--stage", "previous", "--version", "v1"), 2, "not allowed with"),
    ],
)
def test_get_failures_are_one_line_with_exit_codes(
    agent: FakeAgent, args: tuple[str, ...], code: int, words: str
) -> None:
    result = cli(agent, *args)
    assert result.returncode == code
    assert result.stdout == b""
    assert words in one_line(result.stderr)


def test_get_without_an_agent(tmp: Path) -> None:
    result = cli(None, "get", "db/app", sock=str(tmp / "gone.sock"))
    assert result.returncode == 1
    assert "cannot reach the agent" in one_line(result.stderr)


def test_get_with_a_broken_agent(agent: FakeAgent) -> None:
    agent.inject("garbage")
    result = cli(agent, "get", "db/app")
    assert result.returncode == 1 and "not a JSON object" in one_line(result.stderr)
    agent.secrets.fail_next(1, "backend_unavailable")
    result = cli(agent, "get", "db/app")
    assert result.returncode == 1 and "injected" in one_line(result.stderr)


# -- status -----------------------------------------------------------------


def test_status_table_never_shows_values(agent: FakeAgent) -> None:
    result = cli(agent, "status")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert "agent:     ok" in out
    assert "db/app" in out and "v1" in out and "static" in out
    assert "hidden/x" not in out  # not readable by this caller
    assert CANARY not in out and CANARY not in result.stderr.decode()
    document = json.loads(cli(agent, "status", "--json").stdout)
    assert document["health"]["status"] == "ok"
    assert [row["name"] for row in document["secrets"]] == ["bin", "db/app"]
    assert CANARY not in json.dumps(document)


def test_status_of_a_degraded_agent_exits_1(tmp: Path) -> None:
    health = (
        b'{"status": "degraded", "backends": {"vault": {"ok": false, '
        b'"last_error": "timed out", "last_success": null}}, "cache": {"entries": 1, "stale": 1}}'
    )
    with FakeAgent(tmp / "d.sock") as fake:
        fake.canned(health)  # every route answers this; the listing is then unreadable
        result = cli(fake, "status")
    out = result.stdout.decode()
    assert result.returncode == 1
    assert "agent:     degraded" in out and "timed out" in out
    assert "secrets: not listed" in out


def test_status_without_an_agent(tmp: Path) -> None:
    result = cli(None, "status", sock=str(tmp / "gone.sock"))
    assert result.returncode == 1
    assert "cannot reach the agent" in one_line(result.stderr)


# -- exec -------------------------------------------------------------------


class Child:
    """Reads the log the child script writes."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def lines(self) -> list[list[str]]:
        text = self.log.read_text() if self.log.exists() else ""
        return [line.split(" ", 2) for line in text.splitlines()]

    def starts(self) -> list[list[str]]:
        return [line for line in self.lines() if line[0] == "start"]

    def signals(self) -> list[str]:
        return [line[2] for line in self.lines() if line[0] == "signal"]


def start_exec(
    agent: FakeAgent, tmp: Path, *options: str, exit_with: int | None = None, **env: str
) -> tuple[subprocess.Popen[bytes], Child]:
    script = tmp / "child.py"
    script.write_text(CHILD)
    log = tmp / "child.log"
    argv = [sys.executable, str(script), str(log)]
    if exit_with is not None:
        argv.append(str(exit_with))
    full_env = dict(os.environ, SECRETD_SOCKET=agent.socket_path, **env)
    proc = subprocess.Popen(
        [*CLI, "exec", *options, "--env", "PW=db/app#password", "--", *argv],
        env=full_env,
        stderr=subprocess.PIPE,
    )
    return proc, Child(log)


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode()


def test_exec_puts_values_in_the_environment_never_argv(agent: FakeAgent, tmp: Path) -> None:
    proc, child = start_exec(agent, tmp)
    try:
        eventually(lambda: len(child.starts()) == 1)
        pid = int(child.starts()[0][1])
        assert child.starts()[0][2] == CANARY
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"PW={CANARY}".encode() in environ
        for who in (pid, proc.pid):
            assert CANARY.encode() not in Path(f"/proc/{who}/cmdline").read_bytes()
        assert CANARY.encode() not in Path(f"/proc/{proc.pid}/environ").read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc)
    assert code == 0
    assert CANARY not in err


@pytest.mark.parametrize("exit_with", [0, 7])
def test_exec_exits_with_the_childs_status(agent: FakeAgent, tmp: Path, exit_with: int) -> None:
    proc, _ = start_exec(agent, tmp, exit_with=exit_with)
    code, _ = finish(proc)
    assert code == exit_with


def test_exec_child_dying_by_a_signal_gives_128_plus_n(agent: FakeAgent, tmp: Path) -> None:
    script = tmp / "suicide.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    env = dict(os.environ, SECRETD_SOCKET=agent.socket_path)
    run = subprocess.run(
        [*CLI, "exec", "--env", "PW=db/app", "--", sys.executable, str(script)],
        env=env,
        timeout=30,
        check=False,
    )
    assert run.returncode == 128 + signal.SIGKILL


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1])
def test_exec_forwards_signals(agent: FakeAgent, tmp: Path, sig: signal.Signals) -> None:
    proc, child = start_exec(agent, tmp)
    eventually(lambda: len(child.starts()) == 1)
    proc.send_signal(sig)
    eventually(lambda: sig.name in child.signals())
    if sig != signal.SIGTERM:
        proc.send_signal(signal.SIGTERM)
    code, _ = finish(proc)
    assert code == 0
    assert len(child.starts()) == 1


def test_exec_child_killed_by_a_forwarded_signal_gives_128_plus_n(
    agent: FakeAgent, tmp: Path
) -> None:
    proc, child = start_exec(agent, tmp, NO_HANDLERS="1")
    eventually(lambda: len(child.starts()) == 1)
    proc.send_signal(signal.SIGTERM)
    code, _ = finish(proc)
    assert code == 128 + signal.SIGTERM


def test_exec_restarts_the_child_on_rotation(agent: FakeAgent, tmp: Path) -> None:
    proc, child = start_exec(agent, tmp, "--restart", "--grace", "5s")
    try:
        eventually(lambda: len(child.starts()) == 1)
        agent.secrets.rotate("db/app", json.dumps({"password": "second", "user": "app"}))
        eventually(lambda: len(child.starts()) == 2)
        first, second = child.starts()
        assert second[2] == "second" and first[1] != second[1]
        assert child.signals() == ["SIGTERM"]
        # a rotation that leaves the used field alone does not restart
        agent.secrets.rotate("db/app", json.dumps({"password": "second", "user": "other"}))
        time.sleep(1.0)
        assert len(child.starts()) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc)
    assert code == 0
    assert "rotated; restarting" in err and "second" not in err


def test_exec_fails_when_the_restart_cannot_start_the_command(agent: FakeAgent, tmp: Path) -> None:
    command = tmp / "app.sh"
    command.write_text('#!/bin/sh\necho started >> "$0.log"\nexec sleep 30\n')
    command.chmod(0o755)
    env = dict(os.environ, SECRETD_SOCKET=agent.socket_path)
    proc = subprocess.Popen(
        [*CLI, "exec", "--restart", "--env", "PW=db/app", "--", str(command)],
        env=env,
        stderr=subprocess.PIPE,
    )
    log = tmp / "app.sh.log"
    eventually(lambda: log.exists())
    command.unlink()  # the next start fails
    agent.secrets.rotate("db/app", "new")
    code, err = finish(proc)
    assert code == 1
    assert "cannot restart" in err and "app.sh" in err


def test_exec_kills_a_child_that_ignores_sigterm_after_grace(agent: FakeAgent, tmp: Path) -> None:
    proc, child = start_exec(agent, tmp, "--restart", "--grace", "300ms", IGNORE_TERM="1")
    try:
        eventually(lambda: len(child.starts()) == 1)
        agent.secrets.rotate("db/app", json.dumps({"password": "third"}))
        eventually(lambda: len(child.starts()) == 2)
        assert child.signals() == ["SIGTERM"]  # ignored, then killed after the grace
        assert child.starts()[1][2] == "third"
    finally:
        for start in child.starts()[1:]:
            os.kill(int(start[1]), signal.SIGKILL)  # it ignores SIGTERM
        code, _ = finish(proc)
    assert code == 128 + signal.SIGKILL


def test_exec_sends_the_signal_on_rotation(agent: FakeAgent, tmp: Path) -> None:
    proc, child = start_exec(agent, tmp, "--signal", "HUP")
    try:
        eventually(lambda: len(child.starts()) == 1)
        agent.secrets.rotate("db/app", json.dumps({"password": "hup"}))
        eventually(lambda: "SIGHUP" in child.signals())
        assert len(child.starts()) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code, _ = finish(proc)
    assert code == 0


def test_exec_keeps_the_child_when_the_agent_goes_away(agent: FakeAgent, tmp: Path) -> None:
    proc, child = start_exec(agent, tmp, "--restart")
    try:
        eventually(lambda: len(child.starts()) == 1)
        agent.stop()
        time.sleep(0.5)
        assert proc.poll() is None and len(child.starts()) == 1
        agent.secrets.rotate("db/app", json.dumps({"password": "back"}))
        agent.start()
        eventually(lambda: len(child.starts()) == 2)
        assert child.starts()[1][2] == "back"
    finally:
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc)
    assert code == 0
    assert "keeps running" in err


def test_exec_without_an_agent_starts_nothing(tmp: Path) -> None:
    marker = tmp / "ran"
    env = dict(os.environ, SECRETD_SOCKET=str(tmp / "gone.sock"))
    result = subprocess.run(
        [*CLI, "exec", "--env", "X=db/app", "--", "touch", str(marker)],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot reach the agent" in one_line(result.stderr)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--env", "X=no/such", "--", "true"], 1),
        (["--env", "X=hidden/x", "--", "true"], 1),
        (["--env", "1X=db/app", "--", "true"], 2),
        (["--env", "X=a/../b", "--", "true"], 2),
        (["--env", "X=db/app", "--env", "X=bin", "--", "true"], 2),
        (["--env", "X=db/app"], 2),
        (["--env", "X=db/app", "--signal", "NOPE", "--", "true"], 2),
        (["--env", "X=db/app", "--restart", "--signal", "HUP", "--", "true"], 2),
        (["--env", "X=bin", "--", "true"], 1),  # a NUL byte cannot go into an environment
        (["--env", "X=db/app", "--", "/nonexistent/cmd"], 1),
    ],
)
def test_exec_refusals(agent: FakeAgent, args: list[str], code: int) -> None:
    result = cli(agent, "exec", *args)
    assert result.returncode == code
    one_line(result.stderr)
