"""The configuration model (SPEC §3). Frozen; unknown keys are errors.

Each collaborator receives only its own section (or plain values), never the
whole `Config`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from secretd.config.rotation import RotationConfig
from secretd.config.types import ConfigPath, Duration, LoopbackAddress, Mode, Name
from secretd.state import default_state_dir


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


def default_socket() -> Path:
    """/run/secretd/secretd.sock for root; $XDG_RUNTIME_DIR/secretd.sock otherwise."""
    if os.geteuid() == 0 or not os.environ.get("XDG_RUNTIME_DIR"):
        return Path("/run/secretd/secretd.sock")
    return Path(os.environ["XDG_RUNTIME_DIR"]) / "secretd.sock"


class AgentSection(Section):
    socket: ConfigPath = Field(default_factory=default_socket)
    socket_mode: Mode = 0o660
    socket_group: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    audit_log: str | None = None  # "-" = stderr
    credentials_socket: ConfigPath | None = None  # optional dedicated 0600 socket (§8)
    mlock: bool = False  # try mlockall(); reported in health
    # The agent's own persistent state (rollback marks, rotation progress): never values.
    state_dir: ConfigPath = Field(default_factory=default_state_dir)


class TcpSection(Section):
    listen: LoopbackAddress = "127.0.0.1:2773"
    token_file: ConfigPath


# First path segments of secretd's own routes (/v1/secrets, /v1/health) and of the
# Vault routes the compatible API answers itself (/v1/sys, /v1/auth).
RESERVED_VAULT_MOUNTS = frozenset({"secrets", "sys", "auth", "health"})
_VAULT_MOUNT = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")


class VaultApiSection(Section):
    """`[vault_api]`: Vault/OpenBao-compatible KV v2 reads (docs/vault-api.md)."""

    mount: str = "secret"  # the KV v2 mount name clients use: /v1/<mount>/data/<name>

    @field_validator("mount")
    @classmethod
    def _mount_name(cls, value: str) -> str:
        value = value.removesuffix("/")  # Vault spells mounts both ways ("secret/")
        if _VAULT_MOUNT.fullmatch(value) is None:
            raise ValueError(
                "expected a mount name such as 'secret' or 'kv/app' "
                "(A-Z a-z 0-9 _ - segments separated by '/')"
            )
        if value.split("/", 1)[0] in RESERVED_VAULT_MOUNTS:
            reserved = ", ".join(sorted(RESERVED_VAULT_MOUNTS))
            raise ValueError(f"a mount may not start with {reserved}: secretd serves those paths")
        return value


class CacheSection(Section):
    refresh_interval: Duration = 300.0
    max_stale: Duration = 3600.0
    idle_evict: Duration = 3600.0
    max_entries: int = Field(10000, ge=1)
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    negative_ttl: Duration = 5.0
    persist_dir: ConfigPath | None = None
    """Directory where every cached current version is kept, envelope-encrypted, so a
    restart during a backend outage still serves it (docs/cache.md); unset: memory only."""
    persist_key_file: ConfigPath | None = None
    """The 32-byte key sealing the persisted cache (`secretd cache init-key FILE`);
    required with persist_dir."""
    startup_spread: Duration = 0.0
    """Draw each secret's first routine check after start from the last `startup_spread`
    of refresh_interval instead of its last fifth (docs/fleet.md); first loads never wait."""

    @model_validator(mode="after")
    def _persist_pair(self) -> CacheSection:
        if (self.persist_dir is None) != (self.persist_key_file is None):
            raise ValueError("persist_dir and persist_key_file go together: set both or neither")
        if self.startup_spread > self.refresh_interval:
            raise ValueError("startup_spread can be at most refresh_interval")
        return self


class LimitsSection(Section):
    max_secret_bytes: int = Field(65536, ge=1, le=64 * 1024 * 1024)
    max_connections: int = Field(1024, ge=1)
    # Connections one uid (or the TCP listener as a whole) may hold; None: a
    # quarter of max_connections (root and the agent's own uid: no share).
    max_connections_per_uid: int | None = Field(None, ge=1)
    # Requests that reach a backend (refresh=true, misses) per caller: a token bucket.
    backend_rate: float = Field(20.0, gt=0)
    backend_burst: int = Field(40, ge=1)
    # API connections: a request's headers must arrive, and an idle keep-alive
    # connection is closed, within this time (slowloris guard).
    idle_timeout: Duration = 10.0
    # A connection whose answer the peer leaves unread this long is aborted.
    write_timeout: Duration = 10.0


class BackendBase(Section):
    mount: str = ""
    timeout: Duration = 10.0

    @field_validator("mount")
    @classmethod
    def _mount_chars(cls, value: str) -> str:
        if value.startswith("/") or any(seg in (".", "..") for seg in value.split("/")):
            raise ValueError(
                "a mount is a name prefix such as 'vault/' (no leading '/', '.', '..')"
            )
        return value


class FileBackendConfig(BackendBase):
    type: Literal["file"]
    path: ConfigPath
    key_file: ConfigPath | None = None  # default: the key file recorded by `store init`
    old_key_files: tuple[ConfigPath, ...] = ()  # decrypt-only older keys


class TokenAuth(Section):
    method: Literal["token"]
    token_file: ConfigPath


class AppRoleAuth(Section):
    method: Literal["approle"]
    role_id_file: ConfigPath
    secret_id_file: ConfigPath
    mount: str = "approle"


class VaultBackendConfig(BackendBase):
    type: Literal["vault"]
    address: str | tuple[str, ...]
    """The server's URL, or a list of replicas' URLs tried in order (docs/vault.md)."""
    kv_mount: str = "secret"
    namespace: str | None = None
    auth: Annotated[TokenAuth | AppRoleAuth, Field(discriminator="method")]
    ca_file: ConfigPath | None = None
    max_concurrency: int = Field(8, ge=1, le=256)
    failback_after: Duration = Field(60.0, gt=0)
    """With several addresses: how long the first one must answer health checks
    without a failure before it serves again."""

    @field_validator("address")
    @classmethod
    def _http_url(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        urls = (value,) if isinstance(value, str) else value
        if not urls:
            raise ValueError("expected at least one http:// or https:// URL")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        cleaned = tuple(url.rstrip("/") for url in urls)
        if len({url.split("://", 1)[0] for url in cleaned}) > 1:
            raise ValueError("every address must use the same scheme (all https:// or all http://)")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("an address is listed twice")
        return cleaned[0] if isinstance(value, str) else cleaned

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every address, the first (the primary) first."""
        return (self.address,) if isinstance(self.address, str) else self.address


