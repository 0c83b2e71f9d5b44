"""SCRAM-SHA-256 password verifiers (RFC 5802, RFC 7677), as PostgreSQL stores them.

    SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>

    SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations)
    StoredKey      = SHA-256(HMAC(SaltedPassword, "Client Key"))
    ServerKey      = HMAC(SaltedPassword, "Server Key")

`ALTER ROLE ... PASSWORD '<verifier>'` stores such a string as it is, so the
plaintext never travels to the server nor reaches its logs (even with
`log_statement = 'all'`). PostgreSQL runs the password through SASLprep
first; for printable ASCII that changes nothing, and secretd only computes
verifiers for the printable ASCII passwords it generates.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

DEFAULT_ITERATIONS = 4096  # PostgreSQL's scram_iterations default
SALT_BYTES = 16


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    if not (password.isascii() and password.isprintable()):
        raise ValueError("only printable ASCII passwords are hashed here (SASLprep is identity)")
    return hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt, iterations)


def keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) of `password`."""
    salted = salted_password(password, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return hashlib.sha256(client_key).digest(), server_key


def verifier(
    password: str, *, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> str:
    """The verifier string PostgreSQL stores for `password` (a random salt by default)."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    stored_key, server_key = keys(password, salt, iterations)

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
