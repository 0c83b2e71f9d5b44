"""Where a rotation reports what it did: an audit line per step, metrics, logs.

Audit lines have `event` "rotate", the secret, the pending version's id, the
caller (null when the schedule ran it) and `result` ok | failed | resumed,
plus `step`. Metrics count steps and whole rotations by result. Neither ever
carries a value; errors carry only the messages our own code wrote.
"""

from __future__ import annotations

from typing import Protocol

import structlog

from secretd.audit import AuditSink
from secretd.model import Caller, SecretName
from secretd.rotation.model import Step

log = structlog.get_logger(__name__)


class RotationMetrics(Protocol):
    """metrics.Metrics implements it."""

    def rotation_step(self, step: str, result: str) -> None: ...

    def rotation(self, result: str) -> None: ...


class Journal:
    """Audit, metrics and logs for rotations."""

    def __init__(self, audit: AuditSink, metrics: RotationMetrics) -> None:
        self._audit = audit
        self._metrics = metrics

    def step(
        self,
        name: SecretName,
        step: Step,
        version_id: str | None,
        result: str,
        caller: Caller | None,
        error: str | None = None,
    ) -> None:
        extra = {"step": step.value}
        if error is not None:
            extra["error"] = error
        self._audit.record(
            "rotate", secret=name, version_id=version_id, caller=caller, result=result, **extra
        )
        self._metrics.rotation_step(step.value, result)
        if result == "failed":
            log.warning("rotation.step_failed", secret=name, step=step.value, error=error)
        else:
            log.info("rotation.step_done", secret=name, step=step.value, result=result)

    def rotated(self, name: SecretName, version_id: str) -> None:
        self._metrics.rotation("done")
        log.info("rotation.finished", secret=name, version_id=version_id)

    def failed(self, name: SecretName, step: Step, error: str) -> None:
        self._metrics.rotation("failed")
        log.error("rotation.failed", secret=name, step=step.value, error=error)
