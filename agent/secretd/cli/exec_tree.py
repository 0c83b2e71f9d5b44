"""`ChildTree`: the process group `secretd exec` runs its command in.

The command is started in a new session (`setsid`), so it leads its own
process group and everything it forks stays in that group unless it moves
itself out (a daemon that calls `setsid` again escapes, as it would escape
any supervisor without cgroups). Stopping the command means stopping the
group: SIGTERM to every member, then, when the command has not exited and
the group is not empty within the grace period, SIGKILL to the group. A
background job left holding an old secret in its environment is ended with
the command it belongs to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

POLL = 0.05  # seconds between checks that the group is empty
KILL_WAIT = 2.0  # after SIGKILL: how long to wait for the group to go


class ChildTree:
    """One started command and its process group (pgid = the command's pid)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pgid = proc.pid

    def signal_group(self, sig: signal.Signals) -> None:
        """`sig` to every process of the group (nothing when it is empty)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def signal_child(self, sig: signal.Signals) -> None:
        """`sig` to the command alone (its own reload or rotation protocol)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def alive(self) -> bool:
        """Whether any process is left in the group."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # a member changed its uid: it is there, we cannot signal it
        return True

    async def end(self, grace: float, *, first: signal.Signals | None = signal.SIGTERM) -> int:
        """Stop the whole group: `first` (None: already sent), then SIGKILL when
        the command or any member is still there after `grace` seconds. The
        command's return code."""
        if first is not None:
            self.signal_group(first)
        try:
            async with asyncio.timeout(max(grace, 0.0)):
                await self.proc.wait()
                await self._emptied()
        except TimeoutError:
            self.signal_group(signal.SIGKILL)
            await self.proc.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT):
                    await self._emptied()
        returncode = self.proc.returncode
        assert returncode is not None
        return returncode

    async def _emptied(self) -> None:
        # Nothing signals that a process group emptied (its members are not our
        # children, so no wait() sees them): poll.
        while self.alive():  # noqa: ASYNC110
            await asyncio.sleep(POLL)
