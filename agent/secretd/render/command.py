"""The command run after a changed render (`command = [...]`, SPEC §3, §10).

- argv list, never a shell; the argv is operator config and holds no secret;
- a minimal environment (PATH, LANG) so no secret can travel in it;
- stdin from /dev/null, no descriptors beyond 0-2 (`close_fds`), cwd `/`;
- its own session and process group, so a timeout can kill everything it
  started: SIGTERM to the group, a short grace, then SIGKILL to the group;
- stdout and stderr merged, read to the end but only the first
  `OUTPUT_CAP` bytes kept.

The output is never logged. A command may well print what it read from the
rendered file, so logs carry only its size, the exit status and the duration;
`CommandResult.output` is there for callers (tests, a future `status` detail)
that know what they are holding.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

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
    argv: Sequence[str], *, limit: float, grace: float = KILL_GRACE, cap: int = OUTPUT_CAP
) -> CommandResult:
    """Run `argv` to completion or for `limit` seconds, then kill its process group."""
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=command_environment(),
            cwd="/",
            close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return CommandResult(None, False, time.monotonic() - started, b"", 0, reason)
    assert proc.stdout is not None
    collector = _OutputCollector(cap)
    reader = asyncio.create_task(collector.consume(proc.stdout))
    timed_out = False
    try:
        async with asyncio.timeout(limit):
            await _exited(proc)
    except TimeoutError:
        timed_out = True
        await _kill_group(proc, grace)
    finally:
        if proc.returncode is None:  # cancelled from outside: never leave it running
            _signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await _finish_reading(reader)
        _close_pipes(proc)
    returncode = None if timed_out else proc.returncode
    return CommandResult(
        returncode, timed_out, time.monotonic() - started, collector.kept(), collector.total
    )


async def _kill_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await _exited(proc)
    except TimeoutError:
        pass
    # SIGKILL the group even when the leader went: children it left keep the group alive.
    _signal_group(proc.pid, signal.SIGKILL)
    await _exited(proc)


async def _exited(proc: asyncio.subprocess.Process) -> None:
    """Wait until the child itself has exited.

    Not `proc.wait()`: on Python 3.11 that also waits for every pipe to close,
    so a background grandchild holding stdout would make a finished command
    look hung. The child watcher sets `returncode` as soon as it reaps the child.
    """
    while proc.returncode is None:  # noqa: ASYNC110 - no event exists for this
        await asyncio.sleep(EXIT_POLL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _close_pipes(proc: asyncio.subprocess.Process) -> None:
    """Drop our end of the output pipe. A grandchild that still holds the other
    end gets EPIPE/SIGPIPE on its next write rather than keeping us waiting."""
    transport = getattr(proc, "_transport", None)  # asyncio keeps no public handle
    if transport is not None:
        transport.close()


async def _finish_reading(reader: asyncio.Task[None]) -> None:
    """Give the reader a moment to reach EOF; a leftover grandchild may hold the pipe."""
    try:
        async with asyncio.timeout(DRAIN_AFTER_EXIT):
            await asyncio.shield(reader)
    except TimeoutError:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


class _OutputCollector:
    """Keeps the first `cap` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._parts: list[bytes] = []
        self._kept = 0
        self.total = 0

    async def consume(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.total += len(chunk)
            room = self._cap - self._kept
            if room > 0:
                piece = chunk[:room]
                self._parts.append(piece)
                self._kept += len(piece)

    def kept(self) -> bytes:
        return b"".join(self._parts)
