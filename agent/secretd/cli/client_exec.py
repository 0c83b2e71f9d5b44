"""`secretd exec`: run a command with secrets in its environment and keep it
in step with rotation.

The supervisor fetches every `--env VAR=NAME[#FIELD]` from the agent, starts
the command with those variables (never in argv) in a session and process
group of its own (exec_tree.py), and exits with its status (128+N when a
signal ended it). SIGTERM, SIGINT and SIGQUIT stop the whole group: forwarded
to every member, then SIGKILL after `--grace`. SIGHUP, SIGUSR1 and SIGUSR2 go
to the command alone. With `--restart` or `--signal SIG` it long-polls the
used secrets; when a value the child uses changes, it restarts the child
(SIGTERM to the group, `--grace`, SIGKILL, start again with fresh values) or
sends the command SIG. When the command exits, whatever it left running in
its group is stopped the same way. If the agent goes away, the child keeps
running and the watch reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import re
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from secretd.cli.exec_tree import ChildTree
from secretd.errors import UsageError
from secretd.model import name_problem
from secretd_client import AsyncClient, Backoff, SecretdClientError

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
_STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SETTLE_SECONDS = 0.1  # gather a burst of rotations into one restart
PR_SET_DUMPABLE = 4


@dataclass(frozen=True, slots=True)
class EnvSpec:
    """One `--env VAR=NAME[#FIELD]`."""

    var: str
    name: str
    field: str | None = None

    @classmethod
    def parse(cls, text: str) -> EnvSpec:
        var, sep, target = text.partition("=")
        if not sep or _VAR.fullmatch(var) is None:
            raise UsageError(f"--env {var or text!r}: expected VAR=NAME[#FIELD]")
        name, hashed, field = target.partition("#")
        problem = name_problem(name)
        if problem is not None:
            raise UsageError(f"--env {var}: {problem}")
        if hashed and not field:
            raise UsageError(f"--env {var}: empty field after '#'")
        return cls(var, name, field or None)


def parse_specs(texts: Sequence[str]) -> list[EnvSpec]:
    specs = [EnvSpec.parse(text) for text in texts]
    seen: set[str] = set()
    for spec in specs:
        if spec.var in seen:
            raise UsageError(f"--env {spec.var} is given twice")
        seen.add(spec.var)
    return specs


def parse_signal(text: str) -> signal.Signals:
    upper = text.upper()
    try:
        if upper.isdigit():
            return signal.Signals(int(upper))
        return signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper]
    except (KeyError, ValueError):
        raise UsageError(f"--signal {text!r}: not a signal name or number") from None


def exit_status(returncode: int) -> int:
    """The child's exit code, or 128+N when signal N ended it."""
    return 128 - returncode if returncode < 0 else returncode


