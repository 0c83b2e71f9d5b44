"""Files the agent trusts, owned by someone it must not trust (issue 11, item 6).

Root bypasses permissions, so an ordinary user's config (0644) or store key
(0600) read fine - and was accepted. The README's rule: owners must be root
or the user the agent runs as; `secretd check` run as root also accepts the
service user's (`secretd`) files, so a check works before the service starts.
Each case hands one file to a real second uid and runs the real executable.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.agent_proc import BIN, Store, config_text
from tests.e2e.conftest import ALLOW_ROOT
from tests.servers.second_user import TestUser, ensure_test_user, needs_root

pytestmark = needs_root

TOKEN = "t" * 32


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """`secretd ARGS` to completion: a refused file stops it before it serves."""
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, timeout=20, check=False
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def give(path: Path, user: TestUser) -> None:
    os.chown(path, user.uid, user.gid)


# Each case: the extra config it needs (given the work dir) and the file to hand over.
Case = Callable[[Path, Store], tuple[str, Path]]


def config_case(directory: Path, store: Store) -> tuple[str, Path]:
    return "", directory / "secretd.toml"


def key_case(directory: Path, store: Store) -> tuple[str, Path]:
    return "", store.key


def token_case(directory: Path, store: Store) -> tuple[str, Path]:
    token = write(directory / "token", TOKEN, 0o600)
    return f'[tcp]\nlisten = "127.0.0.1:{free_port()}"\ntoken_file = "{token}"\n', token


def audit_case(directory: Path, store: Store) -> tuple[str, Path]:
    return "", write(directory / "audit.jsonl", "", 0o600)


def template_case(directory: Path, store: Store) -> tuple[str, Path]:
    source = write(directory / "app.conf.j2", "x={{ secret('app/k') }}\n", 0o644)
    return f'[[template]]\nsource = "{source}"\ndestination = "{directory}/app.conf"\n', source


def store_case(directory: Path, store: Store) -> tuple[str, Path]:
    return "", store.root


AGENT_CASES = {
    "config file": config_case,
    "store key file": key_case,
    "tcp.token_file": token_case,
    "audit_log": audit_case,
    "template source": template_case,
    "store": store_case,
}


def configure(directory: Path, store: Store, extra: str) -> Path:
    text = config_text(directory, store, allow=ALLOW_ROOT + extra)
    return write(directory / "secretd.toml", text, 0o600)


def assert_refused(done: subprocess.CompletedProcess[str], path: Path, user: TestUser) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("secretd: ")]
    assert len(errors) == 1, done.stderr  # one clear line (the rest is the JSON log)
    assert str(path) in errors[0]
    assert f"owned by uid {user.uid}" in errors[0]
    assert "must be owned by root" in errors[0]


@pytest.mark.parametrize("case", AGENT_CASES.values(), ids=AGENT_CASES.keys())
def test_a_root_agent_refuses_a_file_another_user_owns(
    workdir: Path, store: Store, case: Case
) -> None:
    user = ensure_test_user()
    store.put("app/k", b"v")
    extra, handed = case(workdir, store)
    config = configure(workdir, store, extra)
    give(handed, user)
    assert_refused(run("agent", "-c", str(config)), handed, user)


@pytest.mark.parametrize("case", AGENT_CASES.values(), ids=AGENT_CASES.keys())
def test_check_as_root_refuses_a_file_another_user_owns(
    workdir: Path, store: Store, case: Case
) -> None:
    user = ensure_test_user()
    extra, handed = case(workdir, store)
    config = configure(workdir, store, extra)
    give(handed, user)
    done = run("check", "-c", str(config))
    assert done.returncode == 2
    assert str(handed) in done.stderr and f"owned by uid {user.uid}" in done.stderr


VAULT = (
    '[backends.vault]\ntype = "vault"\nmount = "vault/"\naddress = "{address}"\nauth = {auth}\n{ca}'
)


@pytest.mark.parametrize("which", ["token_file", "role_id_file", "secret_id_file", "ca_file"])
def test_vault_credential_and_ca_files_another_user_owns_are_refused(
    workdir: Path, store: Store, which: str
) -> None:
    user = ensure_test_user()
    files = {
        name: write(workdir / name, "s.0123456789abcdef\n", 0o600)
        for name in ("token_file", "role_id_file", "secret_id_file")
    }
    ca = write(workdir / "ca_file", "-----BEGIN CERTIFICATE-----\n", 0o644)
    if which == "token_file":
        auth = f'{{ method = "token", token_file = "{files["token_file"]}" }}'
    else:
        auth = (
            f'{{ method = "approle", role_id_file = "{files["role_id_file"]}", '
            f'secret_id_file = "{files["secret_id_file"]}" }}'
        )
    address = "https://127.0.0.1:1" if which == "ca_file" else "http://127.0.0.1:1"
    extra = VAULT.format(
        address=address, auth=auth, ca=f'ca_file = "{ca}"\n' if which == "ca_file" else ""
    )
    config = configure(workdir, store, extra)
    handed = ca if which == "ca_file" else files[which]
    give(handed, user)
    done = run("check", "-c", str(config))
    assert done.returncode == 2, done.stdout
    assert str(handed) in done.stderr and f"owned by uid {user.uid}" in done.stderr
    assert "must be owned by root" in done.stderr


def test_check_as_root_accepts_the_service_users_files_the_agent_does_not(
    workdir: Path, store: Store
) -> None:
    """The packaged layout: key and config belong to `secretd`, which the unit
    runs as. Root's `secretd check` accepts that; a root agent does not."""
    try:
        service = pwd.getpwnam("secretd")
    except KeyError:
        pytest.skip("no secretd service user on this host")
    config = configure(workdir, store, "")
    for path in (config, store.key, store.root):
        os.chown(path, service.pw_uid, service.pw_gid)
    checked = run("check", "-c", str(config))
    assert checked.returncode == 0, checked.stderr
    refused = run("agent", "-c", str(config))
    assert refused.returncode == 2
    assert f"owned by uid {service.pw_uid}" in refused.stderr
