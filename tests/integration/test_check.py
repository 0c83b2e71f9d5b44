"""`secretd check -c FILE` builds what the agent would build: every backend type
is checked (AWS included), and a file store's records must open with the keys
the agent will have. Problems are one line each, exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.servers.bao_server import write_private

SECRETD = Path(sys.executable).parent / "secretd"


def run(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(SECRETD), *args], input=stdin, capture_output=True, timeout=30, check=True, env=env
    )
    return done.stdout.decode()


def check(tmp_path: Path, backends: str) -> subprocess.CompletedProcess[str]:
    config = write_private(
        tmp_path / "secretd.toml",
        f'[agent]\nsocket = "{tmp_path}/s.sock"\nstate_dir = "{tmp_path}/state"\n\n{backends}',
    )
    # No AWS settings from this machine's environment or home directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)
    return subprocess.run(
        [str(SECRETD), "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_an_aws_backend_is_checked_too(tmp_path: Path) -> None:
    done = check(tmp_path, '[backends.aws]\ntype = "aws"\nendpoint_url = "ftp://127.0.0.1:9"\n')
    assert done.returncode == 2, done.stdout
    assert "backends.aws.endpoint_url" in done.stderr


def test_an_aws_backend_without_a_region_is_reported(tmp_path: Path) -> None:
    done = check(tmp_path, '[backends.aws]\ntype = "aws"\n')
    assert done.returncode == 2, done.stdout
    assert "backend 'aws'" in done.stderr and "region" in done.stderr.lower()


def test_a_good_aws_backend_passes_without_contacting_aws(tmp_path: Path) -> None:
    done = check(
        tmp_path,
        '[backends.aws]\ntype = "aws"\nregion = "eu-west-1"\nendpoint_url = "http://127.0.0.1:9"\n',
    )
    assert done.returncode == 0, done.stderr


def test_records_sealed_under_a_key_the_agent_will_not_have_are_reported(tmp_path: Path) -> None:
    store, first_key, other_key = tmp_path / "store", tmp_path / "a.key", tmp_path / "b.key"
    run("store", "init", str(store), "--key", str(first_key))
    run("store", "put", str(store), "app/db", stdin=b"s3cret-never-printed")
    run("store", "init", str(tmp_path / "other"), "--key", str(other_key))
    first_key.rename(tmp_path / "moved-away.key")  # the key the store names is gone
    done = check(
        tmp_path,
        f'[backends.local]\ntype = "file"\npath = "{store}"\nkey_file = "{other_key}"\n',
    )
    assert done.returncode == 2, done.stdout
    assert "app/db" in done.stderr and "key" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout


def test_a_store_rekeyed_to_a_key_it_records_passes(tmp_path: Path) -> None:
    """The agent learns keys the store records; check must not call that an error."""
    store, first_key, new_key = tmp_path / "store", tmp_path / "a.key", tmp_path / "n.key"
    run("store", "init", str(store), "--key", str(first_key))
    run("store", "put", str(store), "app/db", stdin=b"v")
    run("store", "rekey", str(store), "--key", str(new_key), "--old-key", str(first_key))
    done = check(
        tmp_path,
        f'[backends.local]\ntype = "file"\npath = "{store}"\nkey_file = "{first_key}"\n',
    )
    assert done.returncode == 0, done.stderr
