"""`[[rotation]]` entries (docs/rotation.md): which secret, which rotator, how often.

    [[rotation]]
    secret = "db/app"
    rotator = "postgresql"          # random | command | postgresql
    every = "30d"
    admin_secret = "db/admin"
    roles = ["app_a", "app_b"]

The `rotator` key picks the model; each model takes only its own options, so
a key that belongs to another rotator is an "unknown key" error naming it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from secretd.config.types import Duration, Name

# A PostgreSQL role name secretd will quote and send: plain identifiers only.
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class RotationBase(_Section):
    secret: Name
    every: Duration = Field(gt=0)
    # Spread of the schedule: a due time moves by up to this much, so many hosts
    # (or secrets) configured alike do not all rotate in the same second.
    jitter: Duration | None = None  # default: 5% of `every`, at most 1h
    # The whole rotation (all four steps) never takes longer than this.
    timeout: Duration = Field(300.0, gt=0)

    @property
    def spread(self) -> float:
        return self.jitter if self.jitter is not None else min(self.every * 0.05, 3600.0)


class GeneratedValue(_Section):
    """How `create` makes a new value: random characters, the whole value or one JSON field."""

    length: int = Field(32, ge=8, le=4096)
    alphabet: Literal["alnum", "hex", "base64url", "printable"] = "alnum"
    field: str | None = Field(None, min_length=1, max_length=256)


class RandomRotation(RotationBase, GeneratedValue):
    rotator: Literal["random"]


class CommandRotation(RotationBase, GeneratedValue):
    rotator: Literal["command"]
    set: tuple[str, ...] = Field(min_length=1)  # argv; the pending value on stdin
    test: tuple[str, ...] | None = Field(None, min_length=1)
    command_timeout: Duration = Field(30.0, gt=0)

    @field_validator("set", "test")
    @classmethod
    def _absolute(cls, argv: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if argv is not None and not argv[0].startswith("/"):
            raise ValueError("the program must be an absolute path (commands get a minimal PATH)")
        return argv


SslMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]


class PostgresqlRotation(RotationBase):
    rotator: Literal["postgresql"]
    admin_secret: Name
    roles: tuple[str, ...] = Field(("app_a", "app_b"), min_length=2, max_length=8)
    member_of: str | None = None  # the NOLOGIN role holding the privileges; checked by test
    length: int = Field(32, ge=16, le=128)
    sslmode: SslMode = "prefer"
    connect_timeout: Duration = Field(10.0, gt=0)
    # A role is given a new password only once the credential that used it has
    # been out of `current` for this long: apps that re-read the secret at
    # least this often never hold a credential that stops working.
    grace: Duration = Field(60.0, ge=0)

    @field_validator("roles")
    @classmethod
    def _roles(cls, roles: tuple[str, ...]) -> tuple[str, ...]:
        for role in roles:
            _check_role(role)
        if len(set(roles)) != len(roles):
            raise ValueError("roles must be different")
        return roles

    @field_validator("member_of")
    @classmethod
    def _member_of(cls, role: str | None) -> str | None:
        return None if role is None else _check_role(role)

    @model_validator(mode="after")
    def _admin_differs(self) -> PostgresqlRotation:
        if self.admin_secret == self.secret:
            raise ValueError("admin_secret must be another secret than the one rotated")
        if self.grace >= self.timeout:
            raise ValueError("grace must be shorter than timeout (set waits up to grace)")
        return self


def _check_role(role: str) -> str:
    if _ROLE.fullmatch(role) is None:
        raise ValueError(
            f"{role[:70]!r} is not a plain role name (lower-case letters, digits, _; "
            "at most 63 characters, not starting with a digit)"
        )
    return role


RotationConfig = Annotated[
    RandomRotation | CommandRotation | PostgresqlRotation, Field(discriminator="rotator")
]
ROTATOR_TAGS = frozenset({"random", "command", "postgresql"})
