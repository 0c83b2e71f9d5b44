"""The Vault backend against a real `bao server -dev`: reads, versions, stages,
fields, deletion, names, limits, namespaces and TLS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from secretd.backends.vault import VaultBackend, open_backend
from secretd.errors import BackendUnavailable, BadBackendAnswer, ConfigError, NotFound
from secretd.model import SecretName
from tests.servers.bao_server import BaoServer, bao_server, vault_backend, vault_config

__all__ = ["bao_server", "vault_backend"]

pytestmark = pytest.mark.vault


def value_of(fetched_value: bytes) -> dict[str, object]:
    parsed = json.loads(fetched_value)
    assert isinstance(parsed, dict)
    return parsed


async def test_current_is_the_latest_version_with_its_map_as_json(
    bao_server: BaoServer, vault_backend: VaultBackend
) -> None:
    bao_server.kv_put("reads/db", {"password": "s1", "user": "app"})
    bao_server.kv_put("reads/db", {"password": "s2", "user": "app", "port": 5432})

    got = await vault_backend.fetch(SecretName("reads/db"))

    assert got.name == "reads/db"
    assert got.version.version_id == "2"
    assert got.version.stages == frozenset({"current"})
    assert value_of(got.version.value.reveal()) == {"password": "s2", "user": "app", "port": 5432}
    assert got.version.value.field("password").reveal() == b"s2"
    assert got.version.value.field("port").reveal() == b"5432"
    meta = bao_server.api("GET", "secret/metadata/reads/db")["data"]["versions"]["2"]
    assert got.version.created_at.isoformat().startswith(meta["created_time"][:26])


async def test_previous_and_explicit_versions(
    bao_server: BaoServer, vault_backend: VaultBackend
) -> None:
    for n in range(1, 4):
        bao_server.kv_put("reads/rot", {"n": str(n)})

    previous = await vault_backend.fetch(SecretName("reads/rot"), stage="previous")
    first = await vault_backend.fetch(SecretName("reads/rot"), version_id="1")
    current = await vault_backend.fetch(SecretName("reads/rot"), version_id="3")

    assert previous.version.version_id == "2"
    assert previous.version.stages == frozenset({"previous"})
    assert value_of(first.version.value.reveal()) == {"n": "1"}
    assert first.version.stages == frozenset()
    assert current.version.stages == frozenset({"current"})


@pytest.mark.parametrize("version_id", ["4", "0", "-1", "abc", "1.0", "99999999999999999999", "١"])
async def test_versions_that_cannot_exist_are_not_found(
    bao_server: BaoServer, vault_backend: VaultBackend, version_id: str
) -> None:
    bao_server.kv_put("reads/few", {"a": "b"})
    with pytest.raises(NotFound):
        await vault_backend.fetch(SecretName("reads/few"), version_id=version_id)


async def test_missing_secret_and_unknown_stage_are_not_found(
    bao_server: BaoServer, vault_backend: VaultBackend
) -> None:
    bao_server.kv_put("reads/one", {"a": "b"})
    with pytest.raises(NotFound):
        await vault_backend.fetch(SecretName("reads/absent"))
    with pytest.raises(NotFound):
        await vault_backend.fetch(SecretName("reads/one"), stage="previous")
    with pytest.raises(NotFound):
        await vault_backend.fetch(SecretName("reads/one"), stage="pending")


async def test_soft_deleted_current_is_not_found_and_previous_skips_deleted(
    bao_server: BaoServer, vault_backend: VaultBackend
) -> None:
    for n in range(1, 5):
        bao_server.kv_put("reads/del", {"n": str(n)})
    bao_server.kv_delete("reads/del", [4, 3])

    with pytest.raises(NotFound):
        await vault_backend.fetch(SecretName("reads/del"))
    with pytest.raises(NotFound):
        await vault_backend.fetch(SecretName("reads/del"), version_id="3")
    previous = await vault_backend.fetch(SecretName("reads/del"), stage="previous")
    assert previous.version.version_id == "2"
    assert await vault_backend.current_versions([SecretName("reads/del")]) == {}

    bao_server.kv_undelete("reads/del", [4])
    again = await vault_backend.fetch(SecretName("reads/del"))
    assert again.version.version_id == "4"
    assert value_of(again.version.value.reveal()) == {"n": "4"}


async def test_destroyed_versions_are_not_found(
    bao_server: BaoServer, vault_backend: VaultBackend
) -> None:
    for n in range(1, 4):
        bao_server.kv_put("reads/gone", {"n": str(n)})
    bao_server.kv_destroy("reads/gone", [2])

    with pytest.raises(NotFound):
        await vault_backend.fetch(SecretName("reads/gone"), version_id="2")
    previous = await vault_backend.fetch(SecretName("reads/gone"), stage="previous")
    assert previous.version.version_id == "1"

    bao_server.kv_delete_all("reads/gone")
    with pytest.raises(NotFound):
        await vault_backend.fetch(SecretName("reads/gone"))


async def test_custom_stages_come_from_custom_metadata(
    bao_server: BaoServer, vault_backend: VaultBackend
) -> None:
    for n in range(1, 4):
        bao_server.kv_put("reads/staged", {"n": str(n)})
    bao_server.kv_custom_metadata(
        "reads/staged",
        {"stage:pending": "1", "stage:blue": "3", "stage:current": "1", "owner": "team-a"},
    )

    pending = await vault_backend.fetch(SecretName("reads/staged"), stage="pending")
    current = await vault_backend.fetch(SecretName("reads/staged"))

    assert pending.version.version_id == "1"
    assert pending.version.stages == frozenset({"pending"})
    assert current.version.version_id == "3"  # stage:current cannot override KV
    assert current.version.stages == frozenset({"current", "blue"})


async def test_current_versions_reads_metadata_only(
    bao_server: BaoServer, vault_backend: VaultBackend
) -> None:
    names = [SecretName(f"reads/batch/{i}") for i in range(20)]
    for i, name in enumerate(names):
        for _ in range(i % 3 + 1):
            bao_server.kv_put(name, {"i": str(i)})
    before = len(bao_server.audit_requests("secret/data/reads/batch/0"))

    versions = await vault_backend.current_versions([*names, SecretName("reads/batch/none")])

    assert versions == {name: str(i % 3 + 1) for i, name in enumerate(names)}
    assert len(bao_server.audit_requests("secret/data/reads/batch/0")) == before


async def test_names_with_every_allowed_character(
    bao_server: BaoServer, vault_backend: VaultBackend
) -> None:
    name = "reads/odd+name=x@y.z-_A9"
    bao_server.kv_put(name.replace("+", "%2B").replace("@", "%40"), {"k": "v"})
    got = await vault_backend.fetch(SecretName(name))
    assert value_of(got.version.value.reveal()) == {"k": "v"}


async def test_a_value_over_the_limit_is_a_bad_answer(
    bao_server: BaoServer, vault_backend: VaultBackend
) -> None:
    bao_server.kv_put("reads/big", {"blob": "x" * 5000})
    with pytest.raises(BadBackendAnswer, match="max_secret_bytes"):
        await vault_backend.fetch(SecretName("reads/big"))


async def test_wrong_kv_mount_says_so(bao_server: BaoServer, tmp_path: Path) -> None:
    config = vault_config(bao_server, tmp_path, kv_mount="nosuchmount")
    vault = await open_backend("v", config, max_secret_bytes=4096)
    try:
        with pytest.raises(BackendUnavailable, match="kv_mount"):
            await vault.fetch(SecretName("reads/db"))
    finally:
        await vault.aclose()


async def test_namespace_header_selects_the_namespace(
    bao_server: BaoServer, tmp_path: Path
) -> None:
    bao_server.api("POST", "sys/namespaces/team")
    bao_server.api(
        "POST", "sys/mounts/kv", {"type": "kv", "options": {"version": "2"}}, namespace="team"
    )
    bao_server.api("POST", "kv/data/app", {"data": {"in": "team"}}, namespace="team")
    config = vault_config(bao_server, tmp_path, namespace="team", kv_mount="kv")
    vault = await open_backend("v", config, max_secret_bytes=4096)
    try:
        got = await vault.fetch(SecretName("app"))
        assert value_of(got.version.value.reveal()) == {"in": "team"}
    finally:
        await vault.aclose()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    server = BaoServer.start(tmp_path_factory.mktemp("bao-tls"), tls=True)
    try:
        yield server
    finally:
        server.stop()


async def test_tls_with_the_servers_ca_file(tls_server: BaoServer, tmp_path: Path) -> None:
    tls_server.kv_put("tls/db", {"over": "tls"})
    config = vault_config(tls_server, tmp_path, ca_file=str(tls_server.ca_file))
    vault = await open_backend("v", config, max_secret_bytes=4096)
    try:
        got = await vault.fetch(SecretName("tls/db"))
        assert value_of(got.version.value.reveal()) == {"over": "tls"}
    finally:
        await vault.aclose()


async def test_tls_without_the_ca_is_refused(tls_server: BaoServer, tmp_path: Path) -> None:
    vault = await open_backend("v", vault_config(tls_server, tmp_path), max_secret_bytes=4096)
    try:
        with pytest.raises(BackendUnavailable):
            await vault.fetch(SecretName("tls/db"))
    finally:
        await vault.aclose()


async def test_config_problems_are_config_errors(bao_server: BaoServer, tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-ca.pem"
    garbage.write_text("not a certificate")
    https = bao_server.address.replace("http://", "https://")
    with pytest.raises(ConfigError, match="ca_file"):
        await open_backend(
            "v",
            vault_config(bao_server, tmp_path, address=https, ca_file=str(garbage)),
            max_secret_bytes=4096,
        )
    with pytest.raises(ConfigError, match="ca_file"):
        await open_backend(
            "v", vault_config(bao_server, tmp_path, ca_file=str(garbage)), max_secret_bytes=4096
        )
    with pytest.raises(ConfigError, match="namespace"):
        await open_backend(
            "v", vault_config(bao_server, tmp_path, namespace="a\r\nX-Evil: 1"), max_secret_bytes=1
        )
    config = vault_config(bao_server, tmp_path)
    assert config.auth.method == "token"
    config.auth.token_file.unlink()
    with pytest.raises(ConfigError, match=r"token_file.*no such file"):
        await open_backend("v", config, max_secret_bytes=4096)
