"""The real `secretd` executable as the e2e tests drive it: a store made with the
`secretd store` CLI, a config file, the agent process, and raw/HTTP clients on
its Unix socket. Readiness is `READY=1` on a NOTIFY_SOCKET the test binds (or,
for a process started elsewhere, /v1/health polled until 200): never a bare sleep."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

BIN = Path(sys.executable).parent / "secretd"
READY_WITHIN = 20.0
STOP_WITHIN = 5.0


def secretd(*args: str, stdin: bytes | None = None, check: bool = True) -> str:
    """Run the secretd CLI to completion; its stdout."""
    done = subprocess.run(
        [str(BIN), *args], input=stdin, capture_output=True, timeout=30, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"secretd {args[0]} failed: {done.stderr.decode()}")
    return done.stdout.decode()


def check_config(
    config: Path, *, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`secretd check -c CONFIG` run to its end, whatever its exit status (text output)."""
    return subprocess.run(
        [str(BIN), "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@contextmanager
def short_tmp(prefix: str) -> Iterator[Path]:
    """A new directory under /tmp, removed after: short, since Unix socket paths
    are capped at 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_config(path: Path, text: str) -> Path:
    """`text` as a config file at `path`, mode 0600 (the agent refuses one others can read)."""
    path.write_text(text)
    path.chmod(0o600)
    return path


@dataclass
class Store:
    """A file store created with `secretd store init`."""

    root: Path
    key: Path

    @classmethod
    def create(cls, directory: Path) -> Store:
        store = cls(directory / "store", directory / "store.key")
        secretd("store", "init", str(store.root), "--key", str(store.key))
        return store

    def put(self, name: str, value: bytes, *extra: str) -> str:
        """Add a version; returns its version id (the last line `put` prints)."""
        out = secretd("store", "put", str(self.root), name, *extra, stdin=value)
        return out.strip().splitlines()[-1].split()[-1]

    def record_path(self, name: str) -> Path:
        from secretd.store.layout import StoreLayout

        return StoreLayout(self.root).record_path(name)


def config_text(
    directory: Path,
    store: Store,
    *,
    allow: str = "",
    limits: str = "",
    cache: str = "",
    declared: tuple[str, ...] = (),
    audit: bool = True,
    agent_extra: str = "",
) -> str:
    audit_line = f'audit_log = "{directory}/audit.jsonl"\n' if audit else ""
    decls = "".join(f'[[secret]]\nname = "{name}"\n\n' for name in declared)
    return (
        f'[agent]\nsocket = "{directory}/s.sock"\nstate_dir = "{directory}/state"\n'
        f'socket_mode = "0666"\n'
        f'{audit_line}log_format = "json"\n{agent_extra}\n'
        f'[limits]\nidle_timeout = "2s"\n{limits}\n'
        f"[cache]\n{cache}\n"
        f'[backends.local]\ntype = "file"\npath = "{store.root}"\nkey_file = "{store.key}"\n\n'
        f"{decls}{allow}"
    )


@dataclass
class AgentProcess:
    """One `secretd agent -c FILE` child process."""

    directory: Path
    config: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    socket_name: str = "s.sock"
    # Bound by start() unless the test passes its own NOTIFY_SOCKET: READY=1 arrives here.
    notify: socket.socket | None = None

    @property
    def socket(self) -> Path:
        return self.directory / self.socket_name

    @property
    def log_path(self) -> Path:
        return self.directory / "agent.log"

    @property
    def audit_path(self) -> Path:
        return self.directory / "audit.jsonl"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
        env.update(self.env)
        if "NOTIFY_SOCKET" not in env:
            path = self.directory / f"notify-{secrets.token_hex(4)}.sock"
            self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self.notify.bind(str(path))
            self.notify.setblocking(False)
            env["NOTIFY_SOCKET"] = str(path)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN), "agent", "-c", str(self.config)],
                stdout=log,
                stderr=log,
                env=env,
            )

    async def wait_ready(self) -> None:
        """Wait for READY=1 on our NOTIFY_SOCKET (else poll /v1/health until 200);
        fail if the process dies first or READY_WITHIN passes."""
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}: {self.log()}")
            if self.notify is not None:
                if await self._ready_message():
                    return
            elif await self._health_status() == 200:
                return
            else:
                await asyncio.sleep(0.05)
        raise AssertionError(f"agent not ready within {READY_WITHIN}s: {self.log()}")

    async def _ready_message(self) -> bool:
        """Every notify datagram queued now (else a 50 ms pause); True on READY=1.

        Reads without cancelling a pending receive: a cancelled sock_recv can
        swallow the very datagram that was arriving."""
        assert self.notify is not None
        self.notify.setblocking(False)
        ready = False
        while True:
            try:
                data = self.notify.recv(4096)
            except BlockingIOError:
                break
            ready = ready or b"READY=1" in data.split(b"\n")
        if not ready:
            await asyncio.sleep(0.05)
        return ready

    async def _health_status(self) -> int | None:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(2):
                reader, writer = await asyncio.open_unix_connection(str(self.socket))
                writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                line = await reader.readline()
            return int(line.split()[1]) if line else None
        except (OSError, TimeoutError, IndexError, ValueError):
            return None
        finally:
            # Also after a timeout: an activated socket accepts into its backlog long
            # before a slow-starting agent answers, and an unclosed writer warns.
            if writer is not None:
                writer.close()

    def stop(self) -> float:
        """SIGTERM; the seconds it took to exit (killed and failed beyond STOP_WITHIN)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_WITHIN)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent ignored SIGTERM for {STOP_WITHIN}s") from None
        finally:
            if self.notify is not None:
                self.notify.close()
                self.notify = None
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.notify is not None:
            self.notify.close()
            self.notify = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self.socket), limit=0),
            base_url="http://localhost",
        )

    async def raw(self, data: bytes, *, timeout: float = 5.0) -> bytes:
        """Send raw bytes; everything read until the agent closes (or `timeout`)."""
        reader, writer = await asyncio.open_unix_connection(str(self.socket))
        chunks: list[bytes] = []
        try:
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(timeout):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass
        finally:
            writer.close()
        return b"".join(chunks)


@asynccontextmanager
async def running_agent(
    directory: Path, config: str, *, env: Mapping[str, str] | None = None
) -> AsyncIterator[AgentProcess]:
    """A ready `secretd agent` with `config` written to directory/secretd.toml; killed after."""
    agent = AgentProcess(directory, write_config(directory / "secretd.toml", config))
    agent.env.update(env or {})
    agent.start()
    try:
        await agent.wait_ready()
        yield agent
    finally:
        agent.kill()
