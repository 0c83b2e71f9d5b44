"""The file store's write side for rotation (backends/rotatable.py).

The pending version's id is the rotation token, so the token is stored with
the value it names. Every change is a read-modify-write under the store's
writer lock (store/layout.py), which makes "stage only if nothing else is
pending" and "promote only if still pending" single-writer operations for
every process on the host; the agent's watch then serves the new current.
"""

from __future__ import annotations

from secretd.backends.file import FileBackend
from secretd.backends.rotatable import Pending
from secretd.errors import NotFound
from secretd.model import PENDING, SecretName, SecretValue


class FileStager:
    """A `Stager` over one FileBackend's store and keyring."""

    def __init__(self, backend: FileBackend) -> None:
        self._backend = backend
        # The backend's own store, keyring and blocking-call wrapper (timeout,
        # error mapping, key learning): writes behave exactly like its reads.
        self._store = backend._store
        self._keyring = backend._keyring

    async def read_pending(self, name: SecretName) -> Pending | None:
        try:
            fetched = await self._backend.fetch(name, stage=PENDING)
        except NotFound:
            return None
        version = fetched.version
        if version.is_current:
            return None  # a finished rotation whose label was not cleared yet
        return Pending(version.version_id, version.version_id, version.value)

    async def stage_pending(self, name: SecretName, value: SecretValue, token: str) -> Pending:
        def stage() -> bool:
            return self._store.stage_pending(name, value.reveal(), self._keyring, version_id=token)

        await self._backend._call(f"staging a pending version of {name!r}", stage)
        return Pending(token, token, value)

    async def promote_pending(self, name: SecretName, pending: Pending) -> str:
        def finish() -> bool:
            return self._store.finish_pending(name, pending.version_id, self._keyring)

        await self._backend._call(f"promoting the pending version of {name!r}", finish)
        return pending.version_id

    async def drop_pending(self, name: SecretName, pending: Pending) -> None:
        def drop() -> bool:
            return self._store.drop_pending(name, pending.version_id, self._keyring)

        await self._backend._call(f"dropping the pending version of {name!r}", drop)
