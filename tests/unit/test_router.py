"""Router (longest mount wins, prefix stripping, shadowing) and registry
(lazy import, all-or-nothing open, missing extras)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from secretd.backends.base import Backend
from secretd.backends.registry import open_backends
from secretd.backends.router import Router
from secretd.config import BackendConfig, parse_config
from secretd.errors import BackendUnavailable, ConfigError, NotFound
from secretd.model import SecretName
from tests.fakes.memory_backend import MemoryBackend


def _router(mounts: dict[str, str]) -> Router:
    backends: dict[str, Backend] = {name: MemoryBackend(name) for name in mounts}
    return Router(backends, mounts)


def test_longest_mount_wins_and_the_prefix_is_stripped() -> None:
    router = _router({"local": "", "vault": "vault/", "deep": "vault/team/"})
    assert router.locate(SecretName("vault/app/db")) == ("vault", "app/db")
    assert router.locate(SecretName("vault/team/x")) == ("deep", "x")
    assert router.locate(SecretName("db/app")) == ("local", "db/app")
    backend, stripped = router.route(SecretName("vault/app/db"))
    assert backend.name == "vault" and stripped == "app/db"


def test_a_name_under_no_mount_is_not_found() -> None:
    router = _router({"vault": "vault/", "aws": "aws/"})
    with pytest.raises(NotFound, match="'db/app'"):
        router.route(SecretName("db/app"))
    with pytest.raises(NotFound):
        router.route(SecretName("vaultx/a"))


def test_a_mount_without_trailing_slash_never_hands_out_an_invalid_name() -> None:
    router = _router({"local": "", "vault": "vault"})
    assert router.locate(SecretName("vault/a")) == ("local", "vault/a")
    assert router.locate(SecretName("vaultx/a")) == ("vault", "x/a")


def test_full_names_map_back_and_respect_shadowing() -> None:
    router = _router({"local": "", "vault": "vault/"})
    assert router.full_name("vault", "app/db") == "vault/app/db"
    assert router.full_name("local", "db/app") == "db/app"
    assert router.full_name("local", "vault/x") is None  # served by 'vault', not 'local'
    assert router.full_name("nobody", "x") is None
    assert router.full_name("vault", "../x") is None


def test_backends_and_mounts_must_agree() -> None:
    with pytest.raises(ConfigError, match="disagree"):
        Router({"a": MemoryBackend("a")}, {"b": ""})
    with pytest.raises(ConfigError, match="share mount"):
        Router({"a": MemoryBackend("a"), "b": MemoryBackend("b")}, {"a": "x/", "b": "x/"})


# -- registry ---------------------------------------------------------------------


def _configs(tmp_path: Path, text: str) -> dict[str, BackendConfig]:
    return dict(parse_config(text, base_dir=tmp_path).backends)


TWO_FILES = """
[backends.one]
type = "file"
path = "s1"
[backends.two]
type = "file"
path = "s2"
mount = "two/"
"""


class _Loader:
    """An import seam: serves a module whose open_backend builds MemoryBackends."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.imported: list[str] = []
        self.opened: list[MemoryBackend] = []
        self.fail_on = fail_on

    def __call__(self, module_name: str) -> types.ModuleType:
        self.imported.append(module_name)
        module = types.ModuleType(module_name)

        async def open_backend(
            name: str, config: Any, *, max_secret_bytes: int, state: Any = None
        ) -> MemoryBackend:
            if name == self.fail_on:
                raise ConfigError(f"backend {name!r}: cannot open")
            backend = MemoryBackend(name, max_secret_bytes=max_secret_bytes)
            self.opened.append(backend)
            return backend

        module.open_backend = open_backend  # type: ignore[attr-defined]
        return module


async def test_open_backends_imports_by_type_and_opens_each(tmp_path: Path) -> None:
    loader = _Loader()
    opened = await open_backends(
        _configs(tmp_path, TWO_FILES), max_secret_bytes=1234, load_module=loader
    )
    assert list(opened) == ["one", "two"]
    assert loader.imported == ["secretd.backends.file", "secretd.backends.file"]


async def test_one_failing_backend_closes_the_others(tmp_path: Path) -> None:
    loader = _Loader(fail_on="two")
    with pytest.raises(ConfigError, match="'two'"):
        await open_backends(_configs(tmp_path, TWO_FILES), max_secret_bytes=1, load_module=loader)
    [first] = loader.opened
    assert first.closed


async def test_a_missing_aiobotocore_names_the_aws_extra(tmp_path: Path) -> None:
    def no_aiobotocore(module_name: str) -> types.ModuleType:
        raise ModuleNotFoundError("No module named 'aiobotocore'", name="aiobotocore")

    configs = _configs(tmp_path, '[backends.aws]\ntype = "aws"\nregion = "eu-west-1"\n')
    with pytest.raises(ConfigError, match=r"secretd\[aws\]"):
        await open_backends(configs, max_secret_bytes=1, load_module=no_aiobotocore)


async def test_a_module_without_open_backend_is_a_config_error(tmp_path: Path) -> None:
    def empty(module_name: str) -> types.ModuleType:
        return types.ModuleType(module_name)

    with pytest.raises(ConfigError, match="no open_backend"):
        await open_backends(_configs(tmp_path, TWO_FILES), max_secret_bytes=1, load_module=empty)


async def test_a_foreign_exception_while_opening_names_only_its_type(tmp_path: Path) -> None:
    def broken(module_name: str) -> types.ModuleType:
        module = types.ModuleType(module_name)

        async def open_backend(
            name: str, config: Any, *, max_secret_bytes: int, state: Any = None
        ) -> Backend:
            raise RuntimeError("token=CANARY")

        module.open_backend = open_backend  # type: ignore[attr-defined]
        return module

    with pytest.raises(ConfigError) as caught:
        await open_backends(_configs(tmp_path, TWO_FILES), max_secret_bytes=1, load_module=broken)
    assert "RuntimeError" in str(caught.value) and "CANARY" not in str(caught.value)


async def test_the_real_file_backend_is_imported_lazily_and_reports_a_bad_path(
    tmp_path: Path,
) -> None:
    pytest.importorskip("secretd.backends.file")
    configs = _configs(tmp_path, '[backends.local]\ntype = "file"\npath = "missing"\n')
    with pytest.raises(ConfigError, match="'local'"):
        await open_backends(configs, max_secret_bytes=65536)


async def test_closing_a_memory_backend_fails_later_calls() -> None:
    backend = MemoryBackend("m")
    backend.put("a", "v")
    await backend.aclose()
    with pytest.raises(BackendUnavailable):
        await backend.fetch(SecretName("a"))
