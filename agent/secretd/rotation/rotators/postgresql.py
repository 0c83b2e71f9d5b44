"""`rotator = "postgresql"`: alternating users, so the credential being served
is never the one being changed (docs/rotation.md has the SQL to set it up).

The secret is a JSON object `{"username", "password", "host", "port",
"dbname"}` (other keys are kept). Two or more login roles (`roles`, default
`app_a`, `app_b`) are members of one NOLOGIN role that owns the privileges.

    create   the same JSON with `username` switched to the role that is neither
             current's nor previous's user (with two roles: the one not in
             current) and a new random `password`
    set      as the admin (the `admin_secret`, same JSON shape):
             ALTER ROLE "<role>" PASSWORD '<SCRAM-SHA-256 verifier>' - the
             verifier is computed here (scram.py), so the plaintext never
             reaches the server or its logs
    test     log in as the new user with the new password; when `member_of`
             is set, check the role is a member of it
    finish   (the engine) the new JSON becomes current: apps switch users on
             their next read; the old user keeps its password until a later
             rotation picks it again, at least `grace` later

Errors name the role and the server's error class (SQLSTATE), never a
password: driver messages are not passed on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from secretd.config.rotation import PostgresqlRotation
from secretd.model import SecretValue, Version
from secretd.rotation.errors import RotationError, RotationTestFailed
from secretd.rotation.model import Context
from secretd.rotation.rotators import scram
from secretd.rotation.rotators.values import random_text

AdminSecret = Callable[[], Awaitable[SecretValue]]
Connect = Callable[..., Awaitable[Any]]  # asyncpg.connect


@dataclass(frozen=True, slots=True)
class Credential:
    """One parsed credential document (the whole document kept in `doc`)."""

    doc: dict[str, Any]

    @property
    def username(self) -> str:
        return str(self.doc["username"])

    @property
    def password(self) -> str:
        return str(self.doc["password"])

    def where(self, fallback: Credential | None = None) -> dict[str, Any]:
        """host/port/database for the driver, filling gaps from `fallback`."""
        out: dict[str, Any] = {}
        for key, arg in (("host", "host"), ("port", "port"), ("dbname", "database")):
            value = self.doc.get(key)
            if value is None and fallback is not None:
                value = fallback.doc.get(key)
            if value is not None:
                out[arg] = int(value) if key == "port" else str(value)
        return out


def parse_credential(value: SecretValue, what: str) -> Credential:
    """A credential JSON object with string `username` and `password`."""
    text = value.text()
    try:
        doc = orjson.loads(text) if text is not None else None
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise RotationError(f"the {what} value is not a JSON object")
    for key in ("username", "password"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise RotationError(f"the {what} value has no {key!r} string")
    port = doc.get("port")
    if port is not None and not (
        isinstance(port, int) or (isinstance(port, str) and port.isdigit())
    ):
        raise RotationError(f"the {what} value's 'port' is not a number")
    return Credential(doc)


def choose_role(roles: Sequence[str], current: str, previous: str | None) -> str:
    """The role neither current nor previous uses, else the one current does not."""
    for role in roles:
        if role not in (current, previous):
            return role
    return next(role for role in roles if role != current)


def describe(exc: BaseException) -> str:
    """A driver failure without its message (which may quote input)."""
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return f"{type(exc).__name__} (SQLSTATE {sqlstate})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


def _default_connect() -> Connect:
    try:
        import asyncpg
    except ImportError:
        raise RotationError(
            "rotator 'postgresql' needs asyncpg: install the secretd[postgresql] extra"
        ) from None
    connect: Connect = asyncpg.connect
    return connect


class PostgresRotator:
    kind = "postgresql"

    def __init__(
        self, options: PostgresqlRotation, admin: AdminSecret, connect: Connect | None = None
    ) -> None:
        self._options = options
        self._admin = admin
        self._connect = connect or _default_connect()
        self.grace = options.grace

    async def create(self, context: Context) -> SecretValue:
        current = parse_credential(context.current.value, "current")
        role = choose_role(self._options.roles, current.username, _user_of(context.previous))
        doc = {**current.doc, "username": role}
        doc["password"] = random_text(self._options.length, "alnum")
        return SecretValue(orjson.dumps(doc))

    async def set(self, context: Context, value: SecretValue) -> None:
        pending = parse_credential(value, "pending")
        role = self._known_role(pending.username)
        statement = f"ALTER ROLE \"{role}\" PASSWORD '{scram.verifier(pending.password)}'"
        async with self._session(pending) as conn:
            try:
                await conn.execute(statement)
            except Exception as exc:
                raise RotationError(
                    f"setting the password of role {role}: {describe(exc)}"
                ) from None

    async def test(self, context: Context, value: SecretValue) -> None:
        pending = parse_credential(value, "pending")
        role = self._known_role(pending.username)
        try:
            conn = await self._open(pending, pending.where())
        except Exception as exc:
            raise RotationTestFailed(f"logging in as {role}: {describe(exc)}") from None
        try:
            member_of = self._options.member_of
            if member_of is not None:
                # session_user: the login role, even when it SETs role to the group
                query = "SELECT pg_has_role(session_user, $1, 'MEMBER')"
                if not await conn.fetchval(query, member_of, timeout=self._options.connect_timeout):
                    raise RotationTestFailed(f"role {role} is not a member of {member_of}")
            else:
                await conn.fetchval("SELECT 1", timeout=self._options.connect_timeout)
        except RotationTestFailed:
            raise
        except Exception as exc:
            raise RotationTestFailed(f"querying as {role}: {describe(exc)}") from None
        finally:
            await conn.close(timeout=self._options.connect_timeout)

    @asynccontextmanager
    async def _session(self, target: Credential) -> AsyncIterator[Any]:
        """A connection as the admin (its own host/port/dbname, else the target's)."""
        admin = parse_credential(await self._admin(), "admin secret's")
        try:
            conn = await self._open(admin, admin.where(fallback=target))
        except Exception as exc:
            raise RotationError(f"connecting as the admin: {describe(exc)}") from None
        try:
            yield conn
        finally:
            await conn.close(timeout=self._options.connect_timeout)

    async def _open(self, who: Credential, where: dict[str, Any]) -> Any:
        return await self._connect(
            user=who.username,
            password=who.password,
            ssl=self._options.sslmode,
            timeout=self._options.connect_timeout,
            **where,
        )

    def _known_role(self, role: str) -> str:
        """Only configured role names are ever put into SQL (they are plain identifiers)."""
        if role not in self._options.roles:
            raise RotationError("the pending value names a role that is not in `roles`")
        return role


def _user_of(version: Version | None) -> str | None:
    if version is None:
        return None
    try:
        return parse_credential(version.value, "previous").username
    except RotationError:
        return None
