"""The HashiCorp Vault / OpenBao KV version 2 backend.

A secret name (mount prefix already stripped) is a KV path below `kv_mount`;
its value is the KV map of one version, serialised as a JSON object so that
`field=` works. `version_id` is the KV version number as a string.

    fetch            GET {kv}/metadata/{path}   stages, liveness, created_time
                     GET {kv}/data/{path}?version=N   the value, checked against the metadata
    current_versions GET {kv}/metadata/{path}   per name, at most max_concurrency at once

Module map: vault_wire (capped bodies, strict JSON), vault_http (one exchange,
retries, Retry-After, error mapping, replicas), vault_kv (KV answers, stages),
vault_auth (token file / AppRole sources), vault_token (login, renewal,
recovery after 403). This module wires them and owns the aiohttp session and
the background work (`run()`, supervised by the agent): token renewal and,
with several addresses, taking the first one back once it is healthy again
(backends/replicas.py).
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from secretd.backends.replicas import Replicas
from secretd.backends.vault_auth import AppRoleSource, TokenFileSource, TokenSource
from secretd.backends.vault_http import HttpSettings, Reply, VaultHttp
from secretd.backends.vault_kv import KvMetadata, parse_data, parse_metadata, parse_version_id
from secretd.backends.vault_token import MIN_TOKEN_TTL, TokenKeeper
from secretd.backends.vault_wire import body_cap
from secretd.clock import Clock, SystemClock
from secretd.config.schema import AppRoleAuth, VaultBackendConfig
from secretd.errors import (
    BackendAuthError,
    BackendError,
    BackendUnavailable,
    BadBackendAnswer,
    ConfigError,
    NotFound,
)
from secretd.fileperm import check_private_file, read_private_file
from secretd.model import CURRENT, Fetched, SecretName, SecretValue, Version
from secretd.state import StateDir

__all__ = ["VaultBackend", "check_vault_config", "open_backend"]

MAX_CA_BYTES = 1024 * 1024


class VaultBackend:
    """KV v2 reads through one `VaultHttp`, authenticated by one `TokenKeeper`."""

    def __init__(
        self,
        name: str,
        *,
        kv_mount: str,
        http: VaultHttp,
        keeper: TokenKeeper,
        session: aiohttp.ClientSession,
        max_concurrency: int,
        max_secret_bytes: int,
        clock: Clock,
    ) -> None:
        self.name = name
        self._kv = quote(kv_mount.strip("/"), safe="/")
        self._http = http
        self._keeper = keeper
        self._session = session
        self._max_concurrency = max_concurrency
        self._max_secret_bytes = max_secret_bytes
        self._clock = clock

    @property
    def replicas(self) -> Replicas:
        """The addresses, and the one serving now (health, status, metrics)."""
        return self._http.replicas

    async def run(self) -> None:
        """Background work, run by the agent's supervisor from open to close: log
        in ahead of the first read and keep the token renewed; with several
        addresses, take the first back once it is healthy again. Without it, the
        token is still got on first use (and after a 403), just not renewed."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._keeper.run())
            group.create_task(self._http.replicas.run(self._http.probe))

    async def fetch(
        self,
        name: SecretName,
        *,
        version_id: str | None = None,
        stage: str | None = None,
    ) -> Fetched:
        name = SecretName(name)
        latest: dict[str, Any] | None = None
        if version_id is None and stage in (None, CURRENT):
            meta, latest = await self._metadata_and_latest(name)
        else:
            meta = await self._metadata(name)
        now = self._clock.now()
        version = self._choose(meta, name, version_id, stage)
        listed = meta.versions.get(version)
        if listed is None or not listed.live(now):
            raise NotFound(f"{self._where(name)}: version {version} is deleted or destroyed")
        if latest is None or _answer_version(latest) != version:
            latest = await self._data(name, version)  # asked exactly; a write raced the pair
        raw = parse_data(latest, requested=version, listed=listed, now=now, where=self._where(name))
        if len(raw) > self._max_secret_bytes:
            raise BadBackendAnswer(
                f"{self._where(name)}: value is larger than limits.max_secret_bytes"
            )
        stages = meta.stages_of(version, now)
        found = Version(str(version), stages, listed.created_at, SecretValue(raw))
        return Fetched(name=name, version=found)

    async def _metadata_and_latest(
        self, name: SecretName
    ) -> tuple[KvMetadata, dict[str, Any] | None]:
        """The metadata and the latest data, asked in parallel (one round trip, not two).

        The data answer is used only if it is the version the metadata calls
        current; otherwise (a write in between, an error) `fetch` asks again for
        that exact version, which also surfaces any error properly.
        """
        meta, reply = await asyncio.gather(
            self._metadata(name), self._get(self._path("data", name)), return_exceptions=True
        )
        if isinstance(meta, BaseException):
            raise meta
        if isinstance(reply, BaseException) or reply.status != 200:
            return meta, None
        return meta, reply.body

    async def _data(self, name: SecretName, version: int) -> dict[str, Any]:
        path = self._path("data", name)
        reply = await self._get(path, params={"version": str(version)})
        if reply.status == 404:
            raise NotFound(f"{self._where(name)}: version {version} not found")
        return self._ok(reply, path)

    async def current_versions(self, names: Sequence[SecretName]) -> Mapping[SecretName, str]:
        """Metadata reads only, `max_concurrency` at a time. A name whose
        current version is deleted is absent; the first other failure stops
        the batch and is raised as itself (never wrapped in an ExceptionGroup)."""
        pending = list(dict.fromkeys(names))
        found: dict[SecretName, str] = {}
        failures: list[BackendError] = []

        async def worker() -> None:
            while pending and not failures:
                name = pending.pop()
                try:
                    meta = await self._metadata(name)
                except NotFound:
                    continue
                except BackendError as exc:
                    failures.append(exc)
                    return
                current = meta.live_current(self._clock.now())
                if current is not None:
                    found[name] = str(current)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self._max_concurrency, len(pending))):
                group.create_task(worker())
        if failures:
            raise failures[0]
        return found

    async def aclose(self) -> None:
        await self._session.close()

    def _choose(
        self, meta: KvMetadata, name: SecretName, version_id: str | None, stage: str | None
    ) -> int:
        now = self._clock.now()
        if version_id is not None:
            version = parse_version_id(version_id)
            if version is None:
                raise NotFound(f"{self._where(name)}: no version {version_id[:40]!r}")
            return version
        chosen = meta.resolve_stage(stage or CURRENT, now)
        if chosen is None:
            raise NotFound(f"{self._where(name)}: no version has stage {stage or CURRENT}")
        return chosen

    async def _metadata(self, name: SecretName) -> KvMetadata:
        path = self._path("metadata", name)
        reply = await self._get(path)
        if reply.status == 404:
            if reply.body is not None and reply.body.get("errors"):
                # KV answers a missing secret with an empty error list; a message means
                # the path is not routed at all: a wrong kv_mount, not a missing secret.
                raise BackendUnavailable(
                    f"{self._http.where(path)}: no KV v2 engine answers here; check kv_mount"
                )
            raise NotFound(f"{self._where(name)}: no such secret")
        return parse_metadata(self._ok(reply, path), where=self._where(name))

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> Reply:
        """GET with a token; one recovery (new token) after a 403."""
        token = await self._keeper.token()
        reply = await self._http.send("GET", path, token=token, params=params)
        if reply.status not in (401, 403):
            return reply
        retry_with = await self._keeper.recover(token)
        if retry_with is not None:
            reply = await self._http.send("GET", path, token=retry_with, params=params)
            if reply.status not in (401, 403):
                return reply
        raise BackendAuthError(f"{self._http.where(path)}: permission denied")

    def _ok(self, reply: Reply, path: str) -> dict[str, Any]:
        where = self._http.where(path)
        if reply.status == 200 and reply.body is not None:
            return reply.body
        if reply.status == 429 or reply.status >= 500:
            raise BackendUnavailable(f"{where}: answered {reply.status} (after retries)")
        raise BadBackendAnswer(f"{where}: unexpected answer {reply.status}")

    def _path(self, kind: str, name: SecretName) -> str:
        return f"{self._kv}/{kind}/{quote(name, safe='/')}"

    def _where(self, name: SecretName) -> str:
        return f"vault backend {self.name!r} secret {name!r}"