class AwsBackendConfig(BackendBase):
    type: Literal["aws"]
    region: str | None = None
    regions: tuple[str, ...] | None = Field(None, min_length=1)
    """Instead of region, for replicated secrets: the regions tried in order,
    the first being the primary (docs/aws.md)."""
    endpoint_url: str | None = None
    endpoint_urls: tuple[str, ...] | None = None
    """With regions: one endpoint URL per region, in the same order (regional VPC endpoints)."""
    failback_after: Duration = Field(60.0, gt=0)
    """With several regions: how long the first one must answer health checks
    without a failure before it serves again."""
    profile: str | None = None
    # The account every answer's ARN must name; unset: the first answer's account.
    account_id: str | None = Field(None, pattern=r"^[0-9]{12}$")
    max_concurrency: int = Field(8, ge=1, le=256)
    # How old a bulk ListSecrets answer may be when it is reused for a version
    # check (0 = never reuse): one listing answers every declared secret's check.
    versions_max_age: Duration = 60.0

    @model_validator(mode="after")
    def _regions(self) -> AwsBackendConfig:
        if self.regions is not None:
            if self.region is not None:
                raise ValueError("set region or regions, not both")
            if len(set(self.regions)) != len(self.regions):
                raise ValueError("a region is listed twice in regions")
        if self.endpoint_urls is not None:
            if self.regions is None or len(self.endpoint_urls) != len(self.regions):
                raise ValueError("endpoint_urls needs regions, one URL per region")
            if self.endpoint_url is not None:
                raise ValueError("set endpoint_url or endpoint_urls, not both")
        return self

    @property
    def region_list(self) -> tuple[str | None, ...]:
        """The regions to use, the primary first ((None,): botocore's default region)."""
        return self.regions if self.regions is not None else (self.region,)

    def endpoint_for(self, index: int) -> str | None:
        """The endpoint URL of the `index`-th region (None: AWS's own)."""
        if self.endpoint_urls is not None:
            return self.endpoint_urls[index]
        return self.endpoint_url


