"""Configuration: TOML -> validated, frozen pydantic models (pydantic lives here only)."""

from secretd.config.load import load_config, parse_config
from secretd.config.schema import (
    AgentSection,
    AllowRule,
    AwsBackendConfig,
    BackendConfig,
    CacheSection,
    Config,
    CredentialConfig,
    FileBackendConfig,
    LimitsSection,
    SecretDecl,
    TcpSection,
    TemplateConfig,
    VaultApiSection,
    VaultBackendConfig,
)

__all__ = [
    "AgentSection",
    "AllowRule",
    "AwsBackendConfig",
    "BackendConfig",
    "CacheSection",
    "Config",
    "CredentialConfig",
    "FileBackendConfig",
    "LimitsSection",
    "SecretDecl",
    "TcpSection",
    "TemplateConfig",
    "VaultApiSection",
    "VaultBackendConfig",
    "load_config",
    "parse_config",
]
