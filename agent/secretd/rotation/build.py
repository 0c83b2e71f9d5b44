"""[[rotation]] entries -> `Rotation` objects, for the agent and `secretd rotate`.

Each entry's secret is routed to its backend (the same longest-mount rule as
reads), which must offer a write side (backends/rotatable.py); the rotator is
chosen by `rotator`. Problems are ConfigErrors naming the entry, so a config
that cannot rotate is refused at start-up and on reload, not at 3 a.m.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from secretd.audit import AuditSink
from secretd.backends.rotatable import stager_for
from secretd.backends.router import Router
from secretd.clock import Clock
from secretd.config.rotation import (
    CommandRotation,
    PostgresqlRotation,
    RandomRotation,
    RotationBase,
    RotationConfig,
)
from secretd.config.schema import BackendConfig
from secretd.errors import ConfigError, NotFound, SecretdError
from secretd.model import SecretName, SecretValue, name_problem
from secretd.rotation.engine import Checkpoint, Rotation
from secretd.rotation.journal import Journal, RotationMetrics
from secretd.rotation.model import Rotator
from secretd.rotation.rotators.command import CommandRotator
from secretd.rotation.rotators.random_value import RandomRotator
from secretd.rotation.scheduler import Refresh, Scheduler
from secretd.rotation.state import StateDir
from secretd.rotation.target import BackendTarget

if TYPE_CHECKING:  # the PostgreSQL rotator is imported only when one is configured
    from secretd.rotation.rotators.postgresql import Connect

Entry = RandomRotation | CommandRotation | PostgresqlRotation


class Parts:
    """What every rotation of one agent (or one CLI run) shares."""

    def __init__(
        self,
        router: Router,
        *,
        state: StateDir,
        journal: Journal,
        clock: Clock,
        checkpoint: Checkpoint | None = None,
        connect: Connect | None = None,
    ) -> None:
        self.router = router
        self.state = state
        self.journal = journal
        self.clock = clock
        self.checkpoint = checkpoint
        self.connect = connect

    async def read_secret(self, name: SecretName) -> SecretValue:
        """The current value of `name`, straight from its backend."""
        backend, stripped = self.router.route(name)
        return (await backend.fetch(stripped)).version.value


def build_rotations(entries: Sequence[Entry], parts: Parts) -> dict[SecretName, Rotation]:
    """One Rotation per entry, in config order. Raises ConfigError."""
    built: dict[SecretName, Rotation] = {}
    for index, entry in enumerate(entries):
        where = f"rotation[{index}] (secret {entry.secret!r})"
        try:
            built[entry.secret] = _build(entry, parts)
        except SecretdError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
    return built


def _build(entry: Entry, parts: Parts) -> Rotation:
    try:
        backend_name, stripped = parts.router.locate(entry.secret)
    except NotFound:
        raise ConfigError("no backend mount serves this name") from None
    backend = parts.router.backends[backend_name]
    stager = stager_for(backend)
    if stager is None:
        raise ConfigError(f"backend {backend_name!r} cannot be written, so it cannot rotate")
    return Rotation(
        entry.secret,
        BackendTarget(backend, stager, stripped),
        _rotator(entry, parts),
        state=parts.state,
        journal=parts.journal,
        clock=parts.clock,
        timeout=entry.timeout,
        checkpoint=parts.checkpoint,
    )


def _rotator(entry: Entry, parts: Parts) -> Rotator:
    if isinstance(entry, RandomRotation):
        return RandomRotator(entry)
    if isinstance(entry, CommandRotation):
        return CommandRotator(entry)
    admin_name = entry.admin_secret

    async def admin() -> SecretValue:
        return await parts.read_secret(admin_name)

    try:
        parts.router.locate(admin_name)
    except NotFound:
        raise ConfigError(f"admin_secret {admin_name!r}: no backend mount serves it") from None
    from secretd.rotation.rotators.postgresql import PostgresRotator

    return PostgresRotator(entry, admin, parts.connect)


def schedules(entries: Sequence[RotationBase]) -> Mapping[SecretName, RotationBase]:
    """Each rotated secret's entry (its `every` and `jitter`), by name."""
    return {entry.secret: entry for entry in entries}


def build_scheduler(
    entries: Sequence[Entry],
    router: Router,
    *,
    state_dir: Path,
    audit: AuditSink,
    metrics: RotationMetrics,
    clock: Clock,
    rng: random.Random,
    refresh: Refresh | None = None,
) -> Scheduler:
    """The agent's rotation service for `entries` (ConfigError when one cannot rotate)."""
    state = StateDir(state_dir)
    parts = Parts(router, state=state, journal=Journal(audit, metrics), clock=clock)
    rotations = build_rotations(entries, parts)
    return Scheduler(
        rotations, schedules(entries), state=state, clock=clock, rng=rng, refresh=refresh
    )


def check_rotations(
    rotations: Sequence[RotationConfig], backends: Mapping[str, BackendConfig]
) -> None:
    """`secretd check`: every rotated (and admin) secret has a backend, and each
    rotator has its driver. Raises ConfigError naming the entry."""
    import importlib.util

    def routed(name: str) -> bool:
        return any(
            name.startswith(b.mount) and name_problem(name[len(b.mount) :]) is None
            for b in backends.values()
        )

    for index, entry in enumerate(rotations):
        names = [entry.secret] + ([entry.admin_secret] if entry.rotator == "postgresql" else [])
        for name in names:
            if not routed(name):
                raise ConfigError(f"rotation[{index}]: no backend mount serves {name!r}")
        if entry.rotator == "postgresql" and importlib.util.find_spec("asyncpg") is None:
            raise ConfigError(
                f"rotation[{index}]: rotator 'postgresql' needs asyncpg; "
                "install the secretd[postgresql] extra"
            )