def make_non_dumpable() -> None:
    """The supervisor holds values in memory: keep same-user ptrace and core
    dumps away from it. The child is unaffected (execve resets the flag)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ExecOptions:
    argv: Sequence[str]
    specs: Sequence[EnvSpec]
    restart: bool = False
    signal: signal.Signals | None = None
    grace: float = 10.0
    wait: float = 30.0
    retry_pause: float = 30.0  # after a watch error that retrying at once cannot fix


class Supervisor:
    """Runs one child at a time; see the module docstring."""

    def __init__(self, client: AsyncClient, options: ExecOptions, say: Say) -> None:
        self._client = client
        self._opts = options
        self._say = say
        self._values: dict[str, str | bytes] = {}
        self._versions: dict[str, str] = {}
        self._tree: ChildTree | None = None
        self._killer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._settled = asyncio.Event()
        self._settled.set()
        self._stopping = False
        self._restart_failed = False

    async def run(self) -> int:
        """Fetch, start, supervise; the child's exit status. Raises SDK errors
        (the agent is unreachable, a secret is missing) before starting anything."""
        self._values = await self._fetch_all()
        self._tree = await self._spawn()
        loop = asyncio.get_running_loop()
        for sig in FORWARDED:
            loop.add_signal_handler(sig, self._forward, sig)
        watcher = None
        if self._opts.restart or self._opts.signal is not None:
            watcher = asyncio.create_task(self._watch_all())
        try:
            status = exit_status(await self._supervise())
            return 1 if self._restart_failed else status
        finally:
            for sig in FORWARDED:
                loop.remove_signal_handler(sig)
            for task in (watcher, self._killer):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

    async def _supervise(self) -> int:
        while True:
            tree = self._tree
            assert tree is not None
            returncode = await tree.proc.wait()
            await self._settled.wait()  # a restart in progress replaces the child
            if self._tree is tree:
                break
        if tree.alive():  # the command is gone; what it left behind goes too
            await tree.end(self._opts.grace, first=None if self._stopping else signal.SIGTERM)
        return returncode

    async def _fetch_all(self) -> dict[str, str | bytes]:
        values: dict[str, str | bytes] = {}
        for spec in self._opts.specs:
            secret = await self._client.get(spec.name, field=spec.field)
            raw = secret.as_bytes()
            if b"\x00" in raw:
                raise SecretdClientError(
                    f"{spec.name}: the value holds a NUL byte, which an environment cannot carry"
                )
            values[spec.var] = secret.value
            self._versions[spec.name] = secret.version_id
        return values

    async def _spawn(self) -> ChildTree:
        env = dict(os.environb)
        for var, value in self._values.items():
            env[var.encode()] = value.encode() if isinstance(value, str) else value
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._opts.argv, env=env, close_fds=True, start_new_session=True
            )
            return ChildTree(proc)
        except OSError as exc:
            raise SecretdClientError(
                f"cannot run {self._opts.argv[0]!r}: {exc.strerror or exc}"
            ) from None

    def _forward(self, sig: signal.Signals) -> None:
        tree = self._tree
        if tree is None:
            return
        if sig not in _STOPPING:
            tree.signal_child(sig)
            return
        # The child has its own session: a terminal's ^C reaches only us, so
        # everything is forwarded, to the whole group, and SIGKILL follows.
        self._stopping = True
        tree.signal_group(sig)
        if self._killer is None:
            self._killer = asyncio.create_task(self._kill_after_grace())

    async def _kill_after_grace(self) -> None:
        await asyncio.sleep(self._opts.grace)
        if self._tree is not None:
            self._tree.signal_group(signal.SIGKILL)

    async def _watch_all(self) -> None:
        changed: asyncio.Queue[str] = asyncio.Queue()
        async with asyncio.TaskGroup() as group:
            for name in dict.fromkeys(spec.name for spec in self._opts.specs):
                group.create_task(self._watch_one(name, changed))
            group.create_task(self._react(changed))

    async def _watch_one(self, name: str, changed: asyncio.Queue[str]) -> None:
        lost = False

        def trouble(exc: SecretdClientError) -> None:
            nonlocal lost
            if not lost:
                self._say(f"watching {name}: {exc}; the command keeps running, retrying")
            lost = True

        while True:
            try:
                index = self._versions.get(name)
                async for secret in self._client.watch(
                    name, wait=self._opts.wait, index=index, on_error=trouble
                ):
                    lost = False
                    if secret.version_id != self._versions.get(name):
                        changed.put_nowait(name)
            except SecretdClientError as exc:
                self._say(f"watching {name}: {exc}; retrying in {self._opts.retry_pause:g}s")
                await asyncio.sleep(self._opts.retry_pause)

    async def _react(self, changed: asyncio.Queue[str]) -> None:
        while True:
            names = {await changed.get()}
            await asyncio.sleep(SETTLE_SECONDS)
            while not changed.empty():
                names.add(changed.get_nowait())
            values = await self._fresh_values()
            if values is None or self._stopping:
                continue
            if values == self._values:
                continue  # a rotation that does not touch what the child uses
            self._values = values
            await self._rotate(", ".join(sorted(names)))

    async def _fresh_values(self) -> dict[str, str | bytes] | None:
        backoff, attempt = Backoff(initial=0.2, maximum=10.0), 0
        rng = random.Random()  # noqa: S311 - jitter, not secrecy
        while True:
            try:
                return await self._fetch_all()
            except SecretdClientError as exc:
                if not exc.retryable:
                    self._say(f"re-reading secrets: {exc}; the command keeps its values")
                    return None
                if attempt == 0:
                    self._say(f"re-reading secrets: {exc}; retrying")
                await asyncio.sleep(backoff.delay(attempt, rng))
                attempt += 1

    async def _rotate(self, names: str) -> None:
        tree = self._tree
        if tree is None or tree.proc.returncode is not None:
            return
        if self._opts.signal is not None:
            self._say(f"{names} rotated; sending {self._opts.signal.name}")
            tree.signal_child(self._opts.signal)
            return
        self._say(f"{names} rotated; restarting {self._opts.argv[0]}")
        async with self._lock:
            self._settled.clear()
            try:
                await tree.end(self._opts.grace)
                if not self._stopping:
                    self._tree = await self._spawn()
            except SecretdClientError as exc:
                self._say(f"cannot restart: {exc}")
                self._restart_failed = True
            finally:
                self._settled.set()


def stderr_say(prefix: str) -> Say:
    def say(line: str) -> None:
        print(f"{prefix}{line}", file=sys.stderr, flush=True)

    return say
