"""usage.Usage: reads per secret counted in memory, kept in a real state directory."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from secretd.model import SecretName
from secretd.state import StateDir
from secretd.usage import DOCUMENT, ReadRecord, Usage


class Wall:
    def __init__(self, now: float = 1_767_268_800.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_reads_are_counted_with_their_last_time() -> None:
    wall = Wall()
    usage = Usage(None, wall=wall)
    usage.note(SecretName("db/app"))
    wall.now += 10
    usage.note(SecretName("db/app"))
    assert usage.get(SecretName("db/app")) == ReadRecord(wall.now, 2)
    assert usage.get(SecretName("never")) is None
    assert usage.records() == {"db/app": ReadRecord(wall.now, 2)}


def test_counts_survive_a_new_instance_on_the_same_state_dir(tmp_path: Path) -> None:
    state = StateDir.open(tmp_path / "state")
    wall = Wall()
    first = Usage(state, wall=wall)
    started = first.since
    first.note(SecretName("db/app"))
    first.flush()
    wall.now += 3600
    second = Usage(state, wall=wall)
    assert second.since == started  # the clock of "known since" is not reset by a restart
    assert second.get(SecretName("db/app")) == ReadRecord(started, 1)
    second.note(SecretName("db/app"))
    assert second.get(SecretName("db/app")) == ReadRecord(wall.now, 2)


def test_a_first_start_records_since_even_without_reads(tmp_path: Path) -> None:
    state = StateDir.open(tmp_path / "state")
    Usage(state, wall=Wall(100.0)).flush()
    assert Usage(state, wall=Wall(500.0)).since == 100.0


def test_nothing_is_written_when_nothing_changed(tmp_path: Path) -> None:
    state = StateDir.open(tmp_path / "state")
    usage = Usage(state, wall=Wall())
    usage.flush()
    written = os.stat(state.path / DOCUMENT).st_ino
    usage.flush()  # nothing new: the file is not replaced
    assert os.stat(state.path / DOCUMENT).st_ino == written
    usage.note(SecretName("a"))
    usage.flush()
    assert os.stat(state.path / DOCUMENT).st_ino != written


def test_a_damaged_document_is_read_as_empty_and_bad_rows_are_skipped(tmp_path: Path) -> None:
    state = StateDir.open(tmp_path / "state")
    (state.path / DOCUMENT).write_bytes(b'{"since": 5, "secrets": [')
    assert Usage(state, wall=Wall()).records() == {}
    state.write(
        DOCUMENT,
        {
            "since": 5.0,
            "secrets": {
                "ok/name": {"last_read": 7.0, "reads": 3},
                "../bad": {"last_read": 7.0, "reads": 3},
                "neg": {"last_read": -1, "reads": 3},
                "zero": {"last_read": 7.0, "reads": 0},
                "bool": {"last_read": 7.0, "reads": True},
                "text": "x",
            },
        },
    )
    assert Usage(state, wall=Wall()).records() == {"ok/name": ReadRecord(7.0, 3)}


def test_distinct_names_are_bounded() -> None:
    usage = Usage(None, wall=Wall(), max_tracked=2)
    for name in ("a", "b", "c"):
        usage.note(SecretName(name))
    usage.note(SecretName("a"))
    assert {n: r.reads for n, r in usage.records().items()} == {"a": 2, "b": 1}


async def test_a_stopped_flusher_writes_once_more(tmp_path: Path) -> None:
    state = StateDir.open(tmp_path / "state")
    usage = Usage(state, wall=Wall(), flush_interval=3600.0)
    task = asyncio.create_task(usage.flush_forever())
    await asyncio.sleep(0)
    usage.note(SecretName("db/app"))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert Usage(state, wall=Wall()).get(SecretName("db/app")) is not None
