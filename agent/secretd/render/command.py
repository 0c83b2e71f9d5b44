"""The command run after a changed render (`command = [...]`, docs/render.md, docs/security.md).

- argv list, never a shell; the argv is operator config and holds no secret;
- a minimal environment (PATH, LANG) so no secret can travel in it;
- stdin from /dev/null (or, for a caller that passes `stdin`, a pipe fed
  those bytes: rotation commands get the new value there, never in argv or
  the environment), no descriptors beyond 0-2 (`close_fds`), cwd `/`;
- its own session and process group, so a timeout can kill everything it
  started: SIGTERM to the group, a short grace, then SIGKILL to the group;
- stdout and stderr merged, read to the end but only the first
  `OUTPUT_CAP` bytes kept.

The output is never logged. A command may well print what it read from the
rendered file, so logs carry only its size, the exit status and the duration;
`CommandResult.output` is there for callers (tests, a future `status` detail)
that know what they are holding.

The child is spawned with `subprocess.Popen`, not the event loop's subprocess
support: uvloop's leaves extra descriptors (duplicated stdio, its own pipes) in
the child, and the standard library's fork/exec closes everything above 2.
Output is read with a loop reader and the exit is noticed by polling
`waitpid(WNOHANG)`, which work the same on asyncio's loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

import structlog

log = structlog.get_logger(__name__)

OUTPUT_CAP = 64 * 1024
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL to the group
DRAIN_AFTER_EXIT = 1.0
EXIT_POLL = 0.02  # how long to keep reading output once the command exited
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command ended. `returncode` None: it could not be started or was killed."""

    returncode: int | None
    timed_out: bool
    seconds: float
    output: bytes
    output_bytes: int  # total produced, including what was dropped past the cap
    error: str | None = None  # why it could not start

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        """A one-line, value-free summary for status and logs."""
        if self.error is not None:
            return f"could not start: {self.error}"
        if self.timed_out:
            return f"killed after its timeout ({self.seconds:.1f}s)"
        return f"exited with status {self.returncode}"


def command_environment() -> dict[str, str]:
    """The whole environment a command gets: no secret can be in it."""
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}


async def run_command(
    argv: Sequence[str],
    *,
    limit: float,
    grace: float = KILL_GRACE,
    cap: int = OUTPUT_CAP,
    stdin: bytes | None = None,
) -> CommandResult:
    """Run `argv` to completion or for `limit` seconds, then kill its process group.

    `stdin`: bytes written to the command's standard input (then closed);
    None gives it /dev/null."""
    started = time.monotonic()
    try:
        proc = _spawn(argv, feed=stdin is not None)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return CommandResult(None, False, time.monotonic() - started, b"", 0, reason)
    assert proc.stdout is not None
    collector = _OutputCollector(cap, proc.stdout.fileno())
    feeder = _InputFeeder(proc.stdin, stdin) if proc.stdin and stdin is not None else None
    timed_out = False
    try:
        async with asyncio.timeout(limit):
            await _exited(proc)
    except TimeoutError:
        timed_out = True
        await _kill_group(proc, grace)
    finally:
        if proc.poll() is None:  # cancelled from outside: never leave it running
            _signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=KILL_GRACE)  # SIGKILL is prompt; bounded anyway
        await collector.finish(DRAIN_AFTER_EXIT)
        proc.stdout.close()
        if feeder is not None:
            feeder.stop()
    returncode = None if timed_out else proc.returncode
    return CommandResult(
        returncode, timed_out, time.monotonic() - started, collector.kept(), collector.total
    )


def _spawn(argv: Sequence[str], *, feed: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=command_environment(),
        cwd="/",
        close_fds=True,
        start_new_session=True,
        restore_signals=True,
    )


async def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await _exited(proc)
    except TimeoutError:
        pass
    # SIGKILL the group even when the leader went: children it left keep the group alive.
    _signal_group(proc.pid, signal.SIGKILL)
    await _exited(proc)


async def _exited(proc: subprocess.Popen[bytes]) -> None:
    """Wait until the child itself has exited (its own output pipe may stay open
    in a background grandchild, so EOF is no signal of that)."""
    while proc.poll() is None:  # noqa: ASYNC110 - no loop-portable exit event for a Popen
        await asyncio.sleep(EXIT_POLL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class _InputFeeder:
    """Writes `data` to the command's stdin pipe with a loop writer, then closes
    the pipe (EOF). A command that exits without reading it all (EPIPE) is not
    an error of ours."""

    def __init__(self, pipe: IO[bytes], data: bytes) -> None:
        self._pipe = pipe
        self._fd = pipe.fileno()
        self._view = memoryview(data)
        self._loop = asyncio.get_running_loop()
        self._active = True
        os.set_blocking(self._fd, False)
        self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            written = os.write(self._fd, self._view[:65536])
        except BlockingIOError:
            return
        except OSError:  # EPIPE: the command closed its stdin
            self.stop()
            return
        self._view = self._view[written:]
        if not self._view:
            self.stop()

    def stop(self) -> None:
        """Stop writing and close the pipe (idempotent)."""
        if self._active:
            self._active = False
            self._loop.remove_writer(self._fd)
            self._pipe.close()


class _OutputCollector:
    """Reads a pipe with a loop reader, keeping the first `cap` bytes and counting the rest."""

    def __init__(self, cap: int, fd: int) -> None:
        self._cap = cap
        self._fd = fd
        self._parts: list[bytes] = []
        self._kept = 0
        self.total = 0
        self._loop = asyncio.get_running_loop()
        self._eof = self._loop.create_future()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._stop()
            return
        self.total += len(chunk)
        room = self._cap - self._kept
        if room > 0:
            piece = chunk[:room]
            self._parts.append(piece)
            self._kept += len(piece)

    def _stop(self) -> None:
        self._loop.remove_reader(self._fd)
        if not self._eof.done():
            self._eof.set_result(None)

    async def finish(self, within: float) -> None:
        """Wait up to `within` for EOF (a leftover grandchild may hold the pipe), then stop."""
        try:
            async with asyncio.timeout(within):
                await asyncio.shield(self._eof)
        except TimeoutError:
            pass
        finally:
            self._stop()

    def kept(self) -> bytes:
        return b"".join(self._parts)
