"""What a backend is. Backends raise only `BackendError` subclasses (and
`InvalidName`): foreign exceptions (aiohttp, botocore, OSError) are mapped at
the boundary, inside the backend.

Names handed to a backend are already stripped of its mount prefix by the
router, and the `Fetched.name` it answers with is that same (stripped) name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from secretd.backends.replicas import Replicas
from secretd.model import Fetched, SecretName


@runtime_checkable
class Backend(Protocol):
    """A source of secrets."""

    name: str

    async def fetch(
        self,
        name: SecretName,
        *,
        version_id: str | None = None,
        stage: str | None = None,
    ) -> Fetched:
        """One version: `version_id`, else `stage`, else current.

        Raises NotFound when the secret or version does not exist (or was
        deleted), BackendError subclasses for everything else.
        """
        ...

    async def current_versions(self, names: Sequence[SecretName]) -> Mapping[SecretName, str]:
        """The current version id of each name that exists (absent = not found).
        Batched where the backend can; cheaper than `fetch`."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class WatchableBackend(Backend, Protocol):
    """A backend that tells us when something changes (the file store)."""

    def changes(self) -> AsyncIterator[SecretName]:
        """Yields a name (stripped) whenever that secret may have changed."""
        ...


@runtime_checkable
class ListableBackend(Backend, Protocol):
    """A backend that can enumerate its names cheaply (the file store)."""

    async def list_names(self, prefix: str = "") -> Sequence[SecretName]: ...


@runtime_checkable
class CheckableBackend(Backend, Protocol):
    """A backend that can check more than its opening did, without contacting a
    remote server (the file store verifies its records against its keys)."""

    async def check(self) -> list[str]:
        """One line per problem found, naming the file or secret; [] when all is well."""
        ...


@runtime_checkable
class BackgroundBackend(Backend, Protocol):
    """A backend with work of its own to do while it is open (token renewal,
    saving state). The agent runs `run()` as a supervised task from open to
    close; a backend must not start tasks of its own."""

    async def run(self) -> None:
        """Do the background work until cancelled."""
        ...


@runtime_checkable
class ArnBackend(Backend, Protocol):
    """A backend whose secrets have identifiers of their own (AWS ARNs): it says
    which of its secrets an identifier names. The identifier of a secret it
    serves comes back on `Fetched.arn`."""

    def name_for_arn(self, arn: str) -> SecretName | None:
        """The (stripped) name of the secret `arn` identifies, when it is this
        backend's (its region and account); else None."""
        ...


@runtime_checkable
class ReplicatedBackend(Backend, Protocol):
    """A backend with several endpoints (Vault addresses, AWS regions): health
    shows which one serves (backends/replicas.py)."""

    @property
    def replicas(self) -> Replicas: ...
