"""Token-file and AppRole authentication against a real `bao server -dev`:
policies, token-file changes, revocation, renewal at 2/3 TTL, re-login at max
TTL, and back-off after refused credentials. Renewals and logins are counted in
the server's own audit log, waited for with bounded polls."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from secretd.backends.vault import VaultBackend, open_backend
from secretd.config.schema import VaultBackendConfig
from secretd.errors import BackendAuthError, ConfigError
from secretd.model import SecretName
from tests.integration.waits import until
from tests.servers.bao_server import (
    BaoServer,
    approle_config,
    bao_server,
    read_only_policy,
    vault_config,
    write_private,
)

__all__ = ["bao_server"]

pytestmark = pytest.mark.vault


def replace_file(path: Path, text: str) -> None:
    """Atomically replace a credential file (a new inode, as provisioning tools do)."""
    fresh = path.with_suffix(".new")
    write_private(fresh, text)
    fresh.replace(path)


async def refused_then_held_off(
    server: BaoServer, config: VaultBackendConfig, refused: str, auth_path: str
) -> None:
    """The first read is refused (`refused`), the next 20 are held off by the
    back-off: the server sees at most two requests to `auth_path` in all."""
    before = len(server.audit_requests(auth_path))
    async with aclosing(await open_backend("v", config, max_secret_bytes=4096)) as vault:
        with pytest.raises(BackendAuthError, match=refused):
            await vault.fetch(SecretName("auth-a/x"))
        for _ in range(20):
            with pytest.raises(BackendAuthError, match="next login attempt"):
                await vault.fetch(SecretName("auth-a/x"))
    assert len(server.audit_requests(auth_path)) - before <= 2


@pytest.fixture(scope="module")
def policies(bao_server: BaoServer) -> BaoServer:
    bao_server.policy("read-a", read_only_policy(prefix="auth-a/"))
    bao_server.policy("read-b", read_only_policy(prefix="auth-b/"))
    bao_server.kv_put("auth-a/x", {"k": "a"})
    bao_server.kv_put("auth-b/x", {"k": "b"})
    return bao_server


async def test_a_token_with_a_read_policy_reads(policies: BaoServer, tmp_path: Path) -> None:
    token = policies.create_token(policies=["read-a"])
    async with aclosing(
        await open_backend(
            "v",
            vault_config(policies, tmp_path, token=token),
            max_secret_bytes=4096,
            min_token_ttl=1.0,
        )
    ) as vault:
        got = await vault.fetch(SecretName("auth-a/x"))
        assert got.version.version_id == "1"


async def test_a_policy_denial_is_an_auth_error_without_a_login_storm(
    policies: BaoServer, tmp_path: Path
) -> None:
    token = policies.create_token(policies=["read-a"])
    config = vault_config(policies, tmp_path, token=token)
    before = len(policies.audit_requests("auth/token/lookup-self"))
    async with aclosing(await open_backend("v", config, max_secret_bytes=4096)) as vault:
        for _ in range(5):
            with pytest.raises(BackendAuthError, match="permission denied"):
                await vault.fetch(SecretName("auth-b/x"))
        assert (await vault.fetch(SecretName("auth-a/x"))).version.version_id == "1"
    # one lookup to log in, one to tell the denial from a dead token; none per retry
    assert len(policies.audit_requests("auth/token/lookup-self")) - before <= 2


async def test_a_changed_token_file_is_picked_up(policies: BaoServer, tmp_path: Path) -> None:
    config = vault_config(policies, tmp_path, token=policies.create_token(policies=["read-a"]))
    assert config.auth.method == "token"
    async with aclosing(await open_backend("v", config, max_secret_bytes=4096)) as vault:
        with pytest.raises(BackendAuthError):
            await vault.fetch(SecretName("auth-b/x"))
        replace_file(config.auth.token_file, policies.create_token(policies=["read-b"]) + "\n")
        deadline = time.monotonic() + 5.0
        while True:
            try:
                got = await vault.fetch(SecretName("auth-b/x"))
                break
            except BackendAuthError:
                assert time.monotonic() < deadline, "the new token was never read"
                await asyncio.sleep(0.1)
        assert got.version.version_id == "1"


async def test_a_revoked_token_is_replaced_from_the_file_at_once(
    policies: BaoServer, tmp_path: Path
) -> None:
    old = policies.create_token(policies=["read-a"])
    config = vault_config(policies, tmp_path, token=old)
    assert config.auth.method == "token"
    async with aclosing(await open_backend("v", config, max_secret_bytes=4096)) as vault:
        await vault.fetch(SecretName("auth-a/x"))
        replace_file(config.auth.token_file, policies.create_token(policies=["read-a"]))
        policies.revoke_token(old)
        got = await vault.fetch(SecretName("auth-a/x"))  # 403 -> lookup-self 403 -> re-read
        assert got.version.version_id == "1"


async def test_a_refused_token_backs_off_instead_of_spinning(
    policies: BaoServer, tmp_path: Path
) -> None:
    config = vault_config(policies, tmp_path, token="s.not-a-real-token")
    await refused_then_held_off(policies, config, "refused", "auth/token/lookup-self")


async def test_an_unsafe_token_file_is_refused(policies: BaoServer, tmp_path: Path) -> None:
    config = vault_config(policies, tmp_path)
    assert config.auth.method == "token"
    config.auth.token_file.chmod(0o644)
    with pytest.raises(ConfigError, match="token_file"):
        await open_backend("v", config, max_secret_bytes=4096)

    config.auth.token_file.chmod(0o600)
    async with aclosing(await open_backend("v", config, max_secret_bytes=4096)) as vault:
        await vault.fetch(SecretName("auth-a/x"))
        config.auth.token_file.unlink()
        os.symlink("/etc/hostname", config.auth.token_file)
        await asyncio.sleep(1.1)  # past the once-a-second file check
        # the old token keeps working; the unusable file is logged, not fatal
        assert (await vault.fetch(SecretName("auth-a/x"))).version.version_id == "1"


def approle_tokens(server: BaoServer, role: str) -> list[str]:
    accessors = server.api("LIST", "auth/token/accessors")["data"]["keys"]
    found = []
    for accessor in accessors:
        # tokens of other tests may expire between the listing and the lookup: skip them
        meta = server.api(
            "POST", "auth/token/lookup-accessor", {"accessor": accessor}, ok=(200, 400, 403)
        )
        if ((meta.get("data") or {}).get("meta") or {}).get("role_name") == role:
            found.append(accessor)
    return found


@contextlib.asynccontextmanager
async def renewing(vault: VaultBackend) -> AsyncIterator[VaultBackend]:
    """`vault` with its background work (login, renewal) running as the agent's
    supervisor runs it, closed at the end."""
    work = asyncio.create_task(vault.run())
    try:
        yield vault
    finally:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        await vault.aclose()


async def open_approle(server: BaoServer, tmp_path: Path, role: str, **ttl: str) -> VaultBackend:
    role_id, secret_id = server.approle(role, policies=["read-a"], **ttl)
    config = approle_config(server, tmp_path, role_id, secret_id)
    # Tokens of a few seconds keep these tests short: lower the keeper's floor.
    return await open_backend("v", config, max_secret_bytes=4096, min_token_ttl=1.0)


async def test_approle_logs_in_and_reads(policies: BaoServer, tmp_path: Path) -> None:
    before = len(policies.audit_requests("auth/approle/login"))
    async with aclosing(await open_approle(policies, tmp_path, "reader")) as vault:
        got = await vault.fetch(SecretName("auth-a/x"))
        assert got.version.version_id == "1"
    assert len(policies.audit_requests("auth/approle/login")) - before == 1


async def test_approle_token_is_renewed_before_its_ttl_runs_out(
    policies: BaoServer, tmp_path: Path
) -> None:
    renewals = len(policies.audit_requests("auth/token/renew-self"))
    logins = len(policies.audit_requests("auth/approle/login"))
    opened = await open_approle(policies, tmp_path, "short", token_ttl="3s", token_max_ttl="1h")
    async with renewing(opened) as vault:
        await vault.fetch(SecretName("auth-a/x"))
        started = time.monotonic()
        await until(
            lambda: len(policies.audit_requests("auth/token/renew-self")) > renewals + 1,
            within=10.0,
            what="two renew-self calls",
        )
        assert time.monotonic() - started > 3.0  # the first 3 s token would be dead by now
        assert (await vault.fetch(SecretName("auth-a/x"))).version.version_id == "1"
    assert (
        len(policies.audit_requests("auth/approle/login")) - logins == 1
    )  # renewed, not re-logged


async def test_approle_logs_in_again_near_the_max_ttl(policies: BaoServer, tmp_path: Path) -> None:
    logins = len(policies.audit_requests("auth/approle/login"))
    opened = await open_approle(policies, tmp_path, "capped", token_ttl="2s", token_max_ttl="3s")
    async with renewing(opened) as vault:
        await until(
            lambda: len(policies.audit_requests("auth/approle/login")) >= logins + 3,
            within=12.0,
            what="repeated logins as the max TTL caps renewal",
        )
        assert (await vault.fetch(SecretName("auth-a/x"))).version.version_id == "1"


async def test_approle_logs_in_again_after_a_403(policies: BaoServer, tmp_path: Path) -> None:
    async with aclosing(await open_approle(policies, tmp_path, "revoked")) as vault:
        await vault.fetch(SecretName("auth-a/x"))
        logins = len(policies.audit_requests("auth/approle/login"))
        for accessor in approle_tokens(policies, "revoked"):
            policies.api("POST", "auth/token/revoke-accessor", {"accessor": accessor})
        got = await vault.fetch(SecretName("auth-a/x"))
        assert got.version.version_id == "1"
        assert len(policies.audit_requests("auth/approle/login")) == logins + 1


async def test_a_refused_approle_login_backs_off(policies: BaoServer, tmp_path: Path) -> None:
    role_id, _ = policies.approle("refused", policies=["read-a"])
    config = approle_config(policies, tmp_path, role_id, "00000000-0000-0000-0000-000000000000")
    await refused_then_held_off(policies, config, "AppRole login refused", "auth/approle/login")


async def test_a_renewable_token_from_a_file_is_renewed(
    policies: BaoServer, tmp_path: Path
) -> None:
    token = policies.create_token(policies=["read-a"], ttl="3s")
    renewals = len(policies.audit_requests("auth/token/renew-self"))
    opened = await open_backend(
        "v", vault_config(policies, tmp_path, token=token), max_secret_bytes=4096, min_token_ttl=1.0
    )
    async with renewing(opened) as vault:
        await vault.fetch(SecretName("auth-a/x"))
        await until(
            lambda: len(policies.audit_requests("auth/token/renew-self")) > renewals + 1,
            within=10.0,
            what="two renew-self calls",
        )
        lookup = policies.api("POST", "auth/token/lookup", {"token": token})
        assert lookup["data"]["ttl"] > 0  # still alive past its first 3 s
        assert (await vault.fetch(SecretName("auth-a/x"))).version.version_id == "1"
