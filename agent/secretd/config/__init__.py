"""Configuration: TOML -> validated, frozen pydantic models (pydantic lives here only).

The names below are imported on first use (PEP 562): `secretd.config.types`
alone (a duration parser for the CLI clients) must not build every model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_LOADERS = frozenset({"load_config", "parse_config"})


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = "secretd.config.load" if name in _LOADERS else "secretd.config.schema"
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
