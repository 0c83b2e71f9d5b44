"""`secretd check -c FILE` builds what the agent would build: every backend type
is checked (AWS included), and a file store's records must open with the keys
the agent will have. Problems are one line each, exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.agent_proc import check_config
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
    return check_config(config, env=env)


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


CANARY = "canary-check-v4lue"


def store_with(tmp_path: Path) -> tuple[Path, Path]:
    """A store holding app/db (a JSON object) and plain (text), and its key."""
    store, key = tmp_path / "store", tmp_path / "store.key"
    run("store", "init", str(store), "--key", str(key))
    run("store", "put", str(store), "app/db", stdin=f'{{"password": "{CANARY}"}}'.encode())
    run("store", "put", str(store), "plain", stdin=CANARY.encode())
    return store, key


def file_backend(store: Path, key: Path) -> str:
    return f'[backends.local]\ntype = "file"\npath = "{store}"\nkey_file = "{key}"\n\n'


ALLOW = '[[allow]]\nsecrets = ["**"]\nuids = [0]\n\n'


def test_template_reads_are_resolved_on_the_file_store(tmp_path: Path) -> None:
    store, key = store_with(tmp_path)
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    contents = (
        '{{ secret("app/db", "password") }}\n{{ secret("app/gone") }}\n'
        '{{ secret("app/db", field="user") }}\n{{ secret("plain", stage="previous") }}\n'
        '{{ secret_json("plain") }}{{ secret_json("app/db")["port"] }}'
    )
    done = check(
        tmp_path,
        file_backend(store, key)
        + ALLOW
        + f"[[template]]\ndestination = '{out}/a.conf'\ncontents = '''{contents}'''\n\n"
        + f'[[template]]\ndestination = "{out}/b.env"\nformat = "env"\n'
        + 'vars = { PW = "app/db#pass", OK = "app/db#password" }\n',
    )
    assert done.returncode == 2, done.stdout
    problems = done.stderr.splitlines()
    where = f"secretd: template {out}/a.conf"
    assert f"{where} line 2: secret app/gone: not in the file store of backend 'local'" in problems
    assert f"{where} line 3: secret app/db: has no field 'user'" in problems
    assert f"{where} line 4: secret plain: has no previous version in the file store" in (
        done.stderr
    )
    assert f"{where} line 5: secret plain: the value is not a JSON object" in done.stderr
    assert f"{where} line 5: secret app/db: has no field 'port'" in problems
    assert f"secretd: template {out}/b.env: secret app/db: has no field 'pass'" in problems
    assert len(problems) == 6, done.stderr
    assert CANARY not in done.stdout + done.stderr


def test_destinations_are_checked_by_the_writers_rules(tmp_path: Path) -> None:
    store, key = store_with(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    done = check(
        tmp_path,
        file_backend(store, key)
        + ALLOW
        + f'[[template]]\ndestination = "{tmp_path}/missing/a"\ncontents = "x"\n\n'
        + f'[[template]]\ndestination = "{shared}/b"\ncontents = "x"\n',
    )
    assert done.returncode == 2, done.stdout
    assert f"template {tmp_path}/missing/a: " in done.stderr
    assert f"{tmp_path}/missing (No such file or directory)" in done.stderr
    assert f"template {shared}/b: " in done.stderr
    assert "writable by group or others (mode 0775)" in done.stderr


def test_secrets_on_remote_backends_are_named_as_not_checked(tmp_path: Path) -> None:
    store, key = store_with(tmp_path)
    token = write_private(tmp_path / "vault.token", "s.token\n")
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    done = check(
        tmp_path,
        file_backend(store, key)
        + '[backends.vault]\ntype = "vault"\nmount = "vault/"\naddress = "http://127.0.0.1:9"\n'
        + f'auth = {{ method = "token", token_file = "{token}" }}\n\n'
        + ALLOW
        + f'[[template]]\ndestination = "{out}/a"\ncontents = "{{{{ secret(\'vault/x\') }}}}"\n',
    )
    assert done.returncode == 0, done.stderr
    assert "backend vault (vault): 1 secret(s) read by name were not checked" in done.stdout


def test_declared_and_credential_secrets_are_resolved_too(tmp_path: Path) -> None:
    store, key = store_with(tmp_path)
    done = check(
        tmp_path,
        file_backend(store, key)
        + ALLOW
        + '[[secret]]\nname = "app/nope"\n\n'
        + '[[credential]]\nunit = "app.service"\nid = "pw"\nsecret = "app/db"\nfield = "pw"\n',
    )
    assert done.returncode == 2
    # A declared secret may be put after the agent starts: a warning.
    assert "warning: secret[0]: secret app/nope: not in the file store" in done.stderr
    assert "secretd: credential[0] (pw): secret app/db: has no field 'pw'" in done.stderr


def test_no_allow_rule_is_a_warning_not_an_error(tmp_path: Path) -> None:
    store, key = store_with(tmp_path)
    done = check(tmp_path, file_backend(store, key))
    assert done.returncode == 0, done.stderr
    assert "secretd: warning: no [[allow]] rule: every read" in done.stderr
    with_rule = check(tmp_path, file_backend(store, key) + ALLOW)
    assert "warning" not in with_rule.stderr


def test_the_state_directory_is_checked_as_the_agent_opens_it(tmp_path: Path) -> None:
    store, key = store_with(tmp_path)
    (tmp_path / "state").write_text("not a directory")
    done = check(tmp_path, file_backend(store, key) + ALLOW)
    assert done.returncode == 2
    assert f"agent.state_dir {tmp_path}/state: not a directory" in done.stderr