BackendConfig = Annotated[
    FileBackendConfig | VaultBackendConfig | AwsBackendConfig, Field(discriminator="type")
]


class SecretDecl(Section):
    name: Name


class AllowRule(Section):
    secrets: tuple[str, ...] = Field(min_length=1)
    uids: tuple[int, ...] = ()
    gids: tuple[int, ...] = ()
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    tcp: bool = False

    @model_validator(mode="after")
    def _someone(self) -> AllowRule:
        if not (self.uids or self.gids or self.users or self.groups or self.units or self.tcp):
            raise ValueError("a rule must name uids, gids, users, groups, units or tcp = true")
        return self


class Wait(Section):
    min: Duration = 0.05
    max: Duration = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> Wait:
        if self.max < self.min:
            raise ValueError("wait.max must be at least wait.min")
        return self


class TemplateConfig(Section):
    source: ConfigPath | None = None
    contents: str | None = None
    destination: ConfigPath
    format: Literal["text", "env", "json"] = "text"
    vars: dict[str, str] | None = None
    mode: Mode = 0o600
    user: str | None = None
    group: str | None = None
    wait: Wait = Wait()
    command: tuple[str, ...] | None = Field(None, min_length=1)
    command_timeout: Duration = 30.0

    @model_validator(mode="after")
    def _one_input(self) -> TemplateConfig:
        if self.format == "text":
            if (self.source is None) == (self.contents is None):
                raise ValueError("a text template needs exactly one of 'source' or 'contents'")
            if self.vars is not None:
                raise ValueError("'vars' is only for format = 'env' or 'json'")
        else:
            if self.source is not None or self.contents is not None:
                raise ValueError(f"format = '{self.format}' takes 'vars', not a template")
            if not self.vars:
                raise ValueError(f"format = '{self.format}' needs a non-empty 'vars' table")
        return self


class CredentialConfig(Section):
    unit: str
    id: str = Field(min_length=1, max_length=255)
    secret: Name
    field: str | None = None


class Config(Section):
    agent: AgentSection = AgentSection()
    tcp: TcpSection | None = None
    vault_api: VaultApiSection | None = None
    cache: CacheSection = CacheSection()
    limits: LimitsSection = LimitsSection()
    backends: dict[str, BackendConfig] = Field(min_length=1)
    secret: tuple[SecretDecl, ...] = ()
    allow: tuple[AllowRule, ...] = ()
    template: tuple[TemplateConfig, ...] = ()
    credential: tuple[CredentialConfig, ...] = ()
    rotation: tuple[RotationConfig, ...] = ()

    @model_validator(mode="after")
    def _unique_mounts(self) -> Config:
        seen: dict[str, str] = {}
        for name, backend in self.backends.items():
            if backend.mount in seen:
                raise ValueError(
                    f"backends {seen[backend.mount]!r} and {name!r} share mount {backend.mount!r}"
                )
            seen[backend.mount] = name
        destinations = [t.destination for t in self.template]
        if len(set(destinations)) != len(destinations):
            raise ValueError("two templates write the same destination")
        rotated = [r.secret for r in self.rotation]
        if len(set(rotated)) != len(rotated):
            raise ValueError("two [[rotation]] entries rotate the same secret")
        return self
