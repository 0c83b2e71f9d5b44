"""Config errors as `secretd check` prints them (docs/troubleshooting.md): every
problem in one run, one line each with `file:line:column`, the key path, what
was expected and, for an unknown key, the key meant; no pydantic wording and
never a value from the file. Relative paths (audit_log too) are taken from the
config file's directory, whatever the working directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SECRETD = Path(sys.executable).parent / "secretd"
CANARY = "CANARY-pasted-secret-9d1f"


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def secretd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SECRETD_CONFIG"}
    return subprocess.run(
        [str(SECRETD), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=env,
    )


BAD = f"""\
[agent]
sockt = "/run/x.sock"
log_level = "{CANARY}"

[cache]
refresh_interval = 5

[backends.local]
type = "filestore"
path = "store"

[[allow]]
secrets = "db/*"
uids = [1000]
"""


def test_every_problem_is_reported_at_once_with_its_position(tmp_path: Path) -> None:
    config = write_config(tmp_path / "secretd.toml", BAD)
    done = secretd("check", "-c", str(config))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"secretd: {config}:2:1: agent.sockt: unknown key; did you mean `socket`?",
        f"secretd: {config}:3:13: agent.log_level: expected 'debug', 'info', 'warning' or 'error'",
        f"secretd: {config}:6:20: cache.refresh_interval: "
        "expected a duration string such as '250ms', '30s', '5m', '1h' or '30d'",
        f"secretd: {config}:9:8: backends.local.type: expected one of 'file', 'vault', 'aws'",
        f'secretd: {config}:13:11: allow[0].secrets: expected an array, such as ["a", "b"]',
    ]


def test_no_pydantic_wording_and_no_value_is_echoed(tmp_path: Path) -> None:
    config = write_config(tmp_path / "secretd.toml", BAD)
    done = secretd("check", "-c", str(config))
    for phrase in ("Input", "valid tuple", "Extra inputs", "discriminator", "found using"):
        assert phrase not in done.stderr
    assert CANARY not in done.stderr + done.stdout
    assert "filestore" not in done.stderr


def test_keys_in_arrays_of_tables_and_inline_tables_are_located(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "secretd.toml",
        '[backends."my store"]\ntype = "file"\npath = "s"\n\n'
        '[backends.v]\ntype = "vault"\naddress = "https://v:8200"\n'
        'auth = { method = "token", tokenfile = "t" }\n\n'
        '[[template]]\ndestination = "a"\ncontents = "x"\n\n'
        '[[template]]\ndestination = "b"\ncontents = "y"\nwait = { min = "1s", max = 2 }\n',
    )
    done = secretd("check", "-c", str(config))
    assert done.returncode == 2
    assert f"{config}:8:28: backends.v.auth.tokenfile: unknown key; did you mean `token_file`?" in (
        done.stderr
    )
    assert f"{config}:8:1: backends.v.auth.token_file: required key is missing" in done.stderr
    assert f"{config}:17:28: template[1].wait.max: expected a duration" in done.stderr


def test_invalid_toml_names_line_and_column(tmp_path: Path) -> None:
    config = write_config(tmp_path / "secretd.toml", '[agent]\nsocket = "/x"\nlog_level = \n')
    done = secretd("check", "-c", str(config))
    assert done.returncode == 2
    assert re.search(rf"^secretd: {re.escape(str(config))}:3:13: invalid TOML: ", done.stderr)


def test_relative_audit_log_is_taken_from_the_config_directory(tmp_path: Path) -> None:
    """`check -c etc/secretd.toml` from elsewhere names the file the agent will open."""
    (tmp_path / "store").mkdir()
    config = write_config(
        tmp_path / "etc" / "secretd.toml",
        f'[agent]\nsocket = "{tmp_path}/s.sock"\nstate_dir = "{tmp_path}/state"\n'
        'audit_log = "../log/audit.jsonl"\n\n'
        '[backends.local]\ntype = "vault"\naddress = "http://127.0.0.1:9"\n'
        'auth = { method = "token", token_file = "../token" }\n',
    )
    write_config(tmp_path / "token", "s.token\n")
    elsewhere = tmp_path / "a" / "b"
    (elsewhere / "../log").mkdir(parents=True)  # where a cwd-relative path would point

    missing = secretd("check", "-c", str(config), cwd=elsewhere)
    assert missing.returncode == 2
    assert f"audit_log {tmp_path}/log/audit.jsonl: directory {tmp_path}/log does not exist" in (
        missing.stderr
    )

    (tmp_path / "log").mkdir()
    done = secretd("check", "-c", "../../etc/secretd.toml", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert f"audit      {tmp_path}/log/audit.jsonl" in done.stdout
