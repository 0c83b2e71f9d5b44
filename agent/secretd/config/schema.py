"""The configuration model (docs/reference/config.md). Frozen; unknown keys are errors.

Each collaborator receives only its own section (or plain values), never the
whole `Config`.

Conventions (docs/reference/config.md is generated from this module):

- every field has a one-line docstring directly below it, saying what it does
  (`Section` sets `use_attribute_docstrings`); a test fails when one is missing;
- a key that a SIGHUP reload cannot change is listed in `RESTART_ONLY`, which
  both the reload check (`restart_only_changes`, used by app.py) and the
  reference read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from secretd.config.backends import (
    AppRoleAuth,
    AwsBackendConfig,
    BackendBase,
    BackendConfig,
    FileBackendConfig,
    TokenAuth,
    VaultBackendConfig,
)
from secretd.config.base import Section
from secretd.config.rotation import RotationConfig
from secretd.config.types import (
    AuditTarget,
    ConfigPath,
    Duration,
    LoopbackAddress,
    Mode,
    Name,
    parse_duration,
)
from secretd.state import default_state_dir

__all__ = [
    "RESTART_ONLY",
    "AppRoleAuth",
    "AwsBackendConfig",
    "BackendBase",
    "BackendConfig",
    "FileBackendConfig",
    "Section",
    "TokenAuth",
    "VaultBackendConfig",
    "restart_only_changes",
]

# Keys a reload (SIGHUP) cannot change: the sockets are bound once, the process
# hardened once, the routes and rate limiter built once. A reload that changes
# one is rejected; restart the agent. A whole section ("tcp") covers its keys.
RESTART_ONLY: frozenset[str] = frozenset(
    {
        "agent.socket",
        "agent.socket_mode",
        "agent.socket_group",
        "agent.credentials_socket",
        "agent.mlock",
        "agent.state_dir",
        "cache.persist_dir",
        "cache.persist_key_file",
        "tcp",
        "vault_api",
        "limits.backend_rate",
        "limits.backend_burst",
        "limits.idle_timeout",
    }
)


def default_socket() -> Path:
    """/run/secretd/secretd.sock for root; $XDG_RUNTIME_DIR/secretd.sock otherwise."""
    if os.geteuid() == 0 or not os.environ.get("XDG_RUNTIME_DIR"):
        return Path("/run/secretd/secretd.sock")
    return Path(os.environ["XDG_RUNTIME_DIR"]) / "secretd.sock"


class AgentSection(Section):
    """`[agent]`: the socket, logging, auditing and the agent's own state."""

    socket: ConfigPath = Field(default_factory=default_socket)
    """The API's Unix socket (get, status, exec, SDK clients, systemd credentials)."""
    socket_mode: Mode = 0o660
    """File mode of the socket, set before it accepts connections."""
    socket_group: str | None = None
    """Group of the socket (with mode 0660: its members may connect); unset: the agent's group."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Least severe log line written to stderr (the journal)."""
    log_format: Literal["text", "json"] = "text"
    """Log lines as readable text or as one JSON object each."""
    audit_log: AuditTarget | None = None
    """JSON-lines audit trail of reads, denials, refreshes and renders; "-": stderr; unset: off."""
    credentials_socket: ConfigPath | None = None
    """A second, mode-0600 socket that serves only systemd `LoadCredential=` requests."""
    mlock: bool = False
    """Try to lock the agent's memory against swap (mlockall); the outcome shows in health."""
    state_dir: ConfigPath = Field(default_factory=default_state_dir)
    """The agent's own state (rollback marks, rotation progress), never a secret value."""


class TcpSection(Section):
    """`[tcp]`: an optional loopback HTTP listener (off unless the table is present)."""

    listen: LoopbackAddress = "127.0.0.1:2773"
    """HOST:PORT to listen on; the host must be a loopback address or localhost."""
    token_file: ConfigPath
    """File holding the token every TCP request must send (16-1024 visible ASCII characters)."""


