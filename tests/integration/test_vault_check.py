"""`secretd check -c FILE` on Vault backend configs: clear one-line errors naming
the key at fault, exit status 2, no token printed, an unreachable server no error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.agent_proc import check_config
from tests.servers.bao_server import write_private


def check(tmp_path: Path, backend: str) -> subprocess.CompletedProcess[str]:
    text = f"""
[agent]
socket = "{tmp_path}/s.sock"
state_dir = "{tmp_path}/state"

[backends.vault]
type = "vault"
mount = "vault/"
{backend}
"""
    config = write_private(tmp_path / "secretd.toml", text)
    return check_config(config)


def token_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = write_private(tmp_path / "vault.token", "hvs.TOKEN-NEVER-PRINTED")
    path.chmod(mode)
    return path


def test_a_good_vault_config_passes_with_the_server_unreachable(tmp_path: Path) -> None:
    token = token_file(tmp_path)
    # port 9 on loopback: nothing listens; check validates files, not the server
    done = check(
        tmp_path,
        f'address = "http://127.0.0.1:9"\nauth = {{ method = "token", token_file = "{token}" }}',
    )
    assert done.returncode == 0, done.stderr
    assert "vault" in done.stdout


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ('address = "127.0.0.1:8200"\nauth = {method = "token", token_file = "/x"}', "address"),
        ('address = "http://h"\nauth = {method = "ldap"}', "auth"),
        ('address = "http://h"\nauth = {method = "token"}', "token_file"),
        (
            'address = "http://h"\nauth = {method = "token", token_file = "/nonexistent"}',
            "no such file",
        ),
        (
            'address = "http://h"\nmax_concurrency = 0\n'
            'auth = {method = "token", token_file = "/x"}',
            "max_concurrency",
        ),
        (
            'address = "http://h"\ntimeout = "soon"\nauth = {method = "token", token_file = "/x"}',
            "timeout",
        ),
        (
            'address = "http://h"\nkv_engine = "kv"\nauth = {method = "token", token_file = "/x"}',
            "unknown key",
        ),
    ],
)
def test_bad_vault_configs_name_the_key(tmp_path: Path, backend: str, expected: str) -> None:
    done = check(tmp_path, backend)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_an_open_token_file_is_refused(tmp_path: Path) -> None:
    token = token_file(tmp_path, mode=0o644)
    done = check(
        tmp_path, f'address = "http://h"\nauth = {{ method = "token", token_file = "{token}" }}'
    )
    assert done.returncode == 2
    assert "backends.vault.auth.token_file" in done.stderr and "chmod" in done.stderr
    assert "TOKEN-NEVER-PRINTED" not in done.stderr + done.stdout


def test_a_bad_ca_file_is_refused(tmp_path: Path) -> None:
    token = token_file(tmp_path)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    done = check(
        tmp_path,
        f'address = "https://h"\nca_file = "{ca}"\n'
        f'auth = {{ method = "token", token_file = "{token}" }}',
    )
    assert done.returncode == 2
    assert "backends.vault.ca_file" in done.stderr
