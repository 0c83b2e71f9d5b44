"""The real API app with `[vault_api]` on, over a real Unix socket and the guarded
loopback TCP socket, reading through the in-memory cache fake (tests/fakes/api_deps).

    async with serve_vault_api() as served:
        served.add("app/db", [("v1", b"one", {"previous"}, T1), ("v2", b"two", {"current"}, T2)])
        status, head, body = await served.get("/v1/secret/data/app/db")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from secretd.api.vault_compat import VaultSettings
from secretd.model import SecretName, SecretValue, Version
from tests.fakes.api_deps import ListAudit, UidPolicy
from tests.integration.api_harness import FakeServed, serve_fakes

TOKEN = b"vault-compat-token-0123456789"

VersionSpec = tuple[str, bytes, set[str], datetime]


@dataclass
class Served(FakeServed):
    numbered: set[str] = field(default_factory=set)  # backends numbering versions as KV v2 does

    def add(self, name: str, versions: Iterable[VersionSpec], *, cached: bool = True) -> None:
        """Put versions (id, value, stages, created) for `name` straight into the cache."""
        key = SecretName(name)
        self.cache.versions[key] = [
            Version(vid, frozenset(stages), created, SecretValue(value))
            for vid, value, stages, created in versions
        ]
        if cached:
            self.cache.cached.add(key)

    async def call(
        self,
        method: str,
        target: str,
        *,
        tcp: bool = False,
        token: bytes | None = None,
        headers: bytes = b"",
        body: bytes = b"",
    ) -> tuple[int, bytes, bytes]:
        """One request, with `token` as its X-Vault-Token."""
        if token is not None:
            headers = b"X-Vault-Token: " + token + b"\r\n" + headers
        return await super().call(method, target, tcp=tcp, headers=headers, body=body)

    async def get(
        self, target: str, *, tcp: bool = False, token: bytes | None = None, headers: bytes = b""
    ) -> tuple[int, bytes, bytes]:
        return await self.call("GET", target, tcp=tcp, token=token, headers=headers)


@asynccontextmanager
async def serve_vault_api(
    *, mount: str = "secret", refresh_interval: float = 300.0
) -> AsyncIterator[Served]:
    numbered: set[str] = set()
    settings = VaultSettings(
        mount=mount,
        refresh_interval=lambda: refresh_interval,
        kv_numbered=lambda backend: backend in numbered,
    )
    policy = UidPolicy({0}, ("app/",), tcp=("tcp/",))  # uid 0: app/; TCP callers: tcp/
    audit = ListAudit(extras=True)
    async with serve_fakes(policy, Served, audit=audit, vault=settings, tcp_token=TOKEN) as served:
        served.numbered = numbered
        yield served
