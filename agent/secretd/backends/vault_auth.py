"""Vault/OpenBao authentication: where a backend's token comes from.

Two sources of a token (`TokenSource`):

- `TokenFileSource`: a token file written by someone else (an operator, a
  provisioning tool). It is re-read when it changes (inode, mtime or size,
  checked at most once a second) and whenever the server rejects the token.
- `AppRoleSource`: role_id and secret_id files, exchanged for a token at
  ``auth/<mount>/login``.

`TokenKeeper` holds the current token for a backend: logs in lazily and once
for any number of concurrent callers; on a 403 tells a revoked token (log in
again) from a policy denial (do not); renews the token with
``auth/token/renew-self`` at two thirds of its TTL in `run()`, a task the
backend owns; logs in again when renewal fails or the token reached its max
TTL. A failed login backs off exponentially with jitter: callers meanwhile get
`BackendAuthError` at once, so a broken credential never makes us spin
against the server. No token ever reaches a log line or error message.

`TokenKeeper` lives in vault_token.py; this module holds the sources.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from secretd.backends.vault_http import Reply, VaultHttp
from secretd.errors import BackendAuthError, BackendUnavailable
from secretd.fileperm import read_private_file

MAX_CREDENTIAL_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Lease:
    """A token and what the server said about its lifetime."""

    token: str
    ttl: float  # seconds; 0 = does not expire (e.g. a root token)
    renewable: bool
    obtained_at: float  # clock.monotonic()


class TokenSource(Protocol):
    """Where a backend's token comes from."""

    method: str

    async def login(self, http: VaultHttp, now: float) -> Lease:
        """A fresh token. Raises BackendAuthError when the credentials are refused."""
        ...

    async def changed(self) -> bool:
        """Whether the credentials on disk changed since the last login."""
        ...


def read_credential(path: Path, what: str) -> str:
    """One line of credential from a private file (blocking: call in a thread)."""
    raw = read_private_file(
        path, what=what, secret=True, limit=MAX_CREDENTIAL_BYTES, error=BackendAuthError
    )
    if len(raw) > MAX_CREDENTIAL_BYTES:
        raise BackendAuthError(f"{what} {path}: larger than {MAX_CREDENTIAL_BYTES} bytes")
    text = raw.decode("ascii", errors="replace").strip()
    if not text:
        raise BackendAuthError(f"{what} {path}: empty")
    if not text.isprintable() or " " in text or "\ufffd" in text:
        raise BackendAuthError(f"{what} {path}: not a single printable ASCII token")
    return text


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class TokenFileSource:
    """A token read from a file, re-read when the file changes."""

    method = "token"

    def __init__(self, token_file: Path) -> None:
        self._path = token_file
        self._identity: tuple[int, int, int] | None = None

    async def login(self, http: VaultHttp, now: float) -> Lease:
        identity = await asyncio.to_thread(_file_identity, self._path)
        token = await asyncio.to_thread(read_credential, self._path, "vault token file")
        self._identity = identity
        reply = await http.send("GET", "auth/token/lookup-self", token=token)
        if reply.status in (401, 403):
            raise BackendAuthError(
                f"{http.where('auth/token/lookup-self')}: the token in {self._path} was refused"
            )
        data = _expect_ok(reply, http, "auth/token/lookup-self").get("data")
        if not isinstance(data, dict):
            return Lease(token, 0.0, False, now)
        ttl = data.get("ttl")
        renewable = data.get("renewable") is True
        return Lease(token, _seconds(ttl), renewable, now)

    async def changed(self) -> bool:
        return await asyncio.to_thread(_file_identity, self._path) != self._identity


class AppRoleSource:
    """role_id + secret_id files exchanged for a token at auth/<mount>/login."""

    method = "approle"

    def __init__(self, role_id_file: Path, secret_id_file: Path, mount: str) -> None:
        self._role_id_file = role_id_file
        self._secret_id_file = secret_id_file
        self._path = f"auth/{mount.strip('/')}/login"

    async def login(self, http: VaultHttp, now: float) -> Lease:
        role_id = await asyncio.to_thread(
            read_credential, self._role_id_file, "approle role_id_file"
        )
        secret_id = await asyncio.to_thread(
            read_credential, self._secret_id_file, "approle secret_id_file"
        )
        payload = {"role_id": role_id, "secret_id": secret_id}
        reply = await http.send("POST", self._path, token=None, payload=payload)
        if reply.status in (400, 401, 403):
            raise BackendAuthError(f"{http.where(self._path)}: AppRole login refused")
        return lease_from_auth(_expect_ok(reply, http, self._path), http, self._path, now)

    async def changed(self) -> bool:
        return False  # a new secret_id is picked up at the next login


def lease_from_auth(body: dict[str, object], http: VaultHttp, path: str, now: float) -> Lease:
    auth = body.get("auth")
    token = auth.get("client_token") if isinstance(auth, dict) else None
    if not isinstance(auth, dict) or not isinstance(token, str) or not token.isprintable():
        raise BackendAuthError(f"{http.where(path)}: answer carries no client_token")
    ttl = _seconds(auth.get("lease_duration"))
    return Lease(token, ttl, auth.get("renewable") is True, now)


def _seconds(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
        return 0.0
    return float(raw)


def _expect_ok(reply: Reply, http: VaultHttp, path: str) -> dict[str, object]:
    if reply.status != 200 or reply.body is None:
        raise BackendUnavailable(f"{http.where(path)}: answered {reply.status}")
    return dict(reply.body)
