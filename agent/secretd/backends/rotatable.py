"""The write capability rotation needs from a backend (docs/rotation.md).

Backends are read-only to the rest of the agent. A backend that rotation can
drive also offers a `Stager` (built by `stager_for`): one pending version per
secret, keyed by the rotation's token, and a promotion that only the holder of
that pending version can make. How each backend makes that a single-writer
operation:

    file   the store's writer lock around every read-modify-write; the pending
           version's id is the token
    vault  KV v2 check-and-set: the pending value waits at a staging path
           written with cas=0, and is promoted with cas=<the current version
           it was staged against> (backends/vault_write.py)
    aws    PutSecretValue with ClientRequestToken=token, then the AWSPENDING
           label moved with UpdateSecretVersionStage's RemoveFromVersionId
           check, and AWSCURRENT likewise (backends/aws_write.py)

Names are the backend's own (mount prefix stripped), as for `Backend.fetch`.
Errors are BackendError subclasses, and `Conflict` when another writer won.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from secretd.backends.base import Backend
from secretd.model import SecretName, SecretValue


@dataclass(frozen=True, slots=True)
class Pending:
    """A staged value waiting to become current."""

    token: str  # the rotation token it was staged under
    version_id: str  # the backend's id for it (the token itself for file and aws)
    value: SecretValue
    base_version: str | None = None  # the current version it was staged against, if kept


class Stager(Protocol):
    """Stage, promote and drop one pending version of a backend's secrets."""

    async def read_pending(self, name: SecretName) -> Pending | None:
        """The pending version not yet current, or None."""
        ...

    async def stage_pending(self, name: SecretName, value: SecretValue, token: str) -> Pending:
        """Stage `value` under `token`; a retry with the same token is answered
        with what was staged. Conflict when another token's value is pending."""
        ...

    async def promote_pending(self, name: SecretName, pending: Pending) -> str:
        """Make `pending` current (the old current becomes previous); the id of
        the version now current. Idempotent: a promotion already made answers
        the same; Conflict when the secret moved on without it."""
        ...

    async def drop_pending(self, name: SecretName, pending: Pending) -> None:
        """Forget `pending` without promoting it (idempotent)."""
        ...


def stager_for(backend: Backend) -> Stager | None:
    """The Stager of `backend`, or None when its kind cannot be written.

    The write side of each backend lives in its own module (file_write,
    vault_write, aws_write) and drives the backend's own transport, so reads
    and writes share one connection pool, token and error mapping."""
    from secretd.backends.aws import AwsBackend
    from secretd.backends.file import FileBackend
    from secretd.backends.vault import VaultBackend

    if isinstance(backend, FileBackend):
        from secretd.backends.file_write import FileStager

        return FileStager(backend)
    if isinstance(backend, VaultBackend):
        from secretd.backends.vault_write import VaultStager

        return VaultStager(backend)
    if isinstance(backend, AwsBackend):
        from secretd.backends.aws_write import AwsStager

        return AwsStager(backend)
    return None
