"""One rotation of one secret: the step state machine (docs/rotation.md).

    hold the secret's lock (else RotationBusy)
    pending version there?   yes: resume it after the last step recorded for its
                             token (from `set` when the token is not ours)
                             no:  create -> stage it pending under a new token
    set -> test -> finish, recording progress after each step

A step that fails records the failure and raises; `current` is only ever
changed by `finish`, so a failed `set` or `test` leaves it untouched. A failed
`test` sends the next run back to `set` (the target may have been changed
meanwhile); everything else resumes where it stopped. The whole run is bounded
by the entry's `timeout`.

`checkpoint(step, phase)` is called once a step took effect ("applied") and
once its progress is on disk ("recorded"): the crash tests stop the process
there; it does nothing in the agent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from secretd.backends.rotatable import Pending
from secretd.clock import Clock
from secretd.errors import Conflict, SecretdError
from secretd.model import Caller, SecretName
from secretd.rotation.errors import RotationError, RotationTestFailed
from secretd.rotation.journal import Journal
from secretd.rotation.model import Context, Outcome, Rotator, Step, Target, steps_after
from secretd.rotation.state import RotationState, StateDir

Checkpoint = Callable[[Step, str], None]


def _no_checkpoint(step: Step, phase: str) -> None:
    del step, phase


def new_token() -> str:
    """A rotation token: also a valid file-store version id and AWS ClientRequestToken."""
    return uuid.uuid4().hex


class Rotation:
    """Rotates one secret; `run()` is safe to call again after any failure."""

    def __init__(
        self,
        name: SecretName,
        target: Target,
        rotator: Rotator,
        *,
        state: StateDir,
        journal: Journal,
        clock: Clock,
        timeout: float,
        checkpoint: Checkpoint | None = None,
        token: Callable[[], str] = new_token,
    ) -> None:
        self.name = name
        self.rotator = rotator
        self._target = target
        self._state = state
        self._journal = journal
        self._clock = clock
        self._timeout = timeout
        self._checkpoint = checkpoint or _no_checkpoint
        self._token = token

    async def current_created_at(self) -> datetime:
        """When the current version was made (the schedule's start for a secret
        never rotated here)."""
        return (await self._target.current()).created_at

    async def run(self, *, caller: Caller | None = None, fresh: bool = False) -> Outcome:
        """Rotate now (resuming a pending version unless `fresh`). Raises
        RotationBusy, or RotationError after recording the failure."""
        with self._state.hold(self.name):
            run = _Run(self, self._state.load(self.name), caller)
            try:
                async with asyncio.timeout(self._timeout):
                    return await run.go(fresh)
            except TimeoutError:
                message = f"took longer than its timeout ({self._timeout:g}s)"
                raise run.failure(message, redo_from_set=False) from None
            except RotationTestFailed as exc:
                raise run.failure(exc.message, redo_from_set=True) from None
            except SecretdError as exc:
                raise run.failure(exc.message, redo_from_set=False) from None
            except Exception as exc:  # a driver's own exception: its text may hold anything
                raise run.failure(f"unexpected {type(exc).__name__}", redo_from_set=False) from None


class _Run:
    """The working state of one `Rotation.run`."""

    def __init__(self, owner: Rotation, state: RotationState, caller: Caller | None) -> None:
        self.o = owner
        self.state = state
        self.caller = caller
        self.step = Step.CREATE
        self.done: list[Step] = []
        self.pending: Pending | None = None
        self.promoted: str | None = None  # the version id finish made current

    async def go(self, fresh: bool) -> Outcome:
        target = self.o._target
        pending = await target.read_pending()
        if pending is not None and fresh:
            await target.drop_pending(pending)
            self.o._journal.step(
                self.o.name, Step.CREATE, pending.version_id, "dropped", self.caller
            )
            pending = None
        resumed = pending is not None
        if pending is None and await self._finished_unrecorded():
            if self.state.step is Step.TEST:  # the promotion was never audited
                self.o._journal.step(self.o.name, Step.FINISH, self.state.token, "ok", self.caller)
            return self._succeeded((), self.state.token, resumed=True)
        if pending is None:
            pending, resumed = await self._create()
            last = Step.CREATE
        else:
            ours = self.state.token == pending.token and self.state.step is not None
            last = self.state.step if ours and self.state.step else Step.CREATE
            self.o._journal.step(self.o.name, last, pending.version_id, "resumed", self.caller)
        self.pending = pending
        context = await self._context()
        for step in steps_after(last):
            self.step = step
            await self._apply(step, context, pending)
            self._record(step, pending)
        version_id = self.promoted or pending.version_id
        return self._succeeded(tuple(self.done), version_id, resumed=resumed)

    def _succeeded(
        self, steps: tuple[Step, ...], version_id: str | None, *, resumed: bool
    ) -> Outcome:
        now = self.o._clock.now()
        self.o._state.save(self.o.name, self.state.succeeded(now))
        self.o._journal.rotated(self.o.name, version_id or "")
        return Outcome(self.o.name, True, version_id, steps, resumed, now)

    async def _finished_unrecorded(self) -> bool:
        """A run stopped between promoting its version and recording that: the
        token it recorded is the current version's id (file store, AWS)."""
        token = self.state.token
        if token is None or self.state.step not in (Step.TEST, Step.FINISH):
            return False
        return (await self.o._target.current()).version_id == token

    async def _context(self) -> Context:
        target = self.o._target
        return Context(self.o.name, await target.current(), await target.previous())

    async def _create(self) -> tuple[Pending, bool]:
        """The staged pending version, and whether it is another writer's."""
        target = self.o._target
        value = await self.o.rotator.create(await self._context())
        try:
            pending = await target.stage_pending(value, self.o._token())
        except Conflict:
            # Another writer staged one between our read and our write: resume theirs.
            found = await target.read_pending()
            if found is None:
                raise
            self.o._journal.step(self.o.name, Step.CREATE, found.version_id, "resumed", self.caller)
            self.pending = found
            self.state = self.state.progressed(found.token, Step.CREATE)
            self.o._state.save(self.o.name, self.state)
            return found, True
        self._record(Step.CREATE, pending)
        return pending, False

    async def _apply(self, step: Step, context: Context, pending: Pending) -> None:
        rotator = self.o.rotator
        if step is Step.SET:
            await self._wait_grace(context)
            await rotator.set(context, pending.value)
        elif step is Step.TEST:
            await rotator.test(context, pending.value)
        elif step is Step.FINISH:
            self.promoted = await self.o._target.promote_pending(pending)

    async def _wait_grace(self, context: Context) -> None:
        """Hold `set` until the current version has been current for `grace`
        (judged by the later of its creation and our last finished rotation)."""
        grace = self.o.rotator.grace
        if grace <= 0:
            return
        since = context.current.created_at
        if self.state.last_rotated_at is not None:
            since = max(since, self.state.last_rotated_at)
        wait = (since + timedelta(seconds=grace) - self.o._clock.now()).total_seconds()
        if wait > 0:
            await self.o._clock.sleep(min(wait, grace))

    def _record(self, step: Step, pending: Pending) -> None:
        self.o._checkpoint(step, "applied")
        self.state = self.state.progressed(pending.token, step)
        self.o._state.save(self.o.name, self.state)
        self.done.append(step)
        self.o._journal.step(self.o.name, step, pending.version_id, "ok", self.caller)
        self.o._checkpoint(step, "recorded")

    def failure(self, message: str, *, redo_from_set: bool) -> RotationError:
        """Record and report the failure of the current step; the error to raise."""
        now = self.o._clock.now()
        recorded = f"step {self.step}: {message}"
        self.state = self.state.failed(now, recorded, redo_from_set=redo_from_set)
        self.o._state.save(self.o.name, self.state)
        version_id = self.pending.version_id if self.pending is not None else None
        self.o._journal.step(self.o.name, self.step, version_id, "failed", self.caller, message)
        self.o._journal.failed(self.o.name, self.step, message)
        error_type = RotationTestFailed if redo_from_set else RotationError
        return error_type(f"rotation of {self.o.name!r} failed at step {self.step}: {message}")
