"""SCRAM-SHA-256 verifiers (secretd.rotation.rotators.scram) against the
RFC 7677 test vector: the keys derived from the verifier must check the RFC's
client proof and produce its server signature, exactly as a server does."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from secretd.rotation.rotators import scram

# RFC 7677 section 3: user "user", password "pencil".
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_FIRST_BARE = "n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL_NO_PROOF = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
PROOF = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
SERVER_SIGNATURE = base64.b64decode("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
AUTH_MESSAGE = f"{CLIENT_FIRST_BARE},{SERVER_FIRST},{CLIENT_FINAL_NO_PROOF}".encode()


def _parse(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    scheme, rest = verifier.split("$", 1)
    assert scheme == "SCRAM-SHA-256"
    params, key_part = rest.split("$")
    iterations, salt = params.split(":")
    stored, server = key_part.split(":")
    return int(iterations), *(base64.b64decode(x) for x in (salt, stored, server))  # type: ignore[return-value]


def test_the_verifier_checks_the_rfc_7677_exchange_as_a_server_would() -> None:
    iterations, salt, stored_key, server_key = _parse(scram.verifier("pencil", salt=SALT))
    assert (iterations, salt) == (4096, SALT)
    client_signature = hmac.new(stored_key, AUTH_MESSAGE, "sha256").digest()
    client_key = bytes(a ^ b for a, b in zip(PROOF, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    assert hmac.new(server_key, AUTH_MESSAGE, "sha256").digest() == SERVER_SIGNATURE


def test_a_wrong_password_does_not_check() -> None:
    _, _, stored_key, server_key = _parse(scram.verifier("pencil!", salt=SALT))
    client_signature = hmac.new(stored_key, AUTH_MESSAGE, "sha256").digest()
    client_key = bytes(a ^ b for a, b in zip(PROOF, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() != stored_key
    assert hmac.new(server_key, AUTH_MESSAGE, "sha256").digest() != SERVER_SIGNATURE


def test_each_verifier_gets_its_own_salt_and_never_contains_the_password() -> None:
    first, second = scram.verifier("s3cret-pw"), scram.verifier("s3cret-pw")
    assert first != second
    assert "s3cret-pw" not in first
    assert len(_parse(first)[1]) == scram.SALT_BYTES


def test_only_printable_ascii_is_hashed_here() -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        scram.verifier("pässword")
    with pytest.raises(ValueError, match="printable ASCII"):
        scram.verifier("tab\there")
