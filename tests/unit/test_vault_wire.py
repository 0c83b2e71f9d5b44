"""Pure parts of the Vault backend: the strict JSON reader, KV answers and stages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secretd.backends.vault_http import _retry_after
from secretd.backends.vault_kv import (
    KvMetadata,
    VersionInfo,
    parse_data,
    parse_metadata,
    parse_version_id,
)
from secretd.backends.vault_wire import MAX_DEPTH, body_cap, parse_object
from secretd.errors import BadBackendAnswer, NotFound

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = "2026-01-01T00:00:00.123456789Z"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_any_ordinary_object_parses_to_itself(obj: dict[str, Any]) -> None:
    assert parse_object(json.dumps(obj).encode(), where="t") == obj


@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_are_bad_answers(raw: bytes) -> None:
    try:
        parsed = parse_object(raw, where="t")
    except BadBackendAnswer as exc:
        assert "t:" in str(exc)
    else:
        assert isinstance(parsed, dict)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a":1,"a":1}', "duplicate"),
        (b'{"a":{"b":1,"b":2}}', "duplicate"),
        (b'{"a":NaN}', "not valid JSON"),
        (b'{"a":-Infinity}', "not valid JSON"),
        (b'{"a":1e999}', "not valid JSON"),
        (b'{"a":18446744073709551616}', "64-bit"),
        (b'{"a":-9223372036854775809}', "64-bit"),
        (b'{"a":' + b"1" * 41 + b".5}", "too long"),
        (b'{"a":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", "deeper"),
        (b"[1]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b"", "not valid JSON"),
        (b'{"a":"\xff"}', "not valid JSON"),
        (b'{"a":"\\ud800"}', "not valid JSON"),
        (b'{"a":1} {"b":2}', "not valid JSON"),
    ],
)
def test_hostile_json_is_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(BadBackendAnswer, match=reason):
        parse_object(raw, where="vault backend 'v' path")


def test_depth_at_the_limit_is_fine() -> None:
    raw = b'{"a":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert "a" in parse_object(raw, where="t")


def test_extreme_64_bit_integers_are_fine() -> None:
    raw = b'{"a":18446744073709551615,"b":-9223372036854775808}'
    assert parse_object(raw, where="t") == {"a": 2**64 - 1, "b": -(2**63)}


def test_body_cap_leaves_room_for_escaping_and_the_envelope() -> None:
    assert body_cap(65536) == 65536 * 4 + 65536


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", 1),
        ("2", 2),
        ("42", 42),
        ("9223372036854775807", 2**63 - 1),
        ("0", None),
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1.0", None),
        ("١", None),
        ("9223372036854775808", None),
        ("", None),
    ],
)
def test_version_ids(raw: str, expected: int | None) -> None:
    assert parse_version_id(raw) == expected


def metadata(
    current: int, versions: dict[int, dict[str, Any]], custom: Any = None
) -> dict[str, Any]:
    listed = {
        str(v): {"created_time": T1, "deletion_time": "", "destroyed": False, **extra}
        for v, extra in versions.items()
    }
    return {"data": {"current_version": current, "versions": listed, "custom_metadata": custom}}


def test_stages_follow_kv_versions() -> None:
    past = (NOW - timedelta(hours=1)).isoformat()
    future = (NOW + timedelta(hours=1)).isoformat()
    meta = parse_metadata(
        metadata(
            5,
            {
                1: {},
                2: {"destroyed": True},
                3: {"deletion_time": past},
                4: {"deletion_time": future},
                5: {},
            },
            {"stage:pending": "1", "stage:previous": "2", "stage:": "1", "note": "x"},
        ),
        where="t",
    )
    assert meta.live_current(NOW) == 5
    assert meta.previous_version(NOW) == 4  # deletion scheduled, not yet due
    assert meta.stages_of(5, NOW) == {"current"}
    assert meta.stages_of(4, NOW) == {"previous"}
    assert meta.stages_of(1, NOW) == {"pending"}
    assert meta.resolve_stage("pending", NOW) == 1
    assert meta.resolve_stage("nope", NOW) is None
    assert not meta.is_live(2, NOW) and not meta.is_live(3, NOW)
    assert meta.is_live(4, NOW) and not meta.is_live(4, NOW + timedelta(hours=2))


def test_a_deleted_current_has_no_current() -> None:
    meta = parse_metadata(metadata(2, {1: {}, 2: {"destroyed": True}}), where="t")
    assert meta.live_current(NOW) is None
    assert meta.stages_of(1, NOW) == {"previous"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "data is not"),
        ({"data": {"current_version": 1, "versions": {"x": {}}}}, "not a version"),
        ({"data": {"current_version": 3, "versions": {}}}, "not among"),
        ({"data": {"current_version": -1, "versions": {}}}, "version number"),
        ({"data": {"current_version": 1.0, "versions": {}}}, "version number"),
        (metadata(1, {1: {"created_time": "yesterday"}}), "RFC 3339"),
        (metadata(1, {1: {"created_time": "2026-01-01T00:00:00"}}), "time zone"),
        (metadata(1, {1: {"created_time": 5}}), "created_time"),
        (metadata(1, {1: {"deletion_time": None}}), "deletion_time"),
        (metadata(1, {1: {}}, ["stage:x"]), "custom_metadata"),
    ],
)
def test_malformed_metadata_is_a_bad_answer(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadBackendAnswer, match=reason):
        parse_metadata(body, where="t")


LISTED = VersionInfo(T1, datetime(2026, 1, 1, tzinfo=UTC), None, False)


def data_answer(version: int = 2, created: str = T1, **meta: Any) -> dict[str, Any]:
    metadata = {"version": version, "created_time": created, "deletion_time": "", **meta}
    return {"data": {"data": {"password": "p", "n": 1}, "metadata": metadata}}


def test_data_is_the_kv_map_as_compact_json() -> None:
    raw = parse_data(data_answer(), requested=2, listed=LISTED, now=NOW, where="t")
    assert raw == b'{"password":"p","n":1}'


@pytest.mark.parametrize(
    ("body", "error", "reason"),
    [
        (data_answer(version=3), BadBackendAnswer, "asked for version 2"),
        (data_answer(created="2026-01-01T00:00:01Z"), BadBackendAnswer, "created_time"),
        (data_answer(destroyed=True), NotFound, "deleted or destroyed"),
        (data_answer(deletion_time="2026-01-01T00:00:00Z"), NotFound, "deleted"),
        (
            {"data": {"data": None, "metadata": data_answer()["data"]["metadata"]}},
            NotFound,
            "deleted",
        ),
        (
            {"data": {"data": ["x"], "metadata": data_answer()["data"]["metadata"]}},
            BadBackendAnswer,
            "data.data",
        ),
        ({"data": {"data": {}}}, BadBackendAnswer, "data.metadata"),
    ],
)
def test_data_answers_are_checked_against_the_request(
    body: dict[str, Any], error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        parse_data(body, requested=2, listed=LISTED, now=NOW, where="t")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("3", 3.0),
        ("0", 0.0),
        ("999999", 30.0),
        ("9999999", None),
        ("soon", None),
        ("-5", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_retry_after_is_bounded(header: str | None, expected: float | None) -> None:
    assert _retry_after(header) == expected


def test_kv_metadata_without_versions_has_no_current() -> None:
    assert KvMetadata(0, {}, {}).live_current(NOW) is None
