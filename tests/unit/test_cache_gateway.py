"""Hostile and broken backend answers at the gateway, and listings across mounts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from secretd.cache.secret_cache import SecretCache
from secretd.config import CacheSection
from secretd.errors import BackendTimeout, BadBackendAnswer
from secretd.model import Fetched, SecretName
from tests.fakes.cache_rig import RecordingObserver, cache_over, make_rig
from tests.fakes.fake_clock import FakeClock
from tests.fakes.memory_backend import MemoryBackend


class JunkBackend:
    """A backend (not listable, not watchable) whose answers are whatever a test sets."""

    def __init__(self, name: str = "junk") -> None:
        self.name = name
        self.inner = MemoryBackend(name)
        self.versions_answer: Any = None
        self.fetch_answer: Any = None
        self.raise_in_fetch: BaseException | None = None

    async def fetch(
        self, name: SecretName, *, version_id: str | None = None, stage: str | None = None
    ) -> Fetched:
        if self.raise_in_fetch is not None:
            raise self.raise_in_fetch
        if self.fetch_answer is not None:
            answer: Fetched = self.fetch_answer
            return answer
        return await self.inner.fetch(name, version_id=version_id, stage=stage)

    async def current_versions(self, names: Sequence[SecretName]) -> Mapping[SecretName, str]:
        if self.versions_answer is not None:
            answer: Mapping[SecretName, str] = self.versions_answer
            return answer
        return await self.inner.current_versions(names)

    async def aclose(self) -> None:
        pass


def _cache_over(backend: JunkBackend) -> tuple[SecretCache, FakeClock, RecordingObserver]:
    clock = FakeClock()
    observer = RecordingObserver()
    settings = CacheSection(refresh_interval="1m")
    cache = cache_over(backend, settings, seed=3, clock=clock, observer=observer)
    return cache, clock, observer


@pytest.mark.parametrize("junk", [None, "text", 42, Fetched])
async def test_a_fetch_answer_that_is_not_a_version_is_refused(junk: Any) -> None:
    backend = JunkBackend()
    backend.fetch_answer = junk if junk is not None else object()
    cache, _, _ = _cache_over(backend)
    with pytest.raises(BadBackendAnswer, match="not a secret version"):
        await cache.read(SecretName("a"))


async def test_a_backend_raising_timeout_itself_is_a_backend_timeout() -> None:
    backend = JunkBackend()
    backend.raise_in_fetch = TimeoutError()
    cache, _, observer = _cache_over(backend)
    with pytest.raises(BackendTimeout):
        await cache.read(SecretName("a"))
    assert observer.backend_calls == [("junk", "fetch", False)]


@pytest.mark.parametrize("junk", [["a"], "a", 7])
async def test_a_version_check_answer_that_is_not_a_mapping_fails_the_batch(junk: Any) -> None:
    backend = JunkBackend()
    backend.inner.put("a", "v")
    cache, clock, _ = _cache_over(backend)
    await cache.read(SecretName("a"))
    backend.versions_answer = junk
    clock.advance(60)
    for backend_name, names in cache.refresh_target.due_checks(clock.monotonic()).items():
        await cache.refresh_target.check(backend_name, names)
    [info] = cache.snapshot()
    assert info.stale and info.last_error is not None and "version check" in info.last_error


async def test_junk_version_ids_and_extra_names_are_treated_as_absent_and_confirmed() -> None:
    backend = JunkBackend()
    backend.inner.put("a", "v")
    cache, clock, _ = _cache_over(backend)
    await cache.read(SecretName("a"))
    backend.versions_answer = {"a": 1, "zzz": "9", "../etc": "1"}
    clock.advance(60)
    for backend_name, names in cache.refresh_target.due_checks(clock.monotonic()).items():
        await cache.refresh_target.check(backend_name, names)
    [info] = cache.snapshot()
    assert info.version_id == "1" and not info.stale  # a confirming fetch said: unchanged
    assert backend.inner.fetches["a"] == 2


async def test_listing_merges_pinned_cached_and_listable_backends_across_mounts() -> None:
    rig = make_rig(mounts={"local": "", "vault": "vault/"})
    local, vault = rig.backends["local"], rig.backends["vault"]
    local.put("app/one", "v")
    local.put("app/two", "v")
    local.put("vault/shadowed", "v")  # routes to 'vault', so 'local' does not list it
    local.put("other/x", "v")
    vault.put("app/db", "v")
    await rig.cache.read(SecretName("vault/app/db"))
    rig.cache.pin([SecretName("app/declared")])
    assert await rig.cache.list_names("app/") == ["app/declared", "app/one", "app/two"]
    assert await rig.cache.list_names("vault/") == ["vault/app/db"]
    everything = await rig.cache.list_names("")
    assert "vault/shadowed" not in everything
    assert "other/x" in everything
    assert rig.backends["vault"].calls["list"] == 2


async def test_a_failing_listing_still_returns_what_is_known() -> None:
    rig = make_rig()
    rig.backend.put("app/one", "v")
    await rig.cache.read(SecretName("app/one"))
    rig.backend.put("app/two", "v")
    rig.backend.fail_next(BackendTimeout("slow"))
    assert await rig.cache.list_names("app/") == ["app/one"]
    assert rig.cache.backend_health()["memory"].ok is False


async def test_non_listable_backends_are_not_listed() -> None:
    backend = JunkBackend()
    backend.inner.put("a", "v")
    cache, _, observer = _cache_over(backend)
    assert await cache.list_names("") == []
    assert observer.backend_calls == []
