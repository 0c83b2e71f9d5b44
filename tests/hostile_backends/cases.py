"""`HostileBackendCases`: one list of hostile answers that every backend must survive.

A backend's hostile test subclasses it and provides a `rig` fixture: a
`HostileRig` that has opened the backend against something it can make
misbehave (files on disk, a fake Vault, a fake AWS endpoint):

    class TestVaultHostile(HostileBackendCases):
        @pytest.fixture
        async def rig(self) -> AsyncIterator[HostileRig]: ...

Every case in CASES runs for every backend; a case the backend cannot be made
to show (a file cannot drip) is skipped by its rig, never passed. Each asserts
what docs/security.md promises for a hostile backend answer:

- a clear error: a BackendError naming the secret, recorded where health and
  status show it;
- no value leaked: no canary (the good value, the hostile answer's value) in
  an error or a log line;
- bounded: the read ends within the backend's timeout plus slack, and the
  process's peak memory (VmHWM) grows by less than MAX_GROWTH_KB;
- the last good value is still served, marked stale, and the backend reads
  correctly again once the answers are honest.

`test_a_storm_stays_bounded` runs the rig's storm (a flood of change
notifications, millisecond token TTLs, endless throttling) and checks the
work it caused stays within the rig's bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
import structlog

from secretd.backends.base import Backend
from secretd.cache.secret_cache import SecretCache
from secretd.errors import BackendError, SecretdError
from secretd.model import CachedSecret, SecretName
from tests.fakes.cache_rig import cache_over

CASES = (
    "oversize",
    "drip",
    "hang",
    "wrong_shape",
    "wrong_name",
    "wrong_version",
    "rollback",
    "redirect",
)
MAX_SECRET_BYTES = 4096
SLACK = 5.0  # seconds past the backend's timeout a hostile read may take
MAX_GROWTH_KB = 64 * 1024  # a 100 MiB answer must not be held, let alone parsed


@dataclass(frozen=True)
class Storm:
    """What a storm caused: requests (or events) counted, and the rig's bound."""

    work: int
    limit: int
    error: SecretdError | None = None


class HostileRig(Protocol):
    """A backend and the means to make what it reads hostile."""

    backend: Backend  # opened with max_secret_bytes=MAX_SECRET_BYTES and `timeout`
    name: SecretName  # a secret with two versions; the newer is current
    good: bytes  # what the backend serves for the current version
    canaries: tuple[str, ...]  # strings that must never show in an error or a log line
    timeout: float

    def supports(self, case: str) -> bool: ...

    async def misbehave(self, case: str) -> None: ...

    async def behave(self) -> None: ...

    async def storm(self) -> Storm: ...


def peak_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def reset_peak() -> int:
    """Reset this process's peak RSS to its current RSS (Linux), and return it."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return peak_kb()


class HostileBackendCases:
    """Subclass me and provide the `rig` fixture."""

    @pytest.fixture
    def rig(self) -> HostileRig:
        raise NotImplementedError("a HostileBackendCases subclass provides the `rig` fixture")

    @pytest.mark.parametrize("case", CASES)
    async def test_a_hostile_answer_loses_nothing(self, rig: HostileRig, case: str) -> None:
        if not rig.supports(case):
            pytest.skip(f"{type(rig).__name__} cannot be made to show {case!r}")
        limit, timeout = MAX_SECRET_BYTES, rig.timeout + SLACK
        cache = cache_over(rig.backend, seed=5, max_secret_bytes=limit, call_timeout=timeout)
        first = await cache.read(rig.name)
        assert first.version.value.reveal() == rig.good
        await rig.misbehave(case)
        before = reset_peak()
        started = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            async with asyncio.timeout(rig.timeout + SLACK):
                served = await cache.read(rig.name, refresh=True)
                error = await self._direct_error(rig, case, first)
        elapsed = time.monotonic() - started
        growth = peak_kb() - before
        self._check_served(served, first, rig)
        self._check_error(error, rig, case, cache, logs)
        assert elapsed < 2 * rig.timeout + SLACK, f"{case} took {elapsed:.1f}s"
        assert growth < MAX_GROWTH_KB, f"{case} grew the peak RSS by {growth} kB"
        await rig.behave()
        again = await cache.read(rig.name, refresh=True)
        assert again.version.value.reveal() == rig.good and not again.stale

    async def test_a_storm_stays_bounded(self, rig: HostileRig) -> None:
        before = reset_peak()
        with structlog.testing.capture_logs() as logs:
            storm = await rig.storm()
        assert storm.work <= storm.limit, f"a storm caused {storm.work} (bound {storm.limit})"
        assert peak_kb() - before < MAX_GROWTH_KB
        shown = repr(logs) + (storm.error.message if storm.error is not None else "")
        for canary in rig.canaries:
            assert canary not in shown

    @staticmethod
    async def _direct_error(rig: HostileRig, case: str, first: CachedSecret) -> BackendError | None:
        """The backend's own error for the hostile answer (None when the backend
        cannot know, as with a rollback: the cache is what refuses that)."""
        try:
            if case == "wrong_version":
                await rig.backend.fetch(rig.name, version_id=first.version.version_id)
            else:
                await rig.backend.fetch(rig.name)
        except BackendError as exc:
            return exc
        if case == "rollback":
            return None
        raise AssertionError(f"the backend accepted a {case} answer")

    @staticmethod
    def _check_served(served: CachedSecret, first: CachedSecret, rig: HostileRig) -> None:
        assert served.version.value.reveal() == rig.good  # the last good value
        assert served.version.version_id == first.version.version_id

    @staticmethod
    def _check_error(
        error: BackendError | None,
        rig: HostileRig,
        case: str,
        cache: SecretCache,
        logs: list[dict[str, object]],
    ) -> None:
        recorded = [info.last_error for info in cache.snapshot() if info.name == rig.name]
        health = cache.backend_health()[rig.backend.name].last_error
        messages = [m for m in (*recorded, health) if m]
        if case != "wrong_version":  # a current read that failed: the entry says why
            assert recorded and recorded[0], f"{case}: no error recorded for the entry"
        if error is not None:
            assert rig.name in error.message, error.message
            messages.append(error.message)
        shown = repr(logs) + "\n".join(messages)
        for canary in rig.canaries:
            assert canary not in shown, f"{case}: a value leaked"
