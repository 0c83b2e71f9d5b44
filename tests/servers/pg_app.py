"""An application's database set-up for the rotation tests, made the way
docs/rotation.md tells an operator to: one NOLOGIN role owning the privileges,
two login roles in it, a table only that role may use, and the two secrets
secretd needs (the app's credential and the admin's) in a file store.

    app = await AppDatabase.create(postgres_server)      # unique role names
    app.credential(password)                             # the secret's JSON
    await app.query_as(credential)                       # connect, use the table, close
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from secretd.model import SecretName
from secretd.rotation.rotators import scram
from secretd.store.store import FileStore
from tests.servers.postgres_server import PostgresServer

AUTH_SQLSTATES = frozenset({"28P01", "28000"})  # invalid_password, invalid_authorization


@dataclass
class AppDatabase:
    server: PostgresServer
    group: str
    role_a: str
    role_b: str
    table: str
    first_password: str = ""
    admin_password: str = ""

    @classmethod
    async def create(cls, server: PostgresServer) -> AppDatabase:
        tag = secrets.token_hex(4)
        app = cls(server, f"app_{tag}", f"app_{tag}_a", f"app_{tag}_b", f"t_{tag}")
        first = secrets.token_urlsafe(24)
        app.admin_password = secrets.token_urlsafe(24)
        # As docs/rotation.md sets it up: the admin is no superuser, only
        # CREATEROLE with ADMIN OPTION on the two login roles.
        await server.execute(
            f"CREATE ROLE {app.group} NOLOGIN",
            f"CREATE ROLE {app.role_a} LOGIN INHERIT IN ROLE {app.group} "
            f"PASSWORD '{scram.verifier(first)}'",
            f"CREATE ROLE {app.role_b} LOGIN INHERIT IN ROLE {app.group}",
            f"ALTER ROLE {app.role_a} SET role = '{app.group}'",
            f"ALTER ROLE {app.role_b} SET role = '{app.group}'",
            f"CREATE ROLE {app.admin} LOGIN CREATEROLE "
            f"PASSWORD '{scram.verifier(app.admin_password)}'",
            f"GRANT {app.role_a}, {app.role_b} TO {app.admin} WITH ADMIN OPTION",
            f"CREATE TABLE {app.table} (n integer)",
            f"ALTER TABLE {app.table} OWNER TO {app.group}",
        )
        app.first_password = first
        return app

    @property
    def admin(self) -> str:
        return f"{self.group}_admin"

    def admin_secret(self) -> dict[str, Any]:
        """The admin credential secretd's rotator uses (db/admin)."""
        return {**self.credential(), "username": self.admin, "password": self.admin_password}

    @property
    def roles(self) -> tuple[str, str]:
        return (self.role_a, self.role_b)

    def credential(self, password: str | None = None, role: str | None = None) -> dict[str, Any]:
        return {
            "username": role or self.role_a,
            "password": password or self.first_password,
            "host": self.server.host,
            "port": self.server.port,
            "dbname": "postgres",
        }

    async def connect(self, credential: dict[str, Any]) -> Any:
        return await asyncpg.connect(
            host=credential["host"],
            port=int(credential["port"]),
            user=credential["username"],
            password=credential["password"],
            database=credential["dbname"],
            ssl=False,
            timeout=10,
        )

    async def query_as(self, credential: dict[str, Any]) -> None:
        """One unit of application work on a new connection."""
        conn = await self.connect(credential)
        try:
            await conn.execute(f"INSERT INTO {self.table} VALUES (1)")  # noqa: S608
        finally:
            await conn.close()

    async def logs_in(self, credential: dict[str, Any]) -> bool:
        try:
            await self.query_as(credential)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate in AUTH_SQLSTATES:
                return False
            raise
        return True


def seed_store(store_root: Path, app: AppDatabase) -> None:
    """db/app = the first credential, db/admin = the superuser's."""
    store = FileStore(store_root)
    keyring = store.keyring(None)
    try:
        store.put(SecretName("db/app"), orjson.dumps(app.credential()), keyring)
        store.put(SecretName("db/admin"), orjson.dumps(app.admin_secret()), keyring)
    finally:
        keyring.close()


def store_values(store_root: Path, name: str) -> list[dict[str, Any]]:
    """Every version of `name` the store still holds, decrypted, oldest first."""
    store = FileStore(store_root)
    keyring = store.keyring(None)
    try:
        out = []
        for info in store.history(SecretName(name), keyring):
            version, _ = store.open_version(SecretName(name), keyring, version_id=info.version_id)
            out.append({**orjson.loads(version.value.reveal()), "_stages": sorted(info.stages)})
        return out
    finally:
        keyring.close()


def rotation_toml(
    app: AppDatabase, *, every: str = "30d", grace: str = "0s", extra: str = ""
) -> str:
    return (
        f'[[rotation]]\nsecret = "db/app"\nrotator = "postgresql"\nevery = "{every}"\n'
        f'jitter = "0s"\nadmin_secret = "db/admin"\n'
        f'roles = ["{app.role_a}", "{app.role_b}"]\nmember_of = "{app.group}"\n'
        f'sslmode = "disable"\ngrace = "{grace}"\n{extra}\n'
    )
