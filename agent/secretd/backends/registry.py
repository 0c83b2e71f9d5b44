"""Opens the configured backends: `[backends.NAME] type = "file"` imports
`secretd.backends.file` (only then, so an install without the `aws` extra
still runs file and vault backends) and awaits its `open_backend`.

Every backend module exposes::

    async def open_backend(name: str, config: <Its>BackendConfig, *,
                           max_secret_bytes: int, state: StateDir | None) -> Backend

Opening never contacts a remote backend: an outage shows in health, and a
reload never waits on one.

If one backend fails to open, the ones already opened are closed again and the
error propagates: the agent starts with all its backends or not at all.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType
from typing import Any, cast

import structlog

from secretd.backends.base import Backend
from secretd.config import BackendConfig
from secretd.errors import BackendTimeout, ConfigError, SecretdError
from secretd.state import StateDir

log = structlog.get_logger(__name__)

ModuleLoader = Callable[[str], ModuleType]
Opener = Callable[..., Awaitable[Backend]]

# A missing optional dependency names the extra that brings it.
_EXTRAS = {"aiobotocore": "aws", "botocore": "aws", "aiohttp": "vault"}
_AWS_HINT = (
    "install the secretd[aws] extra from the secretd checkout or a wheel built there "
    "(pip install './agent[aws]'; docs/aws.md)"
)


async def open_backends(
    configs: Mapping[str, BackendConfig],
    *,
    max_secret_bytes: int,
    state: StateDir | None = None,
    load_module: ModuleLoader = importlib.import_module,
) -> dict[str, Backend]:
    """Open every backend, in config order; all or nothing.

    `load_module` is the import seam (default `importlib.import_module`).
    """
    opened: dict[str, Backend] = {}
    try:
        for name, config in configs.items():
            opened[name] = await open_one(
                name,
                config,
                max_secret_bytes=max_secret_bytes,
                state=state,
                load_module=load_module,
            )
    except BaseException:
        await close_backends(opened)
        raise
    return opened


async def close_backends(backends: Mapping[str, Backend]) -> None:
    """Close each backend; a failure to close one is logged, not raised."""
    for name, backend in backends.items():
        try:
            async with asyncio.timeout(10):
                await backend.aclose()
        except Exception as exc:
            log.warning("backend.close_failed", backend=name, error=type(exc).__name__)


async def open_one(
    name: str,
    config: BackendConfig,
    *,
    max_secret_bytes: int,
    state: StateDir | None = None,
    load_module: ModuleLoader = importlib.import_module,
) -> Backend:
    """Open one backend. Raises ConfigError (or another SecretdError) naming it."""
    kind = config.type
    try:
        module = load_module(f"secretd.backends.{kind}")
        opener = _opener_of(module, kind)
        async with asyncio.timeout(max(config.timeout, 1.0) * 3):
            backend = await opener(name, config, max_secret_bytes=max_secret_bytes, state=state)
    except ModuleNotFoundError as exc:
        raise _missing_dependency(name, kind, exc) from None
    except TimeoutError:
        raise BackendTimeout(f"backend {name!r} ({kind}) did not open in time") from None
    except SecretdError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"backend {name!r} ({kind}) failed to open: {type(exc).__name__}"
        ) from None
    log.info("backend.opened", backend=name, type=kind, mount=config.mount)
    return backend


def _opener_of(module: ModuleType, kind: str) -> Opener:
    opener: Any = getattr(module, "open_backend", None)
    if not callable(opener):
        raise ConfigError(f"backend type {kind!r}: secretd.backends.{kind} has no open_backend")
    return cast(Opener, opener)


def _missing_dependency(name: str, kind: str, exc: ModuleNotFoundError) -> ConfigError:
    root = (exc.name or "").split(".")[0]
    if root == "secretd":
        return ConfigError(f"backend {name!r}: backend type {kind!r} is not available")
    if kind == "aws" or _EXTRAS.get(root) == "aws":
        return ConfigError(f"backend {name!r} (type 'aws') needs aiobotocore: {_AWS_HINT}")
    return ConfigError(f"backend {name!r} (type {kind!r}) needs the missing module {root!r}")
