"""The configuration model (docs/reference/config.md). Frozen; unknown keys are errors.

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
    address: str
    kv_mount: str = "secret"
    namespace: str | None = None
    auth: Annotated[TokenAuth | AppRoleAuth, Field(discriminator="method")]
    ca_file: ConfigPath | None = None
    max_concurrency: int = Field(8, ge=1, le=256)

    @field_validator("address")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/")


class AwsBackendConfig(BackendBase):
    type: Literal["aws"]
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    # The account every answer's ARN must name; unset: the first answer's account.
    account_id: str | None = Field(None, pattern=r"^[0-9]{12}$")
    max_concurrency: int = Field(8, ge=1, le=256)
    # How old a bulk ListSecrets answer may be when it is reused for a version
    # check (0 = never reuse): one listing answers every declared secret's check.
    versions_max_age: Duration = 60.0


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