def _answer_version(body: Mapping[str, Any]) -> int | None:
    """The version a data answer says it holds, if it says so plainly."""
    data = body.get("data")
    meta = data.get("metadata") if isinstance(data, dict) else None
    version = meta.get("version") if isinstance(meta, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def check_vault_config(name: str, config: VaultBackendConfig) -> ssl.SSLContext | None:
    """Static checks for `secretd check` and start-up: the CA file loads, the
    credential files exist and are private. Returns the TLS context to use."""
    where = f"backends.{name}"
    auth = config.auth
    files = (
        [("auth.role_id_file", auth.role_id_file), ("auth.secret_id_file", auth.secret_id_file)]
        if isinstance(auth, AppRoleAuth)
        else [("auth.token_file", auth.token_file)]
    )
    for key, path in files:
        check_private_file(path, what=f"{where}.{key}", secret=True)
    namespace = config.namespace
    if namespace is not None and not (namespace.isascii() and namespace.isprintable()):
        raise ConfigError(f"{where}.namespace: expected printable ASCII (it is an HTTP header)")
    if not config.addresses[0].startswith("https://"):
        if config.ca_file is not None:
            raise ConfigError(f"{where}.ca_file: set, but address is not https://")
        return None
    return _tls_context(where, config.ca_file)


def _tls_context(where: str, ca_file: Path | None) -> ssl.SSLContext:
    if ca_file is None:
        return ssl.create_default_context()
    # Whoever may rewrite the CA file may impersonate Vault: same rules as the token.
    pem = read_private_file(ca_file, what=f"{where}.ca_file", secret=False, limit=MAX_CA_BYTES)
    if len(pem) > MAX_CA_BYTES:
        raise ConfigError(f"{where}.ca_file {ca_file}: larger than {MAX_CA_BYTES} bytes")
    try:
        return ssl.create_default_context(cadata=pem.decode("ascii"))
    except (UnicodeDecodeError, ValueError, ssl.SSLError) as exc:
        reason = "not PEM text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise ConfigError(f"{where}.ca_file {ca_file}: cannot load ({reason})") from None


async def open_backend(
    name: str,
    config: VaultBackendConfig,
    *,
    max_secret_bytes: int,
    state: StateDir | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    min_token_ttl: float = MIN_TOKEN_TTL,
) -> VaultBackend:
    """Build the backend inside the running loop (its token keeper runs in `run()`).

    `min_token_ttl` is the token keeper's floor (tests of renewal lower it to
    use tokens of a few seconds).

    Raises ConfigError when the config's files are unusable; the server is not
    contacted here (an outage at start-up shows in health, not as a crash).
    """
    del state  # nothing of Vault's is kept across restarts
    tls = await asyncio.to_thread(check_vault_config, name, config)
    clock = clock or SystemClock()
    rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    connector = aiohttp.TCPConnector(
        limit=config.max_concurrency,
        limit_per_host=config.max_concurrency,
        ssl=tls if tls is not None else False,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.timeout),
        auto_decompress=False,
        trust_env=False,
    )
    settings = HttpSettings(
        backend=name,
        address=config.addresses[0],
        namespace=config.namespace,
        timeout=config.timeout,
        max_body=body_cap(max_secret_bytes),
    )
    replicas = Replicas(
        config.addresses, backend=name, failback_after=config.failback_after, clock=clock
    )
    http = VaultHttp(
        settings,
        session=session,
        max_concurrency=config.max_concurrency,
        clock=clock,
        rng=rng,
        replicas=replicas,
    )
    keeper = TokenKeeper(
        _source(config), http, backend=name, clock=clock, rng=rng, min_ttl=min_token_ttl
    )
    backend = VaultBackend(
        name,
        kv_mount=config.kv_mount,
        http=http,
        keeper=keeper,
        session=session,
        max_concurrency=config.max_concurrency,
        max_secret_bytes=max_secret_bytes,
        clock=clock,
    )
    return backend


def _source(config: VaultBackendConfig) -> TokenSource:
    auth = config.auth
    if isinstance(auth, AppRoleAuth):
        return AppRoleSource(auth.role_id_file, auth.secret_id_file, auth.mount)
    return TokenFileSource(auth.token_file)
