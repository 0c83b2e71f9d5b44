"""Bounds: idle eviction of unpinned entries, max_entries and max_bytes (least
recently read unpinned first), and the tables' own accounting."""

from __future__ import annotations

from datetime import UTC, datetime

from secretd.cache.entries import (
    Entry,
    EntryInfo,
    EntryTable,
    NegativeCache,
    VersionCache,
    entry_size,
    is_older,
)
from secretd.model import SecretName, SecretValue, Version
from tests.fakes.cache_rig import make_rig


def _names(snapshot: list[EntryInfo]) -> list[str]:
    return [info.name for info in snapshot]


async def test_idle_unpinned_entries_are_evicted_pinned_ones_stay() -> None:
    rig = make_rig(idle_evict="1h")
    for name in ("a", "b", "c"):
        rig.backend.put(name, name)
        await rig.cache.read(SecretName(name))
    rig.cache.pin([SecretName("b")])
    rig.clock.advance(1800)
    await rig.cache.read(SecretName("c"))  # c is read again: not idle
    rig.clock.advance(1800)
    assert rig.cache.refresh_target.evict_idle() == 1
    assert _names(rig.cache.snapshot()) == ["b", "c"]
    await rig.cache.read(SecretName("a"))
    assert rig.backend.fetches["a"] == 2  # evicted, so loaded again


async def test_max_entries_evicts_the_least_recently_read() -> None:
    rig = make_rig(max_entries=3)
    for name in ("a", "b", "c", "d"):
        rig.backend.put(name, name)
    for name in ("a", "b", "c"):
        await rig.cache.read(SecretName(name))
    await rig.cache.read(SecretName("a"))  # a is now the most recently read
    await rig.cache.read(SecretName("d"))
    assert _names(rig.cache.snapshot()) == ["a", "c", "d"]


async def test_max_bytes_bounds_the_cache_but_never_evicts_pinned() -> None:
    rig = make_rig(max_bytes=4096)
    value = b"x" * 1000
    for i in range(8):
        rig.backend.put(f"s{i}", value)
    rig.cache.pin([SecretName("s0")])
    for i in range(8):
        await rig.cache.read(SecretName(f"s{i}"))
    names = _names(rig.cache.snapshot())
    assert "s0" in names and "s7" in names
    held = sum(len(value) + len(n) + 1 + 256 for n in names)
    assert held <= 4096
    assert len(names) == 3


async def test_an_entry_larger_than_max_bytes_is_still_served_once() -> None:
    rig = make_rig(max_bytes=1024, backend_max_bytes=4096)
    rig.backend.put("big", b"y" * 2000)
    got = await rig.cache.read(SecretName("big"))
    assert len(got.version.value) == 2000


def _version(vid: str, size: int = 10, when: int = 0) -> Version:
    created = datetime.fromtimestamp(1_700_000_000 + when, UTC)
    return Version(vid, frozenset({"current"}), created, SecretValue(b"v" * size))


def test_entry_table_keeps_its_byte_count_through_replacements() -> None:
    table = EntryTable(max_entries=10, max_bytes=1 << 20)
    entry = _entry("a", _version("1", 10))
    table.put(entry)
    assert table.bytes == entry_size("a", _version("1", 10))
    table.replace_version(entry, _version("2", 500))
    assert table.bytes == entry_size("a", _version("2", 500))
    table.remove(SecretName("a"))
    assert table.bytes == 0 and len(table) == 0


def _entry(name: str, version: Version) -> Entry:
    return Entry(
        name=SecretName(name),
        backend="m",
        version=version,
        last_success=0.0,
        last_success_at=datetime(2026, 1, 1, tzinfo=UTC),
        last_read=0.0,
        next_check=0.0,
    )


def test_negative_cache_expires_and_is_bounded() -> None:
    negative = NegativeCache(ttl=5.0, capacity=3)
    for i in range(5):
        negative.add(f"n{i}", now=0.0)
    assert len(negative) == 3
    assert not negative.contains("n0", 1.0)  # the oldest were dropped
    assert negative.contains("n4", 4.9)
    assert not negative.contains("n4", 5.0)


def test_version_cache_expires_forgets_and_is_bounded() -> None:
    held = VersionCache(ttl=10.0, capacity=2)
    name = SecretName("a")
    held.put((name, "stage:previous"), "m", _version("1"), now=0.0)
    held.put((name, "version:2"), "m", _version("2"), now=0.0)
    held.put((SecretName("b"), "version:3"), "m", _version("3"), now=0.0)
    assert len(held) == 2
    assert held.get((name, "stage:previous"), 1.0) is None
    assert held.get((name, "version:2"), 9.0) is not None
    assert held.get((name, "version:2"), 10.0) is None
    held.forget(SecretName("b"))
    assert len(held) == 0


def test_version_order_numeric_ids_by_number_others_by_creation() -> None:
    assert is_older(_version("9"), _version("10"))
    assert not is_older(_version("10"), _version("9"))
    assert not is_older(_version("7"), _version("7"))
    assert is_older(_version("zz", when=0), _version("aa", when=5))
    assert not is_older(_version("aa", when=5), _version("zz", when=0))
    # A numeric id against an opaque one falls back to creation time.
    assert is_older(_version("12", when=0), _version("x", when=1))
