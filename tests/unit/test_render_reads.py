"""The shared template reads: one read per (name, stage) until the name changes;
failures are shared by concurrent waiters but not kept."""

from __future__ import annotations

import asyncio

import pytest

from secretd.errors import BackendUnavailable, NotFound
from secretd.model import SecretName
from secretd.render.reads import ReadMemo
from tests.fakes.dict_reader import DictReader

NAME = SecretName("db/app")


def seeded(delay: float = 0.0) -> tuple[DictReader, ReadMemo]:
    """A reader holding NAME = "v1" (each read taking `delay` s) and a memo over it."""
    reader = DictReader(delay=delay)
    reader.put(NAME, "v1", publish=False)
    return reader, ReadMemo(reader)


async def test_concurrent_reads_share_one_call() -> None:
    reader, memo = seeded(delay=0.05)
    values = await asyncio.gather(*(memo.value(NAME) for _ in range(10)))
    assert {v.reveal() for v in values} == {b"v1"}
    assert reader.reads[NAME] == 1
    await memo.value(NAME)
    assert reader.reads[NAME] == 1


async def test_invalidate_reads_again() -> None:
    reader, memo = seeded()
    await memo.value(NAME)
    reader.put(NAME, "v2", publish=False)
    assert (await memo.value(NAME)).reveal() == b"v1"
    memo.invalidate([NAME])
    assert (await memo.value(NAME)).reveal() == b"v2"
    assert (await memo.value(NAME, "previous")).reveal() == b"v1"
    assert reader.reads[NAME] == 3


async def test_invalidation_during_a_read_is_not_undone() -> None:
    reader, memo = seeded(delay=0.05)
    first = asyncio.create_task(memo.value(NAME))
    await asyncio.sleep(0.01)
    reader.put(NAME, "v2", publish=False)
    memo.invalidate([NAME])
    await first
    assert (await memo.value(NAME)).reveal() == b"v2"
    assert reader.reads[NAME] == 2  # the in-flight read did not re-enter the memo


async def test_failures_are_not_kept() -> None:
    reader = DictReader()
    memo = ReadMemo(reader)
    with pytest.raises(NotFound):
        await memo.value(NAME)
    reader.failing.add(NAME)
    reader.put(NAME, "v1", publish=False)
    with pytest.raises(BackendUnavailable):
        await memo.value(NAME)
    reader.failing.clear()
    assert (await memo.value(NAME)).reveal() == b"v1"
    assert reader.reads[NAME] == 3


async def test_one_cancelled_waiter_does_not_cancel_the_shared_read() -> None:
    reader, memo = seeded(delay=0.05)
    impatient = asyncio.create_task(memo.value(NAME))
    patient = asyncio.create_task(memo.value(NAME))
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert (await patient).reveal() == b"v1"
    assert reader.reads[NAME] == 1
    await memo.aclose()
