"""Which backend serves a name: the longest matching mount prefix wins.

A backend mounted at ``vault/`` serves ``vault/app/db`` and sees it as
``app/db``; a backend mounted at ``""`` serves every name no longer mount
claims. The cache keys everything by the full name; only backends see the
stripped one. A mount matches only when what is left is itself a valid name,
so a mount written without its trailing slash (``vault``) still never hands a
backend ``/app/db``: the router falls through to a shorter mount instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from secretd.backends.base import ArnBackend, Backend
from secretd.errors import ConfigError, NotFound
from secretd.model import SecretName, name_problem


class Router:
    """Maps full secret names to (backend, stripped name) and back."""

    def __init__(self, backends: Mapping[str, Backend], mounts: Mapping[str, str]) -> None:
        missing = sorted(set(backends) ^ set(mounts))
        if missing:
            raise ConfigError(f"router: backends and mounts disagree about {', '.join(missing)}")
        seen: dict[str, str] = {}
        for backend_name, mount in mounts.items():
            if mount in seen:
                raise ConfigError(
                    f"backends {seen[mount]!r} and {backend_name!r} share mount {mount!r}"
                )
            seen[mount] = backend_name
        self._backends = dict(backends)
        self._mounts = dict(mounts)
        # Longest prefix first, so the first match is the winner.
        self._order = sorted(self._mounts.items(), key=lambda item: len(item[1]), reverse=True)

    @property
    def backends(self) -> Mapping[str, Backend]:
        """Every backend by its configured name."""
        return self._backends

    def mount_of(self, backend_name: str) -> str:
        """The mount prefix of a backend."""
        return self._mounts[backend_name]

    def route(self, name: SecretName) -> tuple[Backend, SecretName]:
        """The backend serving `name` and the name as that backend knows it."""
        backend_name, stripped = self.locate(name)
        return self._backends[backend_name], stripped

    def locate(self, name: SecretName) -> tuple[str, SecretName]:
        """Like `route`, but gives the backend's configured name."""
        for backend_name, mount in self._order:
            if not name.startswith(mount):
                continue
            rest = name[len(mount) :]
            if name_problem(rest) is None:
                return backend_name, SecretName(rest)
        raise NotFound(f"secret {name!r} is not under any configured backend mount")

    def name_for_arn(self, arn: str) -> SecretName | None:
        """The full name of the secret an ARN identifies: the backend that claims
        it as its own (region, account) gives the name, its mount is added.
        None when no backend claims it."""
        for backend_name, backend in self._backends.items():
            if not isinstance(backend, ArnBackend):
                continue
            stripped = backend.name_for_arn(arn)
            if stripped is not None:
                return self.full_name(backend_name, stripped)
        return None

    def full_name(self, backend_name: str, stripped: str) -> SecretName | None:
        """The full name of a backend's name, or None when that full name is
        invalid or routes to another backend (a longer mount shadows it)."""
        mount = self._mounts.get(backend_name)
        if mount is None:
            return None
        full = mount + stripped
        if name_problem(full) is not None:
            return None
        name = SecretName(full)
        try:
            owner, _ = self.locate(name)
        except NotFound:
            return None
        return name if owner == backend_name else None
