"""A secret on a writable backend, as the engine's `Target`.

Reads go straight to the backend (never the cache: rotation must see what the
backend holds now); writes go through the backend's `Stager`
(backends/rotatable.py).
"""

from __future__ import annotations

from secretd.backends.base import Backend
from secretd.backends.rotatable import Pending, Stager
from secretd.errors import NotFound
from secretd.model import PREVIOUS, SecretName, SecretValue, Version


class BackendTarget:
    """`name` (as its backend knows it) on `backend`, written through `stager`."""

    def __init__(self, backend: Backend, stager: Stager, name: SecretName) -> None:
        self._backend = backend
        self._stager = stager
        self._name = name

    async def current(self) -> Version:
        return (await self._backend.fetch(self._name)).version

    async def previous(self) -> Version | None:
        try:
            return (await self._backend.fetch(self._name, stage=PREVIOUS)).version
        except NotFound:
            return None

    async def read_pending(self) -> Pending | None:
        return await self._stager.read_pending(self._name)

    async def stage_pending(self, value: SecretValue, token: str) -> Pending:
        return await self._stager.stage_pending(self._name, value, token)

    async def promote_pending(self, pending: Pending) -> str:
        return await self._stager.promote_pending(self._name, pending)

    async def drop_pending(self, pending: Pending) -> None:
        await self._stager.drop_pending(self._name, pending)
