"""AES-256-GCM envelopes: round trips, and every tampering fails without plaintext."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secretd.errors import IntegrityError, UnknownKeyId
from secretd.store.envelope import (
    NONCE_BYTES,
    WRAPPED_KEY_BYTES,
    Envelope,
    open_envelope,
    rewrap,
    seal,
)
from secretd.store.keyfile import Keyring, StoreKey, random_bytes

NAME, VID = "db/app", "0123456789abcdef0123456789abcdef"


def new_key(label: str = "k") -> StoreKey:
    return StoreKey(random_bytes(32), source=label)


KEY = new_key()
RING = Keyring(KEY)
values = st.binary(min_size=0, max_size=2048)


@settings(max_examples=200)
@given(value=values, name=st.sampled_from(["a", "db/app", "x/y.z@w-1_2+3=4"]))
def test_seal_then_open_round_trips(value: bytes, name: str) -> None:
    env = seal(KEY, name, VID, value)
    assert open_envelope(RING, env, name, VID) == value
    assert env.key_id == KEY.key_id
    assert len(env.wrapped_key) == WRAPPED_KEY_BYTES
    assert len(env.nonce) == NONCE_BYTES


def test_each_seal_uses_fresh_data_key_and_nonces() -> None:
    one, two = seal(KEY, NAME, VID, b"same"), seal(KEY, NAME, VID, b"same")
    assert one.nonce != two.nonce
    assert one.ciphertext != two.ciphertext
    assert one.wrapped_key[NONCE_BYTES:] != two.wrapped_key[NONCE_BYTES:]


def test_ciphertext_does_not_contain_the_plaintext() -> None:
    value = b"plain-canary-" * 8
    env = seal(KEY, NAME, VID, value)
    assert b"plain-canary" not in env.ciphertext + env.wrapped_key + env.nonce


def _flip(raw: bytes, bit: int) -> bytes:
    buf = bytearray(raw)
    buf[(bit // 8) % len(buf)] ^= 1 << (bit % 8)
    return bytes(buf)


@settings(max_examples=300)
@given(
    value=st.binary(min_size=8, max_size=256),
    part=st.sampled_from(["ciphertext", "tag", "nonce", "wrap_nonce", "wrapped_key", "wrap_tag"]),
    bit=st.integers(min_value=0, max_value=10_000),
)
def test_any_flipped_bit_fails_without_plaintext(value: bytes, part: str, bit: int) -> None:
    env = seal(KEY, NAME, VID, value)
    if part == "ciphertext":
        body, tag = env.ciphertext[:-16], env.ciphertext[-16:]
        tampered = dataclasses.replace(env, ciphertext=_flip(body, bit) + tag)
    elif part == "tag":
        tampered = dataclasses.replace(
            env, ciphertext=env.ciphertext[:-16] + _flip(env.ciphertext[-16:], bit)
        )
    elif part == "nonce":
        tampered = dataclasses.replace(env, nonce=_flip(env.nonce, bit))
    elif part == "wrap_nonce":
        w = env.wrapped_key
        tampered = dataclasses.replace(env, wrapped_key=_flip(w[:12], bit) + w[12:])
    elif part == "wrapped_key":
        w = env.wrapped_key
        tampered = dataclasses.replace(env, wrapped_key=w[:12] + _flip(w[12:44], bit) + w[44:])
    else:
        w = env.wrapped_key
        tampered = dataclasses.replace(env, wrapped_key=w[:44] + _flip(w[44:], bit))
    with pytest.raises(IntegrityError) as caught:
        open_envelope(RING, tampered, NAME, VID)
    assert value.hex() not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "version_id"),
    [("db/other", VID), (NAME, "ffffffffffffffffffffffffffffffff"), ("db/app2", VID)],
)
def test_blob_under_another_name_or_version_fails(name: str, version_id: str) -> None:
    env = seal(KEY, NAME, VID, b"value")
    with pytest.raises(IntegrityError, match="wrapped data key failed to verify"):
        open_envelope(RING, env, name, version_id)


def test_relabelled_key_id_fails() -> None:
    other = new_key("other")
    ring = Keyring(KEY, [other])
    env = seal(KEY, NAME, VID, b"value")
    with pytest.raises(IntegrityError):
        open_envelope(ring, dataclasses.replace(env, key_id=other.key_id), NAME, VID)


def test_wrong_key_is_an_unknown_key_id() -> None:
    env = seal(KEY, NAME, VID, b"value")
    with pytest.raises(UnknownKeyId, match=f"key id {KEY.key_id}"):
        open_envelope(Keyring(new_key()), env, NAME, VID)


@pytest.mark.parametrize(
    "broken",
    [
        {"wrapped_key": b""},
        {"wrapped_key": b"\0" * 59},
        {"nonce": b"\0" * 11},
        {"ciphertext": b""},
        {"ciphertext": b"\0" * 15},
    ],
)
def test_truncated_parts_fail_cleanly(broken: dict[str, bytes]) -> None:
    env = dataclasses.replace(seal(KEY, NAME, VID, b"value"), **broken)
    with pytest.raises(IntegrityError):
        open_envelope(RING, env, NAME, VID)


@settings(max_examples=50)
@given(value=values)
def test_rewrap_keeps_the_ciphertext_and_opens_under_the_new_key(value: bytes) -> None:
    new = new_key("new")
    env = seal(KEY, NAME, VID, value)
    moved = rewrap(RING, new, env, NAME, VID)
    assert (moved.nonce, moved.ciphertext) == (env.nonce, env.ciphertext)
    assert moved.key_id == new.key_id != env.key_id
    assert open_envelope(Keyring(new), moved, NAME, VID) == value
    with pytest.raises(UnknownKeyId):
        open_envelope(RING, moved, NAME, VID)


def test_envelope_repr_is_only_ciphertext() -> None:
    env = seal(KEY, NAME, VID, b"plain-canary")
    assert isinstance(env, Envelope)
    assert "plain-canary" not in repr(env)
