"""AES-256-GCM envelopes: one fresh data key per version, wrapped by the store key.

    seal:   data_key = 32 random bytes
            ciphertext  = AES-GCM(data_key, nonce,      value,    aad_data)
            wrapped_key = wrap_nonce || AES-GCM(KEK, wrap_nonce, data_key, aad_wrap)
    open:   unwrap the data key with the KEK named by key_id, decrypt, wipe.

Associated data (length-prefixed, so no two field lists encode alike):

    aad_wrap = "secretd" | "wrap" | format | key_id | secret name | version id
    aad_data = "secretd" | "data" | format | secret name | version id

The data key can only be unwrapped with the key id, name and version it was
sealed for, and the ciphertext only decrypts under that same name and version:
a blob copied to another name or version, or relabelled with another key id,
fails. Leaving the key id out of `aad_data` is what lets `rekey` re-wrap data
keys without ever decrypting values. Every failure is IntegrityError (or
UnknownKeyId) without plaintext; buffers holding data keys or plaintext are
zeroed after use, including after a failed `decrypt_into`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secretd.errors import IntegrityError
from secretd.store.keyfile import KEY_BYTES, Keyring, StoreKey, random_bytes, wipe

FORMAT_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
WRAPPED_KEY_BYTES = NONCE_BYTES + KEY_BYTES + TAG_BYTES


@dataclass(frozen=True, slots=True)
class Envelope:
    """One sealed value: which key wrapped its data key, and the sealed bytes."""

    key_id: str
    wrapped_key: bytes  # wrap nonce || wrapped data key || tag
    nonce: bytes
    ciphertext: bytes  # ciphertext || tag


def _aad(*fields: str | bytes) -> bytes:
    out = bytearray()
    for item in fields:
        raw = item.encode("utf-8") if isinstance(item, str) else item
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def wrap_aad(key_id: str, name: str, version_id: str) -> bytes:
    return _aad(b"secretd", b"wrap", str(FORMAT_VERSION), key_id, name, version_id)


def data_aad(name: str, version_id: str) -> bytes:
    return _aad(b"secretd", b"data", str(FORMAT_VERSION), name, version_id)


def _wrap(kek: StoreKey, data_key: bytearray, name: str, version_id: str) -> bytes:
    nonce = bytes(random_bytes(NONCE_BYTES))
    sealed = AESGCM(kek.material).encrypt(nonce, data_key, wrap_aad(kek.key_id, name, version_id))
    return nonce + sealed


def _unwrap_into(keyring: Keyring, env: Envelope, name: str, version_id: str) -> bytearray:
    """The data key in a fresh buffer the caller must wipe."""
    kek = keyring.get(env.key_id)
    if len(env.wrapped_key) != WRAPPED_KEY_BYTES:
        raise IntegrityError("wrapped data key has the wrong length")
    data_key = bytearray(KEY_BYTES)
    try:
        AESGCM(kek.material).decrypt_into(
            env.wrapped_key[:NONCE_BYTES],
            env.wrapped_key[NONCE_BYTES:],
            wrap_aad(env.key_id, name, version_id),
            data_key,
        )
    except InvalidTag:
        wipe(data_key)
        raise IntegrityError("wrapped data key failed to verify") from None
    return data_key


def seal(kek: StoreKey, name: str, version_id: str, plaintext: bytes) -> Envelope:
    """Encrypt `plaintext` for `name`/`version_id` under a fresh data key."""
    data_key = random_bytes(KEY_BYTES)
    try:
        nonce = bytes(random_bytes(NONCE_BYTES))
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, data_aad(name, version_id))
        wrapped = _wrap(kek, data_key, name, version_id)
    finally:
        wipe(data_key)
    return Envelope(kek.key_id, wrapped, nonce, ciphertext)


def open_envelope(keyring: Keyring, env: Envelope, name: str, version_id: str) -> bytes:
    """The plaintext, or IntegrityError/UnknownKeyId with no plaintext at all."""
    if len(env.nonce) != NONCE_BYTES or len(env.ciphertext) < TAG_BYTES:
        raise IntegrityError("nonce or ciphertext has the wrong length")
    data_key = _unwrap_into(keyring, env, name, version_id)
    out = bytearray(len(env.ciphertext) - TAG_BYTES)
    try:
        AESGCM(data_key).decrypt_into(env.nonce, env.ciphertext, data_aad(name, version_id), out)
        return bytes(out)
    except InvalidTag:
        raise IntegrityError("ciphertext failed to verify") from None
    finally:
        wipe(out)  # after a failed decrypt_into it may hold unauthenticated plaintext
        wipe(data_key)


def rewrap(
    keyring: Keyring, new_kek: StoreKey, env: Envelope, name: str, version_id: str
) -> Envelope:
    """The same sealed value with its data key wrapped by `new_kek` instead.

    Only the 32-byte data key is ever in the clear (in memory), never the value.
    """
    data_key = _unwrap_into(keyring, env, name, version_id)
    try:
        wrapped = _wrap(new_kek, data_key, name, version_id)
    finally:
        wipe(data_key)
    return Envelope(new_kek.key_id, wrapped, env.nonce, env.ciphertext)
