"""The cache's one door to the backends.

Every backend call goes through `BackendGateway`, which routes the full name,
runs the call under `asyncio.timeout`, maps anything foreign to a
`BackendError`, records the call with the observer and the backend's health,
and checks every answer before the cache may trust it: the name must be the
one asked for, the version the one asked for (or current, or carrying the
asked stage), and the value within `max_secret_bytes`. A rejected answer is a
`BadBackendAnswer`; the cache then keeps its last good value.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import structlog

from secretd.backends.base import ListableBackend, ReplicatedBackend
from secretd.backends.router import Router
from secretd.cache.entries import BackendHealth
from secretd.cache.observer import CacheObserver
from secretd.clock import Clock
from secretd.errors import (
    BackendError,
    BackendTimeout,
    BadBackendAnswer,
    InvalidName,
    NotFound,
)
from secretd.model import Fetched, SecretName, Version, rfc3339

log = structlog.get_logger(__name__)
T = TypeVar("T")


class BackendGateway:
    """Routed, timed, checked and observed backend calls."""

    def __init__(
        self,
        *,
        router: Router,
        observer: CacheObserver,
        clock: Clock,
        max_secret_bytes: int,
        call_timeout: float,
    ) -> None:
        self.router = router
        self._observer = observer
        self._clock = clock
        self._max_bytes = max_secret_bytes
        self._timeout = call_timeout
        self._health = {name: BackendHealth() for name in router.backends}

    def health(self) -> dict[str, BackendHealth]:
        """A copy of each backend's health, with the endpoint serving it."""
        found = {}
        for name, h in self._health.items():
            copy = BackendHealth(h.ok, h.last_error, h.last_success, h.state)
            backend = self.router.backends.get(name)
            if isinstance(backend, ReplicatedBackend):
                replicas = backend.replicas
                copy.endpoint, copy.on_primary = replicas.endpoint, replicas.on_primary
                copy.failovers = replicas.failovers
            found[name] = copy
        return found

    async def fetch(
        self, name: SecretName, *, version_id: str | None = None, stage: str | None = None
    ) -> tuple[str, Fetched]:
        """(backend name, checked answer) for `name`: `version_id`, else `stage`, else current."""
        backend_name, stripped = self.router.locate(name)
        backend = self.router.backends[backend_name]
        fetched = await self._call(
            backend_name,
            "fetch",
            f"fetching {name!r}",
            lambda: backend.fetch(stripped, version_id=version_id, stage=stage),
        )
        problem = self._answer_problem(fetched, stripped, version_id, stage)
        if problem is not None:
            self._failed(backend_name, f"bad answer for {name!r}")
            log.warning("secret.answer_rejected", secret=name, backend=backend_name, reason=problem)
            raise BadBackendAnswer(
                f"backend {backend_name!r} answered badly for {name!r}: {problem}"
            )
        return backend_name, fetched

    async def versions(
        self, backend_name: str, names: Sequence[SecretName]
    ) -> Mapping[SecretName, str]:
        """Current version ids of `names` (stripped) on one backend; absent = not found."""
        backend = self.router.backends[backend_name]
        answer: object = await self._call(
            backend_name,
            "versions",
            f"checking {len(names)} secret(s)",
            lambda: backend.current_versions(names),
        )
        if not isinstance(answer, Mapping):
            self._failed(backend_name, "bad answer to a version check")
            raise BadBackendAnswer(f"backend {backend_name!r} answered a version check badly")
        # Only what was asked, and only string ids: anything else counts as absent.
        found: dict[SecretName, str] = {}
        for name in names:
            version_id = answer.get(name)
            if isinstance(version_id, str):
                found[name] = version_id
        return found

    async def list_names(self, backend_name: str, prefix: str) -> Sequence[SecretName]:
        """A listable backend's (stripped) names under `prefix`; [] for others."""
        backend = self.router.backends[backend_name]
        if not isinstance(backend, ListableBackend):
            return []
        listed = await self._call(
            backend_name, "list", "listing names", lambda: backend.list_names(prefix)
        )
        return [n for n in listed if isinstance(n, str)]

    async def _call(
        self, backend_name: str, op: str, what: str, call: Callable[[], Awaitable[T]]
    ) -> T:
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                result = await call()
        except NotFound:
            self._observe(backend_name, op, started, ok=True)
            self._succeeded(backend_name)
            raise
        except TimeoutError:
            self._observe(backend_name, op, started, ok=False)
            self._failed(backend_name, f"timed out {what}")
            raise BackendTimeout(f"backend {backend_name!r} timed out {what}") from None
        except (BackendError, InvalidName) as exc:
            self._observe(backend_name, op, started, ok=False)
            self._failed(backend_name, exc.message)
            raise
        except Exception as exc:
            # A bug or an unmapped library error: its text might hold anything, so
            # only its type travels on.
            self._observe(backend_name, op, started, ok=False)
            message = f"backend {backend_name!r} failed {what}: {type(exc).__name__}"
            self._failed(backend_name, message)
            raise BadBackendAnswer(message) from None
        self._observe(backend_name, op, started, ok=True)
        self._succeeded(backend_name)
        return result

    def _answer_problem(
        self, fetched: object, stripped: SecretName, version_id: str | None, stage: str | None
    ) -> str | None:
        if not isinstance(fetched, Fetched) or not isinstance(fetched.version, Version):
            return "not a secret version"
        version = fetched.version
        if fetched.name != stripped:
            return "the answer is for another secret"
        if version_id is not None and version.version_id != version_id:
            return "the answer is for another version"
        if version_id is None and stage is not None and stage not in version.stages:
            return f"the answer does not carry stage {stage!r}"
        if version_id is None and stage is None and not version.is_current:
            return "the answer is not the current version"
        if len(version.value) > self._max_bytes:
            return f"the value exceeds max_secret_bytes ({self._max_bytes})"
        return None

    def _observe(self, backend_name: str, op: str, started: float, *, ok: bool) -> None:
        elapsed = max(self._clock.monotonic() - started, 0.0)
        self._observer.backend_call(backend_name, op, elapsed, ok)

    def _succeeded(self, backend_name: str) -> None:
        health = self._health[backend_name]
        health.ok, health.last_error, health.state = True, None, "ok"
        health.last_success = rfc3339(self._clock.now())

    def _failed(self, backend_name: str, message: str) -> None:
        health = self._health[backend_name]
        health.ok, health.last_error, health.state = False, message, "failing"
