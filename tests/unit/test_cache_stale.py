"""Failed refreshes: stale serving up to max_stale, then 503, then recovery;
backoff between retries; backend health; the last good value is kept."""

from __future__ import annotations

import pytest

from secretd.api.errors import status_of
from secretd.backoff import Backoff
from secretd.errors import BackendUnavailable, BadBackendAnswer
from secretd.model import SecretName
from tests.fakes.cache_rig import make_rig

DB = SecretName("db/app")


async def test_stale_then_503_then_recovery() -> None:
    rig = make_rig(refresh_interval="5m", max_stale="1h")
    rig.backend.put(DB, "good")
    await rig.cache.read(DB)
    refresher = rig.refresher()
    rig.backend.fail = BackendUnavailable("backend 'memory' is unreachable")

    rig.clock.advance(300)
    assert await refresher.poll_once() == 1
    stale = await rig.cache.read(DB)
    assert stale.stale is True
    assert stale.version.value.reveal() == b"good"
    assert rig.observer.lookups["stale"] == 1
    assert rig.observer.results(DB)[-1] == "error"
    health = rig.cache.backend_health()["memory"]
    assert health.ok is False
    assert health.last_error is not None and "unreachable" in health.last_error

    # Keep failing until the last success is more than max_stale ago.
    while rig.clock.monotonic() - 1000.0 <= 3600:
        rig.clock.advance(60)
        await refresher.poll_once()
    with pytest.raises(BackendUnavailable, match="max_stale") as caught:
        await rig.cache.read(DB)
    assert status_of(caught.value) == 503

    rig.backend.fail = None
    rig.clock.advance(300)  # past any backoff delay
    await refresher.poll_once()
    fresh = await rig.cache.read(DB)
    assert fresh.stale is False
    assert fresh.version.value.reveal() == b"good"
    assert rig.cache.backend_health()["memory"].ok is True
    assert rig.cache.backend_health()["memory"].last_success is not None


async def test_refresh_true_during_an_outage_serves_the_cached_value_as_stale() -> None:
    rig = make_rig()
    rig.backend.put(DB, "good")
    await rig.cache.read(DB)
    rig.backend.fail = BackendUnavailable("down")
    got = await rig.cache.read(DB, refresh=True)
    assert got.stale is True
    assert got.version.value.reveal() == b"good"


async def test_a_value_that_fails_to_decrypt_is_never_served() -> None:
    rig = make_rig()
    rig.backend.put(DB, "good")
    await rig.cache.read(DB)
    rig.backend.put(DB, "tampered")  # the backend now fails to decrypt it
    rig.backend.fail = BadBackendAnswer("secret 'db/app': ciphertext failed to verify")
    got = await rig.cache.read(DB, refresh=True)
    assert got.version.value.reveal() == b"good"
    assert got.stale is True
    [info] = rig.cache.snapshot()
    assert info.version_id == "1" and info.stale
    assert info.last_error is not None and "verify" in info.last_error


async def test_a_cold_read_during_an_outage_raises() -> None:
    rig = make_rig()
    rig.backend.put(DB, "good")
    rig.backend.fail = BackendUnavailable("down")
    with pytest.raises(BackendUnavailable):
        await rig.cache.read(DB)


async def test_failing_refreshes_back_off_exponentially_with_jitter_up_to_a_cap() -> None:
    rig = make_rig(refresh_interval="1m")
    rig.backend.put(DB, "good")
    await rig.cache.read(DB)
    refresher = rig.refresher()
    rig.backend.fail = BackendUnavailable("down")
    backoff = Backoff.for_interval(60.0)
    rig.clock.advance(60)
    delays = []
    for failures in range(1, 12):
        await refresher.poll_once()
        due = rig.cache.refresh_target.next_check_at()
        assert due is not None
        delay = due - rig.clock.monotonic()
        ceiling = backoff.ceiling(failures)
        assert ceiling / 2 <= delay <= ceiling
        delays.append(delay)
        rig.clock.advance(delay)
    assert delays[0] <= 1.0
    assert max(delays) <= 60.0
    assert delays[-1] >= 30.0  # grew to the cap (60 s), at least its guaranteed half
    assert rig.backend.calls["versions"] == 11


async def test_a_recovered_secret_returns_to_the_routine_interval() -> None:
    rig = make_rig(refresh_interval="5m")
    rig.backend.put(DB, "good")
    await rig.cache.read(DB)
    refresher = rig.refresher()
    rig.backend.fail_next(BackendUnavailable("blip"))
    rig.clock.advance(300)
    await refresher.poll_once()
    assert (await rig.cache.read(DB)).stale
    rig.clock.advance(1.0)  # first retry is within 1 s
    await refresher.poll_once()
    assert not (await rig.cache.read(DB)).stale
    due = rig.cache.refresh_target.next_check_at()
    assert due is not None
    assert 240.0 <= due - rig.clock.monotonic() <= 300.0
