"""SecretCache reads: hits, misses, single-flight, coalesced refresh, the negative
cache, non-current versions, and answers the cache must refuse."""

from __future__ import annotations

import asyncio

import pytest

from secretd.errors import (
    BackendTimeout,
    BackendUnavailable,
    BadBackendAnswer,
    InvalidName,
    NotFound,
)
from secretd.model import Fetched, SecretName, Version
from tests.fakes.cache_rig import make_rig

DB = SecretName("db/app")


async def test_cold_read_loads_once_then_hits() -> None:
    rig = make_rig()
    rig.backend.put(DB, "s3cret")
    first = await rig.cache.read(DB)
    second = await rig.cache.read(DB)
    assert first.version.value.reveal() == b"s3cret"
    assert second.version.version_id == first.version.version_id == "1"
    assert not second.stale
    assert second.backend == "memory"
    assert rig.backend.fetches[DB] == 1
    assert rig.observer.lookups == {"miss": 1, "hit": 1}


async def test_256_concurrent_cold_reads_cause_one_fetch() -> None:
    rig = make_rig()
    rig.backend.put(DB, "v")
    rig.backend.hold()
    readers = [asyncio.create_task(rig.cache.read(DB)) for _ in range(256)]
    await rig.clock.settle()
    assert rig.backend.waiting == 1  # one call parked at the backend, 255 joined it
    rig.backend.release()
    results = await asyncio.gather(*readers)
    assert {r.version.version_id for r in results} == {"1"}
    assert rig.backend.calls["fetch"] == 1
    assert rig.observer.lookups["miss"] == 256


async def test_a_failed_flight_fails_every_joiner_and_the_next_read_retries() -> None:
    rig = make_rig()
    rig.backend.put(DB, "v")
    rig.backend.fail_next(BackendUnavailable("backend 'memory' is down"))
    rig.backend.hold()
    readers = [asyncio.create_task(rig.cache.read(DB)) for _ in range(20)]
    await rig.clock.settle()
    rig.backend.release()
    outcomes = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(o, BackendUnavailable) for o in outcomes)
    assert rig.backend.calls["fetch"] == 1
    assert (await rig.cache.read(DB)).version.version_id == "1"
    assert rig.backend.calls["fetch"] == 2


async def test_a_reader_that_gives_up_does_not_cancel_the_shared_fetch() -> None:
    rig = make_rig()
    rig.backend.put(DB, "v")
    rig.backend.hold()
    quitter = asyncio.create_task(rig.cache.read(DB))
    stayer = asyncio.create_task(rig.cache.read(DB))
    await rig.clock.settle()
    quitter.cancel()
    await rig.clock.settle()
    rig.backend.release()
    assert (await stayer).version.version_id == "1"
    assert quitter.cancelled()
    assert rig.backend.calls["fetch"] == 1


async def test_concurrent_refreshes_share_one_backend_call() -> None:
    rig = make_rig()
    rig.backend.put(DB, "old")
    await rig.cache.read(DB)
    rig.backend.put(DB, "new")
    rig.backend.hold()
    refreshers = [asyncio.create_task(rig.cache.read(DB, refresh=True)) for _ in range(50)]
    await rig.clock.settle()
    assert rig.backend.waiting == 1
    rig.backend.release()
    results = await asyncio.gather(*refreshers)
    assert {r.version.value.reveal() for r in results} == {b"new"}
    assert rig.backend.calls["fetch"] == 2  # the first load and one shared refresh


async def test_unknown_names_are_negatively_cached_for_negative_ttl() -> None:
    rig = make_rig(negative_ttl="5s")
    for _ in range(100):
        with pytest.raises(NotFound):
            await rig.cache.read(SecretName("no/such"))
    assert rig.backend.fetches["no/such"] == 1
    assert rig.observer.lookups["negative"] == 99
    rig.clock.advance(5.0)
    with pytest.raises(NotFound):
        await rig.cache.read(SecretName("no/such"))
    assert rig.backend.fetches["no/such"] == 2


async def test_refresh_true_bypasses_the_negative_cache() -> None:
    rig = make_rig(negative_ttl="1h")
    with pytest.raises(NotFound):
        await rig.cache.read(DB)
    rig.backend.put(DB, "now exists")
    with pytest.raises(NotFound):
        await rig.cache.read(DB)
    assert (await rig.cache.read(DB, refresh=True)).version.version_id == "1"


async def test_invalid_names_never_reach_a_backend() -> None:
    rig = make_rig()
    for bad in ["", "/abs", "a/../b", "a//b", "sp ace", "x" * 513, "nul\x00"]:
        with pytest.raises(InvalidName):
            await rig.cache.read(bad)  # type: ignore[arg-type]
    assert sum(rig.backend.calls.values()) == 0


async def test_names_outside_every_mount_are_not_found_without_a_backend_call() -> None:
    rig = make_rig(mounts={"vault": "vault/"})
    with pytest.raises(NotFound, match="not under any configured backend mount"):
        await rig.cache.read(SecretName("other/x"))
    assert sum(rig.backend.calls.values()) == 0


async def test_previous_stage_is_fetched_then_held_briefly() -> None:
    rig = make_rig()
    rig.backend.put(DB, "one")
    rig.backend.put(DB, "two")
    prev = await rig.cache.read(DB, stage="previous")
    again = await rig.cache.read(DB, stage="previous")
    assert prev.version.value.reveal() == b"one"
    assert again.version.version_id == "1"
    assert rig.backend.fetches[DB] == 1
    rig.clock.advance(61.0)  # non-current versions are held at most a minute
    await rig.cache.read(DB, stage="previous")
    assert rig.backend.fetches[DB] == 2


