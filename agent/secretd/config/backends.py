"""The `[backends.NAME]` tables of the configuration (docs/reference/config.md):
a file store, Vault/OpenBao KV v2 or AWS Secrets Manager, told apart by `type`.
Part of the model in `config.schema`, which imports them from here."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from secretd.config.base import Section
from secretd.config.types import ConfigPath, Duration


class BackendBase(Section):
    """What every `[backends.NAME]` table has."""

    mount: str = ""
    """Names starting with this prefix are served by this backend (longest prefix wins)."""
    timeout: Duration = 10.0
    """Longest time one call to this backend may take."""

    @field_validator("mount")
    @classmethod
    def _mount_chars(cls, value: str) -> str:
        if value.startswith("/") or any(seg in (".", "..") for seg in value.split("/")):
            raise ValueError(
                "a mount is a name prefix such as 'vault/' (no leading '/', '.', '..')"
            )
        return value


class FileBackendConfig(BackendBase):
    """`type = "file"`: an envelope-encrypted file store (docs/store.md)."""

    type: Literal["file"]
    """The backend kind: "file", "vault" or "aws"."""
    path: ConfigPath
    """The store directory (made by `secretd store init`)."""
    key_file: ConfigPath | None = None
    """The store's key file; unset: the key file `store init` (or the last `rekey`) recorded."""
    old_key_files: tuple[ConfigPath, ...] = ()
    """Older key files kept for decrypting versions sealed before a rekey."""


class TokenAuth(Section):
    """`auth = { method = "token", ... }`: a Vault token read from a file."""

    method: Literal["token"]
    """How the agent logs in to Vault: "token" or "approle"."""
    token_file: ConfigPath
    """File holding the Vault token (mode 0600); re-read when it changes."""


class AppRoleAuth(Section):
    """`auth = { method = "approle", ... }`: AppRole login."""

    method: Literal["approle"]
    """How the agent logs in to Vault: "token" or "approle"."""
    role_id_file: ConfigPath
    """File holding the AppRole role_id."""
    secret_id_file: ConfigPath
    """File holding the AppRole secret_id (mode 0600)."""
    mount: str = "approle"
    """Where the AppRole auth method is mounted in Vault."""


class VaultBackendConfig(BackendBase):
    """`type = "vault"`: HashiCorp Vault or OpenBao, KV version 2 (docs/vault.md)."""

    type: Literal["vault"]
    """The backend kind: "file", "vault" or "aws"."""
    address: str | tuple[str, ...]
    """The server's URL (http:// or https://), or a list of replicas' URLs tried in
    order (docs/vault.md)."""
    kv_mount: str = "secret"
    """The KV v2 mount secrets are read from."""
    namespace: str | None = None
    """Vault Enterprise / OpenBao namespace to send with every request."""
    auth: Annotated[TokenAuth | AppRoleAuth, Field(discriminator="method")]
    """How to log in: an inline table with `method` and its own keys."""
    ca_file: ConfigPath | None = None
    """PEM file of the CA that signed the server's certificate; unset: the system's CAs."""
    max_concurrency: int = Field(8, ge=1, le=256)
    """Requests in flight to this server at once (also the connection pool's size)."""
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
    """`type = "aws"`: AWS Secrets Manager (docs/aws.md)."""

    type: Literal["aws"]
    """The backend kind: "file", "vault" or "aws"."""
    region: str | None = None
    """AWS region; unset: AWS_REGION, AWS_DEFAULT_REGION or the profile's region."""
    regions: tuple[str, ...] | None = Field(None, min_length=1)
    """Instead of region, for replicated secrets: the regions tried in order,
    the first being the primary (docs/aws.md)."""
    endpoint_url: str | None = None
    """Another endpoint than AWS's own (a VPC endpoint, a test server)."""
    endpoint_urls: tuple[str, ...] | None = None
    """With regions: one endpoint URL per region, in the same order (regional VPC endpoints)."""
    failback_after: Duration = Field(60.0, gt=0)
    """With several regions: how long the first one must answer health checks
    without a failure before it serves again."""
    profile: str | None = None
    """A named profile from the shared AWS config and credentials files."""
    account_id: str | None = Field(None, pattern=r"^[0-9]{12}$")
    """The 12-digit account every answer's ARN must name; unset: the first answer's account."""
    max_concurrency: int = Field(8, ge=1, le=256)
    """Calls to AWS in flight at once."""
    versions_max_age: Duration = 300.0
    """Reuse one bulk listing for version checks this long (0: never); default: refresh_interval."""

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
