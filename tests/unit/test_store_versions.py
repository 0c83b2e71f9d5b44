"""Version and stage rules (docs/reference/http-api.md): one current; old current becomes previous;
pending; promote; custom labels; bounded history."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secretd.errors import NotFound, UsageError
from secretd.model import SecretName
from secretd.store.envelope import Envelope
from secretd.store.format import SealedVersion
from secretd.store.versions import (
    MAX_CUSTOM_STAGES,
    MAX_UNSTAGED_VERSIONS,
    add_version,
    check_put_stage,
    promote,
)

NAME = SecretName("db/app")
ENV = Envelope("0" * 16, b"w" * 60, b"n" * 12, b"c" * 16)


def v(vid: str) -> SealedVersion:
    return SealedVersion(vid, datetime(2026, 1, 1, tzinfo=UTC), ENV)


def test_first_version_is_current() -> None:
    rec = add_version(None, NAME, v("a"), None)
    assert rec.stages == {"current": "a"}
    assert rec.generation == int(v("a").created_at.timestamp() * 1000)


def test_first_version_cannot_be_pending() -> None:
    with pytest.raises(UsageError, match="first version must be current"):
        add_version(None, NAME, v("a"), "pending")


def test_new_current_pushes_old_to_previous_and_drops_older_previous() -> None:
    rec = add_version(None, NAME, v("a"), None)
    first = rec.generation
    rec = add_version(rec, NAME, v("b"), None)
    assert rec.stages == {"current": "b", "previous": "a"}
    rec = add_version(rec, NAME, v("c"), None)
    assert rec.stages == {"current": "c", "previous": "b"}
    assert rec.stages_of("a") == frozenset()
    assert rec.generation == first + 2


def test_pending_leaves_current_and_moves_between_versions() -> None:
    rec = add_version(None, NAME, v("a"), None)
    rec = add_version(rec, NAME, v("b"), "pending")
    assert rec.stages == {"current": "a", "pending": "b"}
    rec = add_version(rec, NAME, v("c"), "pending")
    assert rec.stages == {"current": "a", "pending": "c"}


def test_promote_finishes_a_rotation() -> None:
    rec = add_version(None, NAME, v("a"), None)
    rec = add_version(rec, NAME, v("b"), "pending")
    rec = promote(rec, "b")
    assert rec.stages == {"current": "b", "previous": "a"}


def test_promote_of_current_changes_nothing() -> None:
    rec = add_version(None, NAME, v("a"), None)
    assert promote(rec, "a") is rec


def test_promote_unknown_version_is_not_found() -> None:
    rec = add_version(None, NAME, v("a"), None)
    with pytest.raises(NotFound, match="no version 'zz'"):
        promote(rec, "zz")


def test_custom_label_moves_and_makes_current() -> None:
    rec = add_version(None, NAME, v("a"), "blue")
    assert rec.stages == {"current": "a", "blue": "a"}
    rec = add_version(rec, NAME, v("b"), "blue")
    assert rec.stages == {"current": "b", "blue": "b", "previous": "a"}


def test_custom_labels_are_bounded() -> None:
    rec = add_version(None, NAME, v("v0"), None)
    for i in range(MAX_CUSTOM_STAGES):
        rec = add_version(rec, NAME, v(f"x{i}"), f"label{i}")
    with pytest.raises(UsageError, match="custom stages"):
        add_version(rec, NAME, v("over"), "one-more")


@pytest.mark.parametrize("bad", ["previous", "has space", "", "x" * 65, "a/b"])
def test_bad_put_stages(bad: str) -> None:
    with pytest.raises(UsageError):
        check_put_stage(bad)


def test_current_and_none_mean_current() -> None:
    assert check_put_stage(None) is None
    assert check_put_stage("current") is None
    assert check_put_stage("pending") == "pending"


def test_duplicate_version_id_is_refused() -> None:
    rec = add_version(None, NAME, v("a"), None)
    with pytest.raises(UsageError):
        add_version(rec, NAME, v("a"), None)


def test_history_is_bounded_but_staged_versions_stay() -> None:
    rec = add_version(None, NAME, v("first"), None)
    rec = add_version(rec, NAME, v("p"), "pending")
    for i in range(MAX_UNSTAGED_VERSIONS + 15):
        rec = add_version(rec, NAME, v(f"n{i}"), None)
    ids = [x.version_id for x in rec.versions]
    staged = set(rec.stages.values())
    assert "p" in ids  # pending is kept however old
    assert len([i for i in ids if i not in staged]) == MAX_UNSTAGED_VERSIONS
    assert ids[-1] == f"n{MAX_UNSTAGED_VERSIONS + 14}"


@settings(max_examples=200)
@given(ops=st.lists(st.sampled_from(["put", "pending", "promote", "label"]), max_size=40))
def test_invariants_hold_for_any_sequence(ops: list[str]) -> None:
    rec = add_version(None, NAME, v("v0"), None)
    for i, op in enumerate(ops, start=1):
        if op == "promote":
            rec = promote(rec, rec.versions[0].version_id)
        else:
            stage = {"put": None, "pending": "pending", "label": "blue"}[op]
            rec = add_version(rec, NAME, v(f"v{i}"), stage)
        ids = [x.version_id for x in rec.versions]
        assert len(ids) == len(set(ids))
        assert set(rec.stages.values()) <= set(ids)
        assert "current" in rec.stages
        assert len(ids) <= MAX_UNSTAGED_VERSIONS + len(rec.stages)
        assert rec.stages.get("previous") != rec.stages["current"]