async def test_version_matching_current_is_served_from_cache() -> None:
    rig = make_rig()
    rig.backend.put(DB, "one")
    await rig.cache.read(DB)
    got = await rig.cache.read(DB, version_id="1")
    assert got.version.value.reveal() == b"one"
    assert rig.backend.fetches[DB] == 1


async def test_unknown_version_is_not_found_and_negatively_cached() -> None:
    rig = make_rig()
    rig.backend.put(DB, "one")
    for _ in range(3):
        with pytest.raises(NotFound, match="version '99'"):
            await rig.cache.read(DB, version_id="99")
    assert rig.backend.fetches[DB] == 1


async def test_an_answer_for_another_name_is_refused() -> None:
    rig = make_rig()
    rig.backend.put(DB, "mine")
    rig.backend.put("db/other", "theirs")
    rig.backend.tamper = lambda f: Fetched(SecretName("db/other"), f.version)
    with pytest.raises(BadBackendAnswer, match="another secret"):
        await rig.cache.read(DB)
    assert rig.cache.snapshot() == []
    assert rig.cache.backend_health()["memory"].ok is False


async def test_an_answer_for_another_version_is_refused() -> None:
    rig = make_rig()
    rig.backend.put(DB, "one")
    rig.backend.put(DB, "two")
    real = rig.backend

    def wrong_version(answer: Fetched) -> Fetched:
        return Fetched(
            answer.name,
            Version("2", answer.version.stages, answer.version.created_at, answer.version.value),
        )

    real.tamper = wrong_version
    with pytest.raises(BadBackendAnswer, match="another version"):
        await rig.cache.read(DB, version_id="1")


async def test_a_non_current_answer_to_a_current_read_is_refused() -> None:
    rig = make_rig()
    rig.backend.put(DB, "one")
    rig.backend.tamper = lambda f: Fetched(
        f.name,
        Version(
            f.version.version_id, frozenset({"pending"}), f.version.created_at, f.version.value
        ),
    )
    with pytest.raises(BadBackendAnswer, match="not the current version"):
        await rig.cache.read(DB)


async def test_an_oversized_value_is_refused() -> None:
    rig = make_rig(max_secret_bytes=8, backend_max_bytes=1024)
    rig.backend.put(DB, "nine byte")
    with pytest.raises(BadBackendAnswer, match="max_secret_bytes"):
        await rig.cache.read(DB)


async def test_a_foreign_exception_becomes_bad_answer_without_its_text() -> None:
    rig = make_rig()
    rig.backend.put(DB, "v")

    def explode(_: Fetched) -> Fetched:
        raise RuntimeError("CANARY-VALUE-IN-EXCEPTION")

    rig.backend.tamper = explode
    with pytest.raises(BadBackendAnswer) as caught:
        await rig.cache.read(DB)
    assert "RuntimeError" in str(caught.value)
    assert "CANARY" not in str(caught.value)
    assert "CANARY" not in (rig.cache.backend_health()["memory"].last_error or "")


async def test_a_hanging_backend_times_out() -> None:
    rig = make_rig(call_timeout=0.05)
    rig.backend.put(DB, "v")
    rig.backend.hold()
    with pytest.raises(BackendTimeout, match="timed out"):
        await rig.cache.read(DB)
    rig.backend.release()


async def test_values_never_appear_in_repr_of_what_the_cache_returns() -> None:
    rig = make_rig()
    rig.backend.put(DB, "CANARY-7f3a")
    got = await rig.cache.read(DB)
    assert "CANARY" not in repr(got)
    assert "CANARY" not in repr(rig.cache.snapshot())


async def test_is_cached_says_whether_a_read_would_reach_the_backend() -> None:
    rig = make_rig(negative_ttl="5s")
    rig.backend.put(DB, "v")
    assert not rig.cache.is_cached(DB)
    await rig.cache.read(DB)
    assert rig.cache.is_cached(DB)
    missing = SecretName("no/such")
    with pytest.raises(NotFound):
        await rig.cache.read(missing)
    assert rig.cache.is_cached(missing)
    rig.clock.advance(5)
    assert not rig.cache.is_cached(missing)


async def test_a_held_read_hands_out_one_view_until_what_it_shows_changes() -> None:
    rig = make_rig(max_stale="1h")
    rig.backend.put(DB, "v1")
    assert rig.cache.read_held(DB) is None  # not loaded: only `read` can answer
    loaded = await rig.cache.read(DB)
    first, again = rig.cache.read_held(DB), await rig.cache.read(DB)
    assert first is again is rig.cache.read_held(DB)  # memoised answers live on it
    assert first is not None and first.version is loaded.version
    rig.clock.advance(1)
    await rig.cache.read(DB, refresh=True)  # confirmed: a new time, so a new view
    confirmed = rig.cache.read_held(DB)
    assert confirmed is not first and confirmed is not None
    assert confirmed.fetched_at > first.fetched_at
    rig.backend.put(DB, "v2")
    await rig.cache.read(DB, refresh=True)
    moved = rig.cache.read_held(DB)
    assert moved is not None and moved.version.value.reveal() == b"v2"
    rig.backend.fail = BackendUnavailable("down")
    await rig.cache.read(DB, refresh=True)
    stale = rig.cache.read_held(DB)
    assert stale is not None and stale.stale and stale is not moved
    assert rig.observer.lookups == {"miss": 1, "hit": 5, "stale": 1}  # held reads count


async def test_a_held_read_of_a_remembered_miss_is_left_to_read() -> None:
    rig = make_rig()
    with pytest.raises(NotFound):
        await rig.cache.read(SecretName("nope/none"))
    assert rig.cache.read_held(SecretName("nope/none")) is None
    with pytest.raises(NotFound):  # and `read` still says so, from the negative cache
        await rig.cache.read(SecretName("nope/none"))
    assert rig.backend.fetches["nope/none"] == 1
