"""What an operator expects of the `secretd` command line (docs/reference/cli.md):
a default config file, `--debug` anywhere, `render` that renders without a
flag, `store delete`, shell completion, and client commands that load only
what they use. Every command runs as a real process on real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from secretd_client._socket import SYSTEM_SOCKET
from tests.fakes.api_server import FakeAgent
from tests.servers.second_user import ensure_test_user, needs_root, run_as

SECRETD = Path(sys.executable).parent / "secretd"
# Never loaded by get/status/exec: the config schema, templates, the AWS SDK,
# the agent's HTTP server, the store's crypto, the agent's logging.
HEAVY = ("pydantic", "jinja2", "aiobotocore", "botocore", "aiohttp", "cryptography", "structlog")


def run(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("SECRETD_CONFIG", "SECRETD_SOCKET")}
    return subprocess.run(
        [str(SECRETD), *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**base, **(env or {})},
    )


def modules_after(argv: list[str], sock: str) -> set[str]:
    """The modules loaded once the CLI ran `argv` in a fresh interpreter."""
    code = (
        "import sys\n"
        "from secretd.cli.main import main\n"
        "main(sys.argv[1:])\n"
        "sys.stderr.write('MODULES ' + ' '.join(sorted(sys.modules)) + '\\n')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SECRETD_SOCKET": sock},
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("MODULES "))
    return set(line.split()[1:])


@pytest.mark.parametrize(
    "argv",
    [
        ["get", "db/app"],
        ["get", "db/app", "--field", "password", "--json"],
        ["status"],
        ["exec", "--env", "PW=db/app#password", "--", "/bin/true"],
    ],
)
def test_client_commands_load_no_schema_templates_or_aws(tmp_path: Path, argv: list[str]) -> None:
    with FakeAgent(tmp_path / "a.sock", {"db/app": json.dumps({"password": "pw"})}) as agent:
        loaded = modules_after(argv, agent.socket_path)
        assert agent.paths, "the command never reached the agent"
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not heavy, f"`secretd {argv[0]}` imported {heavy}"
    assert not any(m.startswith(("secretd.config", "secretd.store")) for m in loaded)
    if argv[0] == "get":  # the blocking client: no event loop (about 20 ms of start-up)
        assert "asyncio" not in loaded


def test_debug_is_accepted_after_the_subcommand(tmp_path: Path) -> None:
    done = run("get", "db/app", "--socket", str(tmp_path / "none.sock"), "--debug")
    assert done.returncode == 1, done.stderr  # a runtime failure, not a usage error
    assert "Traceback" in done.stderr
    assert "cannot reach the agent" in done.stderr


def store_with_secret(tmp_path: Path) -> tuple[Path, Path]:
    store, key = tmp_path / "store", tmp_path / "store.key"
    assert run("store", "init", str(store), "--key", str(key)).returncode == 0
    assert run("store", "put", str(store), "app/db", stdin=b'{"password": "pw"}').returncode == 0
    return store, key


def config_for(tmp_path: Path, store: Path, key: Path, extra: str = "") -> Path:
    config = tmp_path / "etc" / "secretd.toml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(
        f'[agent]\nsocket = "{tmp_path}/s.sock"\nstate_dir = "{tmp_path}/state"\n\n'
        f'[backends.local]\ntype = "file"\npath = "{store}"\nkey_file = "{key}"\n\n{extra}'
    )
    config.chmod(0o600)
    return config


def test_config_defaults_to_secretd_config_then_etc(tmp_path: Path) -> None:
    store, key = store_with_secret(tmp_path)
    config = config_for(tmp_path, store, key)
    done = run("check", env={"SECRETD_CONFIG": str(config)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{config}: ok")
    if Path("/etc/secretd/secretd.toml").exists():
        pytest.skip("this machine has an installed config")
    done = run("check")
    assert done.returncode == 2
    assert "/etc/secretd/secretd.toml: no such file" in done.stderr


def test_render_without_once_renders_once(tmp_path: Path) -> None:
    store, key = store_with_secret(tmp_path)
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    config = config_for(
        tmp_path,
        store,
        key,
        f'[[template]]\ndestination = "{out}/app.env"\nformat = "env"\n'
        'vars = { PW = "app/db#password" }\n',
    )
    done = run("render", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert (out / "app.env").read_text() == 'PW="pw"\n'
    assert run("render", "-c", str(config), "--once").returncode == 0


def test_store_delete_removes_a_secret_under_the_store_lock(tmp_path: Path) -> None:
    from secretd.store.layout import StoreLayout

    store, _key = store_with_secret(tmp_path)
    layout = StoreLayout(store)
    record = layout.record_path("app/db")
    with layout.locked():
        proc = subprocess.Popen(
            [str(SECRETD), "store", "delete", str(store), "app/db"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while not _holds_open(proc.pid, layout.lock_path):  # now blocked on our lock
                assert proc.poll() is None and time.monotonic() < deadline, "never took the lock"
                time.sleep(0.02)
            assert record.exists()
        except BaseException:
            proc.kill()
            raise
    assert proc.wait(timeout=30) == 0
    assert not record.exists()
    assert run("store", "list", str(store)).stdout == ""
    again = run("store", "delete", str(store), "app/db")
    assert again.returncode == 1
    assert "not in store" in again.stderr


def _holds_open(pid: int, path: Path) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


async def test_a_deleted_secret_put_again_is_served_not_refused_as_a_rollback(
    tmp_path: Path,
) -> None:
    """The running agent saw the old record; the new one starts above its generation."""
    from secretd.backends.file import open_backend
    from secretd.config import FileBackendConfig
    from secretd.model import SecretName

    store, key = store_with_secret(tmp_path)
    for value in (b"two", b"three"):
        assert run("store", "put", str(store), "app/db", stdin=value).returncode == 0
    config = FileBackendConfig(type="file", path=store, key_file=key)
    backend = await open_backend("local", config, max_secret_bytes=65536)
    try:
        await backend.fetch(SecretName("app/db"))  # the agent has seen generation 3
        assert run("store", "delete", str(store), "app/db").returncode == 0
        assert run("store", "put", str(store), "app/db", stdin=b"anew").returncode == 0
        fetched = await backend.fetch(SecretName("app/db"))
        assert fetched.version.value.reveal() == b"anew"
    finally:
        await backend.aclose()


def bash_complete(script: str, line: str) -> list[str]:
    """COMPREPLY for the command line `line` (completing its last word)."""
    driver = (
        f"source {script}\n"
        'read -ra COMP_WORDS <<< "$LINE"\n'
        '[[ $LINE == *" " ]] && COMP_WORDS+=("")\n'
        "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        "_secretd\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", driver],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "LINE": line},
    )
    return [word for word in done.stdout.splitlines() if word]


def test_bash_completion_follows_the_command_tree(tmp_path: Path) -> None:
    script = tmp_path / "secretd.bash"
    done = run("completion", "bash")
    assert done.returncode == 0, done.stderr
    script.write_text(done.stdout)
    (tmp_path / "conf.toml").touch()
    assert {"store", "status"} == set(bash_complete(str(script), "secretd st"))
    assert {"put", "promote"} == set(bash_complete(str(script), "secretd store p"))
    assert "delete" in bash_complete(str(script), "secretd store ")
    assert bash_complete(str(script), "secretd get db/app --so") == ["--socket"]
    assert bash_complete(str(script), f"secretd check -c {tmp_path}/con") == [
        f"{tmp_path}/conf.toml"
    ]
    assert bash_complete(str(script), "secretd exec --signal H") == []
    assert set(bash_complete(str(script), "secretd completion ")) == {"bash", "zsh"}


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_follows_the_command_tree(tmp_path: Path) -> None:
    script = tmp_path / "_secretd"
    script.write_text(run("completion", "zsh").stdout)
    driver = (
        "compdef() { :; }\n"
        'compadd() { [[ $1 == -- ]] && shift; print -r -- "$*"; }\n'
        "_files() { print FILES; }\n"
        f"source {script}\n"
        "words=(${=LINE}); CURRENT=${#words}\n"
        "_secretd\n"
    )

    def complete(line: str) -> str:
        env = {**os.environ, "LINE": line}
        done = subprocess.run(
            ["zsh", "-f", "-c", driver], capture_output=True, text=True, timeout=30, env=env
        )
        assert done.stderr == ""  # a status of 1 only means "no matches added"
        return done.stdout.strip()

    assert "status" in complete("secretd st").split()
    assert "delete" in complete("secretd store p").split()
    assert "--socket" in complete("secretd get x --so").split()
    assert complete("secretd check -c /et") == "FILES"
    assert complete("secretd exec --signal H") == ""


@needs_root
def test_a_user_without_an_agent_is_told_every_socket_tried() -> None:
    if Path(SYSTEM_SOCKET).exists():
        pytest.skip("a system agent runs on this machine")
    user = ensure_test_user()
    with tempfile.TemporaryDirectory(prefix="sdx", dir="/tmp") as name:  # they may enter it
        runtime = Path(name)
        runtime.chmod(0o755)
        env = {"XDG_RUNTIME_DIR": str(runtime)}
        done = run_as(user, [str(SECRETD), "get", "db/app"], env=env)
    assert done.returncode == 1
    line = done.stderr.decode()
    assert line == (
        f"secretd: get: cannot reach the agent: no socket at {runtime}/secretd.sock or "
        f"{SYSTEM_SOCKET} (is the agent running? name its socket with --socket or "
        "$SECRETD_SOCKET)\n"
    )
