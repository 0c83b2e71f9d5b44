"""Record files: round trips, and a header that was edited (stages moved,
versions dropped, generation replayed, name changed) fails to verify."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secretd.errors import IntegrityError, StoreError, UnknownKeyId
from secretd.model import SecretName
from secretd.store.envelope import seal
from secretd.store.format import (
    SealedVersion,
    SecretRecord,
    decode_record,
    encode_record,
    peek_name,
    record_filename,
)
from secretd.store.keyfile import Keyring, StoreKey, random_bytes

KEY = StoreKey(random_bytes(32), source="k")
RING = Keyring(KEY)
NAME = SecretName("db/app")
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def sealed(vid: str, value: bytes = b"v") -> SealedVersion:
    return SealedVersion(vid, WHEN, seal(KEY, NAME, vid, value))


def record() -> SecretRecord:
    return SecretRecord(
        NAME,
        3,
        (sealed("a1"), sealed("b2"), sealed("c3")),
        {"current": "b2", "previous": "a1", "pending": "c3"},
    )


def edited(change: Any) -> bytes:
    doc = json.loads(encode_record(record(), KEY))
    change(doc)
    return json.dumps(doc).encode()


def test_round_trip() -> None:
    original = record()
    back = decode_record(encode_record(original, KEY), RING, expected_name=NAME)
    assert back.versions == original.versions
    assert back.stages == original.stages
    assert back.generation == 3
    assert back.mac_key_id == KEY.key_id
    assert back.current.version_id == "b2"
    assert back.stages_of("c3") == frozenset({"pending"})


def test_whitespace_and_key_order_do_not_matter() -> None:
    doc = json.loads(encode_record(record(), KEY))
    compact = json.dumps(dict(reversed(list(doc.items()))), separators=(",", ":")).encode()
    assert decode_record(compact, RING, expected_name=NAME).stages == record().stages


def _set(path: list[Any], value: Any) -> Any:
    def change(doc: Any) -> None:
        target = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    "change",
    [
        _set(["stages", "current"], "a1"),  # roll current back to an older version
        _set(["stages", "current"], "c3"),  # promote pending without the key
        _set(["stages"], {"current": "b2"}),
        _set(["generation"], 99),
        _set(["versions", 0, "created_at"], "2020-01-01T00:00:00.000Z"),
        _set(["versions", 1, "key_id"], "0123456789abcdef"),
        lambda doc: doc["versions"].pop(0) and doc["stages"].pop("previous"),
        lambda doc: doc["versions"].reverse(),
    ],
)
def test_edited_header_fails_to_verify(change: Any) -> None:
    with pytest.raises(IntegrityError):
        decode_record(edited(change), RING, expected_name=NAME)


def test_record_under_another_name_is_refused() -> None:
    data = encode_record(record(), KEY)
    with pytest.raises(IntegrityError, match="different secret"):
        decode_record(data, RING, expected_name="db/other")


def test_unknown_mac_key_is_explicit() -> None:
    other = StoreKey(random_bytes(32), source="o")
    data = encode_record(record(), other)
    with pytest.raises(UnknownKeyId, match=other.key_id):
        decode_record(data, RING, expected_name=NAME)


def test_forged_mac_key_id_fails() -> None:
    other = StoreKey(random_bytes(32), source="o")
    doc = json.loads(encode_record(record(), other))
    doc["mac_key_id"] = KEY.key_id
    with pytest.raises(IntegrityError, match="header failed to verify"):
        decode_record(json.dumps(doc).encode(), RING, expected_name=NAME)


def test_unsupported_format_is_named() -> None:
    with pytest.raises(StoreError, match="format 2"):
        decode_record(edited(_set(["format"], 2)), RING, expected_name=NAME)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "is empty"),
        (b"{", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b"{}", "fields of a store record"),
        (b'"x"', "not a JSON object"),
    ],
)
def test_malformed_files(data: bytes, problem: str) -> None:
    with pytest.raises(IntegrityError, match=problem):
        decode_record(data, RING, expected_name=NAME)


def test_every_truncation_fails_cleanly() -> None:
    data = encode_record(record(), KEY)
    for cut in range(0, len(data) - 2, 7):  # the last bytes are only "}\n"
        with pytest.raises(StoreError):
            decode_record(data[:cut], RING, expected_name=NAME)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    doc=st.dictionaries(
        st.sampled_from(
            ["format", "name", "generation", "stages", "versions", "mac_key_id", "mac", "x"]
        ),
        json_values,
    )
)
def test_hostile_documents_only_raise_store_errors(doc: dict[str, Any]) -> None:
    try:
        decode_record(json.dumps(doc).encode(), RING, expected_name=NAME)
    except StoreError:
        return
    raise AssertionError("a hostile document verified")


@settings(max_examples=200)
@given(raw=st.binary(max_size=200))
def test_random_bytes_only_raise_store_errors(raw: bytes) -> None:
    with pytest.raises(StoreError):
        decode_record(raw, RING, expected_name=NAME)
    with pytest.raises(StoreError):
        peek_name(raw)


def test_file_names_are_hashes_that_cannot_traverse() -> None:
    names = ["a", "a/b", "../../etc/passwd".replace("..", "x"), "x" * 512]
    files = {record_filename(n) for n in names}
    assert len(files) == len(names)
    for f in files:
        assert "/" not in f and len(f) < 100 and f.endswith(".secret")


def test_peek_name_reads_the_claimed_name() -> None:
    assert peek_name(encode_record(record(), KEY)) == NAME