# First path segments of secretd's own routes (/v1/secrets, /v1/health) and of the
# Vault routes the compatible API answers itself (/v1/sys, /v1/auth).
RESERVED_VAULT_MOUNTS = frozenset({"secrets", "sys", "auth", "health"})
_VAULT_MOUNT = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")


class VaultApiSection(Section):
    """`[vault_api]`: Vault/OpenBao-compatible KV v2 reads (docs/vault-api.md)."""

    mount: str = "secret"
    """The KV v2 mount name Vault clients use: they read /v1/<mount>/data/<name>."""

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
    """`[cache]`: how long values are kept and how often they are checked (docs/cache.md)."""

    refresh_interval: Duration = 300.0
    """How often a cached secret is checked against its remote backend (with jitter)."""
    max_stale: Duration = 3600.0
    """How long past a failed refresh a cached value is still served, marked stale."""
    idle_evict: Duration = 3600.0
    """Drop a secret nobody has read for this long (declared and template secrets are kept)."""
    max_entries: int = Field(10000, ge=1)
    """At most this many secrets in the cache; the least recently read go first."""
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    """At most this many bytes of values (plus about 300 bytes per entry) in the cache."""
    negative_ttl: Duration = 5.0
    """Remember that a secret does not exist for this long before asking the backend again."""
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
    """`[limits]`: sizes, connection caps and per-caller rates (docs/api.md)."""

    max_secret_bytes: int = Field(65536, ge=1, le=64 * 1024 * 1024)
    """Largest value accepted from a backend or the store, in bytes."""
    max_connections: int = Field(1024, ge=1)
    """API connections open at once; more are refused quickly."""
    max_connections_per_uid: int | None = Field(None, ge=1)
    """Connections one uid (or the TCP listener) may hold; unset: a quarter of max_connections."""
    backend_rate: float = Field(20.0, gt=0)
    """Reads per second one caller may cause to reach a backend (misses, refresh=true)."""
    backend_burst: int = Field(40, ge=1)
    """How many such reads one caller may make at once before backend_rate applies."""
    idle_timeout: Duration = 10.0
    """Time for a request's headers to arrive; an idle keep-alive connection is closed after it."""
    write_timeout: Duration = 10.0
    """A connection whose answer the peer leaves unread this long is aborted."""


class SecretDecl(Section):
    """`[[secret]]`: a secret fetched at start and kept fresh."""

    name: Name
    """The secret's full name (its backend's mount included)."""


class AllowRule(Section):
    """`[[allow]]`: who may read which secrets; no matching rule means 403 (docs/security.md)."""

    secrets: tuple[str, ...] = Field(min_length=1)
    """Globs on secret names: `*` within one segment, `**` across segments."""
    uids: tuple[int, ...] = ()
    """Calling processes with one of these user ids."""
    gids: tuple[int, ...] = ()
    """Calling processes with one of these group ids (primary or supplementary)."""
    users: tuple[str, ...] = ()
    """Calling processes running as one of these user names."""
    groups: tuple[str, ...] = ()
    """Calling processes in one of these groups (by name)."""
    units: tuple[str, ...] = ()
    """Calling processes in one of these systemd units (globs such as "app@*.service")."""
    tcp: bool = False
    """The rule also allows token-authenticated requests over the [tcp] listener."""

    @model_validator(mode="after")
    def _someone(self) -> AllowRule:
        if not (self.uids or self.gids or self.users or self.groups or self.units or self.tcp):
            raise ValueError("a rule must name uids, gids, users, groups, units or tcp = true")
        return self


class Wait(Section):
    """`wait = { min = "...", max = "..." }`: debounce a burst of changes before rendering."""

    min: Duration = 0.05
    """Render once no change has come for this long..."""
    max: Duration = 1.0
    """...but no later than this after the first change."""

    @model_validator(mode="after")
    def _ordered(self) -> Wait:
        if self.max < self.min:
            raise ValueError("wait.max must be at least wait.min")
        return self


