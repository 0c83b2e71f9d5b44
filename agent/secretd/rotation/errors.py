"""Rotation errors: messages name the secret and the step, never a value."""

from __future__ import annotations

from secretd.errors import SecretdError


class RotationError(SecretdError):
    """A step could not be carried out (the target refused, a command failed)."""

    code, status = "rotation_failed", 502


class RotationTestFailed(RotationError):
    """The new value did not work when tried: `current` was left untouched."""

    code = "rotation_test_failed"


class RotationBusy(SecretdError):
    """Another process on this host is rotating the secret right now."""

    code, status = "rotation_busy", 409


class NotRotated(SecretdError):
    """No [[rotation]] entry names this secret."""

    code, status = "not_found", 404
