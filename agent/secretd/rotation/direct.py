"""`secretd rotate -c CONFIG NAME` without an agent: open the configured
backends, build the entry's rotation and run it once in this process.

The same lock (agent.state_dir), state files, audit log and steps as the
agent's, so an agent started later, or running but unreachable, sees the
same progress; metrics are those of this process only.
"""

from __future__ import annotations

from secretd.audit import AuditLog
from secretd.backends.registry import close_backends, open_backends
from secretd.backends.router import Router
from secretd.clock import SystemClock
from secretd.config import Config
from secretd.metrics import Metrics
from secretd.model import SecretName
from secretd.rotation.build import Parts, build_rotations
from secretd.rotation.engine import Checkpoint
from secretd.rotation.errors import NotRotated
from secretd.rotation.journal import Journal
from secretd.rotation.model import Outcome
from secretd.rotation.rotators.postgresql import Connect
from secretd.rotation.state import StateDir


async def rotate_directly(
    config: Config,
    name: SecretName,
    *,
    fresh: bool = False,
    checkpoint: Checkpoint | None = None,
    connect: Connect | None = None,
) -> Outcome:
    """Run the rotation of `name` once against the backends themselves."""
    if not any(entry.secret == name for entry in config.rotation):
        raise NotRotated(f"no [[rotation]] entry rotates secret {name!r}")
    backends = await open_backends(config.backends, max_secret_bytes=config.limits.max_secret_bytes)
    audit = AuditLog.open(config.agent.audit_log)
    try:
        router = Router(backends, {n: b.mount for n, b in config.backends.items()})
        parts = Parts(
            router,
            state=StateDir(config.agent.state_dir),
            journal=Journal(audit, Metrics()),
            clock=SystemClock(),
            checkpoint=checkpoint,
            connect=connect,
        )
        entries = [entry for entry in config.rotation if entry.secret == name]
        rotation = build_rotations(entries, parts)[name]
        return await rotation.run(fresh=fresh)
    finally:
        audit.close()
        await close_backends(backends)
