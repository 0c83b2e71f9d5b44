"""Version moves: Changed events, never backwards, watch events, deletions and
pinned secrets that appear later."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from secretd.errors import NotFound
from secretd.events import Changed
from secretd.model import SecretName
from tests.fakes.cache_rig import make_rig

DB = SecretName("db/app")


async def test_changed_is_published_once_per_version_move() -> None:
    rig = make_rig(refresh_interval="1m")
    rig.backend.put(DB, "one")
    await rig.cache.read(DB)
    refresher = rig.refresher()
    async with rig.hub.subscribe() as sub:
        rig.backend.put(DB, "two")
        rig.clock.advance(60)
        await refresher.poll_once()
        await rig.cache.read(DB, refresh=True)  # same version again: no event
        rig.clock.advance(60)
        await refresher.poll_once()  # unchanged: no event
        assert sub.drain() == [Changed(DB, "2")]
    assert (await rig.cache.read(DB)).version.value.reveal() == b"two"
    assert rig.observer.results(DB) == ["changed", "unchanged", "unchanged"]


async def test_the_cache_is_updated_before_subscribers_hear_of_it() -> None:
    rig = make_rig()
    rig.backend.put(DB, "one")
    await rig.cache.read(DB)
    rig.backend.put(DB, "two")
    waiter = asyncio.create_task(rig.hub.wait_for(DB, 5.0))
    await rig.clock.settle()
    await rig.cache.read(DB, refresh=True)
    assert await waiter == "2"
    assert (await rig.cache.read(DB)).version.version_id == "2"


async def test_an_older_numeric_version_never_replaces_the_current_one() -> None:
    rig = make_rig(refresh_interval="1m")
    rig.backend.put(DB, "one")
    rig.backend.put(DB, "two")
    await rig.cache.read(DB)
    rig.backend.promote(DB, "1")  # a replayed/rolled-back answer
    refresher = rig.refresher()
    async with rig.hub.subscribe() as sub:
        rig.clock.advance(60)
        await refresher.poll_once()
        got = await rig.cache.read(DB)
        assert sub.drain() == []
    assert got.version.version_id == "2"
    assert got.version.value.reveal() == b"two"
    assert got.stale is True  # counted as a failed refresh
    assert rig.observer.results(DB)[-1] == "error"


async def test_an_older_version_by_created_at_is_ignored_for_opaque_ids() -> None:
    rig = make_rig()
    now = rig.clock.now()
    rig.backend.put(DB, "old", version_id="b7c1", created_at=now - timedelta(days=1))
    rig.backend.put(DB, "new", version_id="a001", created_at=now)
    await rig.cache.read(DB)
    rig.backend.promote(DB, "b7c1")
    got = await rig.cache.read(DB, refresh=True)
    assert got.version.version_id == "a001"
    assert got.stale


async def test_a_watch_event_triggers_one_fetch_and_one_event() -> None:
    rig = make_rig()
    rig.backend.put(DB, "one")
    await rig.cache.read(DB)
    refresher = rig.refresher()
    watch = asyncio.create_task(refresher.watch_forever("memory", rig.backend))
    try:
        await rig.clock.settle()
        assert rig.backend.watchers == 1
        async with rig.hub.subscribe() as sub:
            rig.backend.put(DB, "two")
            await rig.clock.settle()
            assert sub.drain() == [Changed(DB, "2")]
        assert rig.backend.fetches[DB] == 2
        assert rig.backend.calls["versions"] == 0
        assert (await rig.cache.read(DB)).version.value.reveal() == b"two"
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


async def test_watch_events_for_uncached_names_cost_nothing_but_clear_the_negative_cache() -> None:
    rig = make_rig(negative_ttl="1h")
    with pytest.raises(NotFound):
        await rig.cache.read(DB)
    await rig.cache.refresh_target.on_change("memory", "db/app")
    assert rig.backend.fetches[DB] == 1  # not loaded: the next read will load it
    rig.backend.put(DB, "created")
    await rig.cache.refresh_target.on_change("memory", "db/app")
    assert (await rig.cache.read(DB)).version.value.reveal() == b"created"


async def test_a_dead_watch_stream_is_reopened_with_backoff() -> None:
    rig = make_rig()
    refresher = rig.refresher()
    watch = asyncio.create_task(refresher.watch_forever("memory", rig.backend))
    try:
        await rig.clock.settle()
        assert rig.backend.watchers == 1
        rig.backend.end_watch()
        await rig.clock.settle()
        assert rig.backend.watchers == 0
        rig.clock.advance(0.1)  # the first reopen comes within 100 ms
        await rig.clock.settle()
        assert rig.backend.watchers == 1
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


async def test_a_deleted_secret_is_removed_and_announced() -> None:
    rig = make_rig()
    rig.backend.put(DB, "one")
    await rig.cache.read(DB)
    rig.backend.delete(DB)
    async with rig.hub.subscribe() as sub:
        await rig.cache.refresh_target.on_change("memory", "db/app")
        assert sub.drain() == [Changed(DB, None)]
    assert rig.cache.snapshot() == []
    with pytest.raises(NotFound):
        await rig.cache.read(DB)
    assert rig.observer.results(DB)[-1] == "not_found"


async def test_a_pinned_secret_that_appears_later_is_loaded_and_announced() -> None:
    rig = make_rig(refresh_interval="1m")
    rig.cache.pin([DB])
    outcome = await rig.cache.preload([DB])
    assert isinstance(outcome[DB], NotFound)
    assert DB in rig.cache.failed_pins()
    rig.backend.put(DB, "late")
    refresher = rig.refresher()
    async with rig.hub.subscribe() as sub:
        rig.clock.advance(60)  # past the backoff
        await refresher.poll_once()
        assert sub.drain() == [Changed(DB, "1")]
    assert rig.cache.failed_pins() == {}
    [info] = rig.cache.snapshot()
    assert info.pinned and info.version_id == "1"


async def test_preload_reports_each_name() -> None:
    rig = make_rig()
    rig.backend.put(DB, "one")
    outcome = await rig.cache.preload([DB, SecretName("missing"), DB])
    assert outcome[DB] is None
    assert isinstance(outcome[SecretName("missing")], NotFound)
    assert rig.backend.fetches[DB] == 1


async def test_a_stage_read_that_finds_a_newer_current_version_moves_the_cache() -> None:
    rig = make_rig()
    rig.backend.put(DB, "one")
    await rig.cache.read(DB)
    rig.backend.put(DB, "two")
    async with rig.hub.subscribe() as sub:
        got = await rig.cache.read(DB, version_id="2")
        assert got.version.value.reveal() == b"two"
        assert sub.drain() == [Changed(DB, "2")]
    assert (await rig.cache.read(DB)).version.version_id == "2"


async def test_prefix_mounts_strip_names_and_key_the_cache_by_full_name() -> None:
    rig = make_rig(mounts={"local": "", "vault": "vault/"})
    vault = rig.backends["vault"]
    vault.put("app/db", "from vault")
    got = await rig.cache.read(SecretName("vault/app/db"))
    assert got.backend == "vault"
    assert vault.fetches["app/db"] == 1
    assert [i.name for i in rig.cache.snapshot()] == ["vault/app/db"]
    async with rig.hub.subscribe() as sub:
        vault.put("app/db", "rotated")
        await rig.cache.refresh_target.on_change("vault", "app/db")
        assert sub.drain() == [Changed(SecretName("vault/app/db"), "2")]


async def test_a_change_during_an_in_flight_fetch_is_not_answered_by_that_fetch() -> None:
    rig = make_rig()
    rig.backend.put(DB, "one")
    await rig.cache.read(DB)
    rig.backend.hold(answered=True)  # the early fetch has read "one" and is slow to reply
    early = asyncio.create_task(rig.cache.read(DB, refresh=True))
    await rig.clock.settle()
    gate_one = rig.backend.waiting
    rig.backend.put(DB, "two")
    change = asyncio.create_task(rig.cache.refresh_target.on_change("memory", "db/app"))
    await rig.clock.settle()
    rig.backend.release()  # the early fetch answers "one"
    await early
    await rig.clock.settle()
    rig.backend.release()
    await change
    assert gate_one == 1
    assert (await rig.cache.read(DB)).version.value.reveal() == b"two"
    assert rig.backend.fetches[DB] == 3  # load, the early refresh, one fresh fetch


async def test_a_failed_pin_loaded_by_a_read_is_still_announced() -> None:
    rig = make_rig()
    rig.cache.pin([DB])
    await rig.cache.preload([DB])
    rig.backend.put(DB, "late")
    async with rig.hub.subscribe() as sub:
        with pytest.raises(NotFound):
            await rig.cache.read(DB)  # still negatively cached
        rig.clock.advance(5)
        await rig.cache.read(DB)
        assert sub.drain() == [Changed(DB, "1")]


async def test_a_flood_of_change_events_costs_a_handful_of_fetches() -> None:
    rig = make_rig()
    rig.backend.put(DB, "one")
    await rig.cache.read(DB)
    refresher = rig.refresher()
    watch = asyncio.create_task(refresher.watch_forever("memory", rig.backend))
    try:
        await rig.clock.settle()
        rig.backend.hold()
        rig.backend.put(DB, "two")
        for _ in range(1000):
            rig.backend.notify(DB)
        for _ in range(200):  # bounded: let the watch loop drain the burst
            await rig.clock.settle()
            rig.backend.release()
            rig.backend.hold()
        rig.backend.release()
        await rig.clock.settle()
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
    assert (await rig.cache.read(DB)).version.value.reveal() == b"two"
    assert rig.backend.fetches[DB] <= 10  # the first load plus a few, not 1000
