"""A symlinked config is accepted when nobody but a trusted user could have made
or redirected the link (docs/troubleshooting.md): the layout of a Kubernetes
ConfigMap mount (`secretd.toml -> ..data/secretd.toml`, `..data -> ..<stamp>`)
and of Debian alternatives work; a link through a directory another user owns
or can write is refused, naming that directory. `secretd check` runs as a real
process; ownership by another user is real (a second local uid)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.agent_proc import check_config
from tests.servers.second_user import ensure_test_user


def configmap(mount: Path, tmp_path: Path) -> Path:
    """A ConfigMap volume as the kubelet writes it; the config's token path is relative."""
    stamp = mount / "..2026_01_02_03_04_05.123456789"
    stamp.mkdir(parents=True)
    (stamp / "secretd.toml").write_text(
        f'[agent]\nsocket = "{tmp_path}/s.sock"\nstate_dir = "{tmp_path}/state"\n\n'
        '[backends.vault]\ntype = "vault"\naddress = "http://127.0.0.1:9"\n'
        'auth = { method = "token", token_file = "vault.token" }\n\n'
        '[[allow]]\nsecrets = ["**"]\nuids = [0]\n'
    )
    (stamp / "vault.token").write_text("s.token\n")
    (stamp / "vault.token").chmod(0o600)
    (mount / "..data").symlink_to(stamp.name)
    for name in ("secretd.toml", "vault.token"):
        (mount / name).symlink_to(f"..data/{name}")
    return mount / "secretd.toml"


def test_a_kubernetes_configmap_mount_is_accepted(tmp_path: Path) -> None:
    config = configmap(tmp_path / "etc-secretd", tmp_path)
    done = check_config(config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{config}: ok")


def test_a_link_into_a_directory_another_user_owns_is_refused(tmp_path: Path) -> None:
    config = configmap(tmp_path / "etc-secretd", tmp_path)
    stamp = next((tmp_path / "etc-secretd").glob("..2026*"))
    os.chown(stamp, ensure_test_user().uid, -1)  # they could replace secretd.toml in it
    done = check_config(config)
    assert done.returncode == 2
    assert f"config file {config}: reached through a symlink, and directory {stamp}" in (
        done.stderr
    )
    assert "is owned by uid" in done.stderr


def test_a_link_another_user_made_in_a_sticky_directory_is_refused(tmp_path: Path) -> None:
    config = configmap(tmp_path / "etc-secretd", tmp_path)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: anyone may add a link here
    link = sticky / "secretd.toml"
    link.symlink_to(config)
    os.lchown(link, ensure_test_user().uid, -1)
    done = check_config(link)
    assert done.returncode == 2
    assert f"symlink {link} is owned by uid" in done.stderr


def test_a_link_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    config = configmap(tmp_path / "etc-secretd", tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "secretd.toml").symlink_to(config)
    done = check_config(shared / "secretd.toml")
    assert done.returncode == 2
    assert f"directory {shared} is writable by group or others (mode 0777)" in done.stderr