class TemplateConfig(Section):
    """`[[template]]`: a file rendered from secrets (docs/render.md)."""

    source: ConfigPath | None = None
    """Jinja2 template file (format "text"); or give `contents`."""
    contents: str | None = None
    """The Jinja2 template itself (format "text"); or give `source`."""
    destination: ConfigPath
    """The file written (atomically; never through a symlink)."""
    format: Literal["text", "env", "json"] = "text"
    """"text": a Jinja2 template; "env" / "json": the `vars` table as an env or JSON file."""
    vars: dict[str, str] | None = None
    """For "env" / "json": VARIABLE = "secret/name" or "secret/name#field"."""
    mode: Mode = 0o600
    """File mode of the destination."""
    user: str | None = None
    """Owner of the destination (name or uid); unset: the agent's user."""
    group: str | None = None
    """Group of the destination (name or gid); unset: the agent's group."""
    wait: Wait = Wait()
    """Debounce: an inline table with `min` and `max`."""
    command: tuple[str, ...] | None = Field(None, min_length=1)
    """Run after a changed render: an argv list (never a shell), no secrets in its environment."""
    command_timeout: Duration = 30.0
    """The command's process group is killed after this long."""

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
    """`[[credential]]`: a secret served to systemd's `LoadCredential=` (docs/operating.md)."""

    unit: str
    """The requesting unit's name (a glob such as "app@*.service")."""
    id: str = Field(min_length=1, max_length=255)
    """The credential id the unit asks for (`LoadCredential=ID:...`)."""
    secret: Name
    """The secret served."""
    field: str | None = None
    """One top-level key of a JSON-object value; unset: the whole value."""


class Config(Section):
    """The whole file."""

    agent: AgentSection = AgentSection()
    """The socket, logging, auditing and state."""
    tcp: TcpSection | None = None
    """The optional loopback TCP listener; off when absent."""
    vault_api: VaultApiSection | None = None
    """The optional Vault-compatible KV v2 routes (docs/vault-api.md); off when absent."""
    cache: CacheSection = CacheSection()
    """Cache lifetimes and bounds."""
    limits: LimitsSection = LimitsSection()
    """Sizes, connection caps and rates."""
    backends: dict[str, BackendConfig] = Field(min_length=1)
    """One table per backend, `[backends.NAME]`; at least one."""
    secret: tuple[SecretDecl, ...] = ()
    """Declared secrets, loaded at start."""
    allow: tuple[AllowRule, ...] = ()
    """Access rules; without any, every read is denied."""
    template: tuple[TemplateConfig, ...] = ()
    """Rendered files."""
    credential: tuple[CredentialConfig, ...] = ()
    """systemd credentials."""
    rotation: tuple[RotationConfig, ...] = ()
    """Scheduled rotations (docs/rotation.md)."""

    @model_validator(mode="before")
    @classmethod
    def _aws_versions_age(cls, data: Any) -> Any:
        """An AWS backend's versions_max_age defaults to the cache's refresh_interval,
        so a listing is never reused for longer than the refresh it stands in for."""
        if not isinstance(data, dict) or not isinstance(data.get("backends"), dict):
            return data
        cache = data.get("cache")
        interval = cache.get("refresh_interval") if isinstance(cache, dict) else None
        try:
            parse_duration(interval)
        except ValueError:
            return data  # unset (the field default applies) or reported at cache.refresh_interval
        backends = {
            name: {**table, "versions_max_age": interval}
            if isinstance(table, dict)
            and table.get("type") == "aws"
            and "versions_max_age" not in table
            else table
            for name, table in data["backends"].items()
        }
        return {**data, "backends": backends}

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


def restart_only_changes(old: Config, new: Config) -> list[str]:
    """The `RESTART_ONLY` keys whose value differs between `old` and `new`."""
    changed = []
    for key in sorted(RESTART_ONLY):
        section, _, field = key.partition(".")
        before, after = getattr(old, section), getattr(new, section)
        if field:
            before, after = getattr(before, field), getattr(after, field)
        if before != after:
            changed.append(key)
    return changed
