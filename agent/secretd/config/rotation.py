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

from pydantic import Field, field_validator, model_validator

from secretd.config.base import Section
from secretd.config.types import Duration, Name

# A PostgreSQL role name secretd will quote and send: plain identifiers only.
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class RotationBase(Section):
    """What every `[[rotation]]` entry has."""

    secret: Name
    """The secret rotated (a file store or a backend that can write)."""
    every: Duration = Field(gt=0)
    """How often it is rotated, counted from the last rotation."""
    jitter: Duration | None = None
    """Spread of the schedule, so alike hosts do not rotate at once; unset: 5% of every, max 1h."""
    timeout: Duration = Field(300.0, gt=0)
    """The whole rotation (create, set, test, finish) never takes longer than this."""

    @property
    def spread(self) -> float:
        return self.jitter if self.jitter is not None else min(self.every * 0.05, 3600.0)


class GeneratedValue(Section):
    """How `create` makes a new value: random characters, the whole value or one JSON field."""

    length: int = Field(32, ge=8, le=4096)
    """Characters in a new value."""
    alphabet: Literal["alnum", "hex", "base64url", "printable"] = "alnum"
    """Characters a new value is drawn from."""
    field: str | None = Field(None, min_length=1, max_length=256)
    """Replace only this key of a JSON-object value; unset: the whole value."""


class RandomRotation(RotationBase, GeneratedValue):
    """`rotator = "random"`: a new random value, nothing else to tell."""

    rotator: Literal["random"]
    """How: "random", "command" or "postgresql"; each takes its own keys."""


class CommandRotation(RotationBase, GeneratedValue):
    """`rotator = "command"`: a new random value, handed to your programs."""

    rotator: Literal["command"]
    """How: "random", "command" or "postgresql"; each takes its own keys."""
    set: tuple[str, ...] = Field(min_length=1)
    """argv of the program that makes the target accept the new value (given on stdin)."""
    test: tuple[str, ...] | None = Field(None, min_length=1)
    """argv of a program that checks the new value works (on stdin); unset: no test."""
    command_timeout: Duration = Field(30.0, gt=0)
    """Each program is killed after this long."""

    @field_validator("set", "test")
    @classmethod
    def _absolute(cls, argv: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if argv is not None and not argv[0].startswith("/"):
            raise ValueError("the program must be an absolute path (commands get a minimal PATH)")
        return argv


SslMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]


class PostgresqlRotation(RotationBase):
    """`rotator = "postgresql"`: alternating login roles, new passwords set over SQL."""

    rotator: Literal["postgresql"]
    """How: "random", "command" or "postgresql"; each takes its own keys."""
    admin_secret: Name
    """A secret holding the admin connection (JSON: host, port, dbname, username, password)."""
    roles: tuple[str, ...] = Field(("app_a", "app_b"), min_length=2, max_length=8)
    """The login roles that take turns being current."""
    member_of: str | None = None
    """The NOLOGIN role holding the privileges, checked by the test step; unset: not checked."""
    length: int = Field(32, ge=16, le=128)
    """Characters in a new password."""
    sslmode: SslMode = "prefer"
    """libpq sslmode of the admin connection."""
    connect_timeout: Duration = Field(10.0, gt=0)
    """Longest wait for a database connection."""
    grace: Duration = Field(60.0, ge=0)
    """A role gets a new password only once it has been out of `current` this long."""

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
            "expected plain role names (lower-case letters, digits, _; "
            "at most 63 characters, not starting with a digit)"
        )
    return role


RotationConfig = Annotated[
    RandomRotation | CommandRotation | PostgresqlRotation, Field(discriminator="rotator")
]
ROTATOR_TAGS = frozenset({"random", "command", "postgresql"})
