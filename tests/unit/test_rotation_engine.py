"""The rotation step state machine (secretd.rotation.engine) against in-memory
implementations of its roles (tests/fakes/rotation_target.py): order of the
steps, what a failure at each step leaves behind, resuming, the one-writer
rules and the grace period."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from secretd.model import CURRENT, PENDING, PREVIOUS, Caller, SecretName, SecretValue
from secretd.rotation.engine import Rotation
from secretd.rotation.errors import RotationBusy, RotationError, RotationTestFailed
from secretd.rotation.model import Step
from tests.fakes.rotation_target import MemoryRig

NAME = SecretName("svc/key")


class Rig(MemoryRig):
    """A MemoryRig whose rotations take the tokens t1, t2, ... in turn."""

    def __init__(self, tmp_path: Path, *, grace: float = 0.0) -> None:
        super().__init__(NAME, tmp_path, grace=grace)
        self.tokens = iter(f"t{i}" for i in range(1, 100))
        self.rotation = self.make()

    def make(self) -> Rotation:
        return self.new_rotation(token=lambda: next(self.tokens))

    def audited(self) -> list[tuple[object, object]]:
        return [(line["step"], line["result"]) for line in self.audit.lines]


async def test_the_four_steps_run_in_order_and_promote_the_new_value(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    caller = Caller(uid=0, gid=0, pid=1)
    outcome = await rig.rotation.run(caller=caller)

    assert outcome.rotated and outcome.version_id == "t1" and not outcome.resumed
    assert outcome.steps == (Step.CREATE, Step.SET, Step.TEST, Step.FINISH)
    assert [step for step, _ in rig.rotator.calls] == ["create", "set", "test"]
    assert rig.target.value(CURRENT) == b"v1" and rig.target.value(PREVIOUS) == b"v0"
    assert PENDING not in rig.target.stages
    assert rig.service.password == b"v1"
    assert rig.audited() == [("create", "ok"), ("set", "ok"), ("test", "ok"), ("finish", "ok")]
    assert all(line["secret"] == NAME and line["caller"] == caller for line in rig.audit.lines)
    assert rig.metrics.rotations == ["done"]
    state = rig.state.load(NAME)
    assert state.last_rotated_at == rig.clock.now() and state.last_result == "rotated"
    assert state.token is None


@pytest.mark.parametrize("step", ["create", "set"])
async def test_a_failed_step_before_test_leaves_current_and_resumes_there(
    tmp_path: Path, step: str
) -> None:
    rig = Rig(tmp_path)
    rig.rotator.fail_at = step
    with pytest.raises(RotationError, match=f"at step {step}") as raised:
        await rig.rotation.run()
    assert not isinstance(raised.value, RotationTestFailed)
    assert rig.target.value(CURRENT) == b"v0"
    state = rig.state.load(NAME)
    assert state.last_result == "failed" and state.failures == 1
    assert state.last_error is not None and state.last_error.startswith(f"step {step}:")
    assert rig.metrics.rotations == ["failed"]
    assert rig.audited()[-1] == (step, "failed")

    rig.rotator.fail_at = None
    rig.rotator.calls.clear()
    outcome = await rig.rotation.run()
    assert rig.target.value(CURRENT) == rig.service.password
    if step == "create":  # nothing was staged: a new rotation from the start
        assert not outcome.resumed and outcome.steps[0] is Step.CREATE
    else:  # the staged value is kept and set again
        assert outcome.resumed and outcome.steps == (Step.SET, Step.TEST, Step.FINISH)
        assert rig.rotator.calls[0] == ("set", b"v1")
    assert rig.state.load(NAME).failures == 0


async def test_a_failed_test_leaves_current_untouched_and_redoes_set_next_time(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.service.refuse_logins = True
    with pytest.raises(RotationTestFailed, match="at step test"):
        await rig.rotation.run()
    assert rig.target.value(CURRENT) == b"v0"
    assert rig.target.value(PENDING) == b"v1"  # kept for the next run
    assert rig.state.load(NAME).step is Step.CREATE

    rig.service.refuse_logins = False
    rig.service.password = b"changed by someone else meanwhile"
    rig.rotator.calls.clear()
    outcome = await rig.rotation.run()
    assert outcome.steps == (Step.SET, Step.TEST, Step.FINISH)
    assert rig.rotator.calls == [("set", b"v1"), ("test", b"v1")]
    assert rig.target.value(CURRENT) == b"v1"


async def test_a_failed_finish_is_retried_without_setting_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.target.promote_failures = 1
    with pytest.raises(RotationError, match="at step finish"):
        await rig.rotation.run()
    rig.rotator.calls.clear()
    outcome = await rig.rotation.run()
    assert outcome.steps == (Step.FINISH,)
    assert rig.rotator.calls == []
    assert rig.target.value(CURRENT) == b"v1"


async def test_a_pending_value_staged_by_another_host_is_resumed_not_replaced(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.target.stage_behind_our_back(b"theirs")
    outcome = await rig.rotation.run()
    assert outcome.resumed and outcome.version_id == "rival-token"
    assert rig.target.value(CURRENT) == b"theirs"
    assert rig.service.password == b"theirs"
    assert not any(write.startswith("stage t1") for write in rig.target.writes)


async def test_a_pending_value_without_our_progress_resumes_from_set(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    await rig.target.stage_pending(SecretValue(b"x"), "foreign")
    outcome = await rig.rotation.run()
    assert outcome.resumed and outcome.steps == (Step.SET, Step.TEST, Step.FINISH)
    assert (Step.CREATE.value, "resumed") in rig.audited()
    assert rig.target.value(CURRENT) == b"x"


async def test_fresh_drops_the_pending_value_and_starts_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.service.refuse_logins = True
    with pytest.raises(RotationTestFailed):
        await rig.rotation.run()
    rig.service.refuse_logins = False
    outcome = await rig.rotation.run(fresh=True)
    assert not outcome.resumed and outcome.version_id == "t2"
    assert rig.target.value(CURRENT) == b"v2"
    assert "drop t1" in rig.target.writes
    assert ("create", "dropped") in rig.audited()


async def test_only_one_rotation_of_a_secret_runs_at_a_time(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.rotator.block_at = "set"
    first = asyncio.create_task(rig.rotation.run())
    await rig.rotator.blocked.wait()
    with pytest.raises(RotationBusy):
        await rig.make().run()  # another Rotation object, same state dir: another process
    rig.rotator.unblock.set()
    await first
    assert rig.target.value(CURRENT) == b"v1"


async def test_set_waits_until_the_current_credential_is_grace_old(tmp_path: Path) -> None:
    rig = Rig(tmp_path, grace=30.0)
    await rig.rotation.run()  # current was 60 days old: no wait
    assert rig.clock.slept == []
    second = asyncio.create_task(rig.rotation.run())
    for _ in range(50):
        await asyncio.sleep(0)
    assert rig.clock.slept == [30.0]  # v1 became current just now
    assert [step for step, _ in rig.rotator.calls][-1] == "create"  # set not yet run
    rig.clock.advance(30.0)
    await second
    assert rig.target.value(CURRENT) == b"v2"


async def test_a_run_that_stopped_after_promoting_is_not_rotated_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path)

    def crash(step: Step, phase: str) -> None:
        if step is Step.FINISH and phase == "applied":
            raise KeyboardInterrupt  # a stop between promoting and recording it

    rotation = rig.new_rotation(checkpoint=crash, token=lambda: "t1")
    with pytest.raises(KeyboardInterrupt):
        await rotation.run()
    assert rig.target.value(CURRENT) == b"v1"
    outcome = await rig.rotation.run()
    assert outcome.resumed and outcome.steps == () and outcome.version_id == "t1"
    assert rig.target.value(CURRENT) == b"v1"  # no second rotation
    assert rig.state.load(NAME).last_result == "rotated"
