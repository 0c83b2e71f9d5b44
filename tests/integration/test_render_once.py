"""`secretd render -c FILE --once` as a real process over a real file store:
outputs, exit codes, no commands, bounded time on an unreachable backend."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SECRETD = str(Path(sys.executable).with_name("secretd"))
CANARY = "canary-once-91c2"


def secretd(
    *args: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [SECRETD, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    key = tmp_path / "store.key"
    assert secretd("store", "init", str(path), "--key", str(key)).returncode == 0
    for name, value in {
        "db/app": '{"user": "app", "password": "' + CANARY + '"}',
        "api/key": "k$ey\n`x`",
    }.items():
        done = secretd("store", "put", str(path), name, "--key", str(key), stdin=value.encode())
        assert done.returncode == 0, done.stderr
    return path


def write_config(tmp_path: Path, store: Path, templates: str) -> Path:
    out = tmp_path / "out"
    out.mkdir(mode=0o755, exist_ok=True)
    config = tmp_path / "secretd.toml"
    config.write_text(
        f"""
[backends.local]
type = "file"
path = "{store}"
key_file = "{store.parent / "store.key"}"
timeout = "2s"
{templates.replace("OUT", str(out))}
"""
    )
    os.chmod(config, 0o600)
    return config


GOOD = """
[[template]]
destination = "OUT/app.conf"
contents = "user={{ secret('db/app', 'user') }}\\n"
command = ["/bin/sh", "-c", "touch OUT/command-ran"]

[[template]]
destination = "OUT/app.env"
format = "env"
vars = { PASSWORD = "db/app#password", KEY = "api/key" }
"""


def test_renders_everything_and_runs_no_command(tmp_path: Path, store: Path) -> None:
    config = write_config(tmp_path, store, GOOD)
    done = secretd("render", "-c", str(config), "--once")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    assert (out / "app.conf").read_text() == "user=app\n"
    assert (out / "app.env").read_text() == f'PASSWORD="{CANARY}"\nKEY="k\\$ey\n\\`x\\`"\n'
    assert not (out / "command-ran").exists()
    assert done.stdout.splitlines() == [
        f"rendered {out / 'app.conf'}",
        f"rendered {out / 'app.env'}",
    ]
    assert CANARY not in done.stdout + done.stderr
    again = secretd("render", "-c", str(config), "--once")
    assert again.returncode == 0
    assert again.stdout.splitlines()[0] == f"unchanged {out / 'app.conf'}"


def test_missing_secret_exits_1_naming_it_and_writes_nothing(tmp_path: Path, store: Path) -> None:
    config = write_config(
        tmp_path,
        store,
        GOOD
        + """
[[template]]
destination = "OUT/broken.conf"
contents = "a={{ secret('db/app', 'user') }} b={{ secret('no/such') }}"
""",
    )
    done = secretd("render", "-c", str(config), "--once")
    assert done.returncode == 1
    out = tmp_path / "out"
    assert f"render failed: {out / 'broken.conf'}" in done.stderr
    assert "no/such" in done.stderr
    assert "1 of 3 templates failed" in done.stderr
    assert not (out / "broken.conf").exists()
    assert (out / "app.conf").exists()
    assert sorted(p.name for p in out.iterdir()) == ["app.conf", "app.env"]


def test_template_syntax_error_exits_2_with_line(tmp_path: Path, store: Path) -> None:
    source = tmp_path / "app.conf.j2"
    source.write_text("fine\n{% if %}\n")
    config = write_config(
        tmp_path, store, f'[[template]]\ndestination = "OUT/x"\nsource = "{source}"\n'
    )
    done = secretd("render", "-c", str(config), "--once")
    assert done.returncode == 2
    assert f"{source}:2: template syntax error" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A TCP port that accepts connections into the backlog and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_unreachable_backend_ends_in_bounded_time(tmp_path: Path, black_hole: int) -> None:
    token = tmp_path / "vault.token"
    token.write_text("s.dummy")
    os.chmod(token, 0o600)
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    config = tmp_path / "secretd.toml"
    config.write_text(
        f"""
[backends.vault]
type = "vault"
address = "http://127.0.0.1:{black_hole}"
auth = {{ method = "token", token_file = "{token}" }}
timeout = "1s"

[[template]]
destination = "{out}/app.conf"
contents = "{{{{ secret('app/db') }}}}"
"""
    )
    os.chmod(config, 0o600)
    started = time.monotonic()
    done = secretd("render", "-c", str(config), "--once", timeout=50)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not (out / "app.conf").exists()
    print(f"unreachable backend: exit after {elapsed:.1f}s: {done.stderr.strip()}")
