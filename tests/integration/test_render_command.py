"""Commands after a render, run as real child processes: no shell, minimal
environment, no inherited descriptors, own process group killed at the timeout,
capped output."""

from __future__ import annotations

import os
import time

import pytest

from secretd.render.command import command_environment, run_command


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_argv_is_not_a_shell() -> None:
    result = await run_command(["/bin/echo", "a; rm -rf /", "$HOME", "`id`"], limit=10)
    assert result.ok
    assert result.output == b"a; rm -rf / $HOME `id`\n"


async def test_environment_is_minimal() -> None:
    os.environ["SECRETD_TEST_LEAK"] = "leak-me"
    try:
        result = await run_command(["/usr/bin/env"], limit=10)
    finally:
        del os.environ["SECRETD_TEST_LEAK"]
    lines = sorted(result.output.decode().splitlines())
    assert lines == sorted(f"{k}={v}" for k, v in command_environment().items())


async def test_no_descriptors_beyond_stdio() -> None:
    read_end, write_end = os.pipe()
    os.set_inheritable(read_end, True)
    os.set_inheritable(write_end, True)
    try:
        result = await run_command(["/bin/sh", "-c", "ls /proc/$$/fd"], limit=10)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert sorted(result.output.decode().split()) == ["0", "1", "2"]


async def test_stdin_is_dev_null_and_cwd_is_root() -> None:
    result = await run_command(["/bin/sh", "-c", "readlink /proc/$$/fd/0; pwd; cat"], limit=10)
    assert result.output.decode().splitlines() == ["/dev/null", "/"]


async def test_own_session_and_process_group() -> None:
    result = await run_command(["/bin/sh", "-c", "echo $$; ps -o pgid=,sid= -p $$"], limit=10)
    pid, ids = result.output.decode().split("\n", 1)
    pgid, sid = ids.split()
    assert pgid == pid and sid == pid
    assert int(pgid) != os.getpgrp()


async def test_hanging_command_is_killed_with_its_whole_group() -> None:
    started = time.monotonic()
    result = await run_command(
        ["/bin/sh", "-c", "trap '' TERM; sleep 300 & echo $!; sleep 300; wait"],
        limit=0.5,
        grace=0.3,
    )
    assert result.timed_out and not result.ok
    assert result.returncode is None
    assert "killed after its timeout" in result.describe()
    grandchild = int(result.output.split()[0])
    for _ in range(100):  # the kernel reaps the orphan via init; bounded wait
        if not _alive(grandchild):
            break
        time.sleep(0.02)
    assert not _alive(grandchild)
    assert time.monotonic() - started < 30


async def test_leader_exiting_on_term_still_kills_leftovers() -> None:
    result = await run_command(
        ["/bin/sh", "-c", "(trap '' TERM; sleep 300) & echo $!; sleep 300"],
        limit=0.3,
        grace=0.5,
    )
    assert result.timed_out
    leftover = int(result.output.split()[0])
    for _ in range(100):
        if not _alive(leftover):
            break
        time.sleep(0.02)
    assert not _alive(leftover)


async def test_output_is_capped_but_drained() -> None:
    result = await run_command(["/usr/bin/head", "-c", "300000", "/dev/zero"], limit=10, cap=1000)
    assert result.ok
    assert len(result.output) == 1000
    assert result.output_bytes == 300000


async def test_stderr_is_captured_too() -> None:
    result = await run_command(["/bin/sh", "-c", "echo err >&2; exit 3"], limit=10)
    assert result.returncode == 3 and not result.ok
    assert result.output == b"err\n"
    assert result.describe() == "exited with status 3"


async def test_background_child_holding_the_pipe_does_not_block() -> None:
    started = time.monotonic()
    result = await run_command(["/bin/sh", "-c", "sleep 5 & echo started"], limit=10)
    assert result.ok
    assert result.output.startswith(b"started")
    assert time.monotonic() - started < 4.5


@pytest.mark.parametrize("argv", [["/nonexistent/binary"], ["/etc/hostname"]])
async def test_command_that_cannot_start(argv: list[str]) -> None:
    result = await run_command(argv, limit=10)
    assert not result.ok
    assert result.error is not None
    assert result.describe().startswith("could not start")


def test_same_guarantees_under_uvloop() -> None:
    """The agent runs on uvloop: its subprocess support must keep every promise."""
    import asyncio

    import uvloop

    async def scenario() -> tuple[str, str, bool, int]:
        ids = await run_command(
            ["/bin/sh", "-c", "echo $$; ps -o pgid=,sid= -p $$; ls /proc/$$/fd; /usr/bin/env"],
            limit=10,
        )
        hung = await run_command(
            ["/bin/sh", "-c", "trap '' TERM; sleep 300 & echo $!; sleep 300"], limit=0.3, grace=0.2
        )
        return ids.output.decode(), hung.output.decode(), hung.timed_out, os.getpgrp()

    read_end, write_end = os.pipe()
    os.set_inheritable(read_end, True)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            out, hung_out, timed_out, our_pgid = runner.run(scenario())
    finally:
        os.close(read_end)
        os.close(write_end)
    pid, ids, *rest = out.split("\n")
    assert ids.split() == [pid, pid] and int(pid) != our_pgid
    fds = [line for line in rest if line.isdigit()]
    assert sorted(fds) == ["0", "1", "2"]
    env = sorted(
        line for line in rest if "=" in line and not line.startswith("PWD=")
    )  # sh sets PWD
    assert env == sorted(f"{k}={v}" for k, v in command_environment().items())
    assert timed_out
    leftover = int(hung_out.split()[0])
    for _ in range(100):
        if not _alive(leftover):
            break
        time.sleep(0.02)
    assert not _alive(leftover)
