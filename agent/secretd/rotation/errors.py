"""Rotation errors: messages name the secret and the step, never a value."""

from __future__ import annotations

from secretd.errors import Conflict, NotFound, SecretdError


class RotationError(SecretdError):
    """A step could not be carried out (the target refused, a command failed)."""

    code = "rotation_failed"


class RotationTestFailed(RotationError):
    """The new value did not work when tried: `current` was left untouched."""

    code = "rotation_test_failed"


class RotationBusy(Conflict):
    """Another process on this host is rotating the secret right now."""

    code = "rotation_busy"


class NotRotated(NotFound):
    """No [[rotation]] entry names this secret."""
