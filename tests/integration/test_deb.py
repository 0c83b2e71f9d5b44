"""The Debian package, for real: build it, dpkg -i it on this machine, run the
installed agent as the secretd user, reinstall, purge, and check what is left.

Needs root and dpkg, changes this machine's package database while it runs,
and always purges the package at the end (even when a test fails). It refuses
to run when a secretd package is already installed, so it never touches one an
operator put there.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "packaging/build-deb.sh"
CONFIG = Path("/etc/secretd/secretd.toml")
KEY = Path("/etc/secretd/store.key")
STORE = Path("/var/lib/secretd/store")
UNITS = ("secretd.service", "secretd.socket", "secretd-credentials.socket")
WANTS = (
    Path("/etc/systemd/system/sockets.target.wants/secretd.socket"),
    Path("/etc/systemd/system/multi-user.target.wants/secretd.service"),
    Path("/etc/systemd/system/sockets.target.wants/secretd-credentials.socket"),
)
# A clean environment: nothing from the dev venv or the caller's shell leaks in.
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
BUILD_ENV_DROP = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHON"}
AS_SECRETD = ["setpriv", "--reuid=secretd", "--regid=secretd", "--init-groups", "--"]


def _skip_reason() -> str | None:
    if shutil.which("dpkg") is None or shutil.which("dpkg-deb") is None:
        return "dpkg is not available (not a Debian system)"
    if os.geteuid() != 0:
        return "installing a package needs root"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    venv = subprocess.run(["/usr/bin/python3", "-c", "import ensurepip, venv"], capture_output=True)
    if venv.returncode != 0:
        return "the build needs python3-venv (Debian's /usr/bin/python3 cannot make a venv)"
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "secretd"], capture_output=True, text=True
    )
    if "installed" in status.stdout.split():
        return "a secretd package is already installed here; not touching it"
    return None


pytestmark = [
    pytest.mark.slow,
    # The build (a pip install of every dependency) runs in the first test's setup.
    pytest.mark.timeout(600),
]


def run(argv: list[str], *, stdin: bytes | None = None, timeout: float = 120) -> str:
    """Run argv from / with a clean environment; fail the test with its output."""
    result = subprocess.run(
        argv, input=stdin, capture_output=True, cwd="/", env=ENV, timeout=timeout
    )
    out = result.stdout.decode(errors="replace")
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 0, f"{argv} exited {result.returncode}\n{out}\n{err}"
    return out


def purge() -> None:
    subprocess.run(
        ["dpkg", "--purge", "secretd"], capture_output=True, cwd="/", env=ENV, timeout=120
    )


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("deb")
    # pip keeps the caller's settings (proxies, index URLs); nothing of the dev venv leaks in.
    env = {k: v for k, v in os.environ.items() if k not in BUILD_ENV_DROP}
    # gzip: the same package, built in less than half the compression time of xz.
    env["DEB_COMPRESSION"] = "gzip"
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), str(out)], capture_output=True, env=env, timeout=550
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]
    path = Path(result.stdout.decode().strip().splitlines()[-1])
    assert path.is_file() and path.parent == out
    yield path
    path.unlink()  # ~40 MB; pytest keeps the last runs' temporary directories


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[Path]:
    """The package installed for the whole module, purged at the end whatever happens."""
    try:
        run(["dpkg", "-i", str(deb)])
        yield deb
    finally:
        purge()


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A directory the secretd user can read (pytest's tmp_path is root-only 0700)."""
    path = Path(tempfile.mkdtemp(prefix="secretd-deb-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_package_metadata_and_files(installed: Path) -> None:
    fields = run(["dpkg-deb", "-f", str(installed), "Package", "Depends", "Version"])
    assert "Package: secretd" in fields
    assert re.search(r"^Depends: python3\.\d+\b", fields, re.M)
    listed = set(run(["dpkg", "-L", "secretd"]).splitlines())
    for path in (
        "/opt/secretd/bin/secretd",
        "/opt/secretd/pyvenv.cfg",
        "/usr/bin/secretd",
        *(f"/lib/systemd/system/{unit}" for unit in UNITS),
        "/usr/lib/sysusers.d/secretd.conf",
        "/usr/lib/tmpfiles.d/secretd.conf",
        str(CONFIG),
        "/usr/share/doc/secretd/README.md",
        "/usr/share/doc/secretd/docs/store.md",
        "/usr/share/doc/secretd/docs/operating.md",
        "/usr/share/doc/secretd/docs/troubleshooting.md",
        "/usr/share/doc/secretd/docs/reference/config.md",
        "/usr/share/doc/secretd/docs/reference/cli.md",
        "/usr/share/doc/secretd/sdk/README.md",
        "/usr/share/bash-completion/completions/secretd",
        "/usr/share/zsh/vendor-completions/_secretd",
    ):
        assert path in listed, path
    completion = Path("/usr/share/bash-completion/completions/secretd").read_text()
    assert "complete -o filenames -F _secretd secretd" in completion
    # Byte-compiled at build time (the service cannot write under /opt).
    assert any(re.search(r"/secretd/cli/__pycache__/main\.cpython-3\d+\.pyc$", p) for p in listed)
    conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "secretd"])
    assert str(CONFIG) in conffiles


def test_venv_points_at_its_installed_path(installed: Path) -> None:
    assert os.readlink("/usr/bin/secretd") == "/opt/secretd/bin/secretd"
    shebang = Path("/opt/secretd/bin/secretd").read_text().splitlines()[0]
    assert re.fullmatch(r"#!/opt/secretd/bin/python3(\.\d+)?", shebang)
    cfg = Path("/opt/secretd/pyvenv.cfg").read_text()
    assert re.search(r"^executable = /usr/bin/python3\.\d+$", cfg, re.M)
    for path in [Path("/opt/secretd/pyvenv.cfg"), *Path("/opt/secretd/bin").iterdir()]:
        if path.is_file() and not path.is_symlink():
            assert "/tmp/" not in path.read_text(errors="replace"), path
    interpreter = Path("/opt/secretd/bin/python3").resolve()
    assert interpreter.parent == Path("/usr/bin")


def test_version_runs_from_the_installed_venv(installed: Path) -> None:
    pyproject = (REPO / "agent/pyproject.toml").read_text()
    version = re.search(r'^version = "(.+)"$', pyproject, re.M)
    assert version is not None
    assert run(["/usr/bin/secretd", "--version"]).strip() == f"secretd {version.group(1)}"
    where = run(["/opt/secretd/bin/python3", "-c", "import secretd; print(secretd.__file__)"])
    assert where.startswith("/opt/secretd/lib/")


def test_first_install_creates_user_dirs_store_and_key(installed: Path) -> None:
    passwd = run(["getent", "passwd", "secretd"])
    uid = int(passwd.split(":")[2])
    key = KEY.stat()
    assert (key.st_uid, key.st_mode & 0o777, key.st_size) == (uid, 0o600, 32)
    assert (STORE / "store.json").is_file()
    assert (STORE.stat().st_uid, STORE.stat().st_mode & 0o777) == (uid, 0o700)
    for path in (Path("/run/secretd"), Path("/var/log/secretd")):
        assert path.stat().st_uid == uid, path
    api_socket, service, credentials_socket = WANTS
    for link in (api_socket, service):
        assert link.is_symlink(), f"{link}: not enabled on first install"
    # Opt-in: enabled by the operator when units use the dedicated socket.
    assert not os.path.lexists(credentials_socket)


def test_check_passes_as_root_and_as_secretd(installed: Path) -> None:
    for prefix in ([], AS_SECRETD):
        out = run([*prefix, "/usr/bin/secretd", "check", "-c", str(CONFIG)])
        assert f"{CONFIG}: ok" in out


def test_installed_units_verify(installed: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    units = [f"/lib/systemd/system/{unit}" for unit in UNITS]
    result = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    # Warnings about the host's own units are not ours to judge; ours must have none.
    assert [line for line in result.stderr.splitlines() if "secretd" in line] == []


def _config_with_a_rule(scratch: Path) -> Path:
    config = scratch / "secretd.toml"
    config.write_text(
        CONFIG.read_text()
        + '\n[[secret]]\nname = "app/db"\n\n[[allow]]\nsecrets = ["app/*"]\nuids = [0]\n'
    )
    config.chmod(0o644)
    return config


def _wait_until_serving(agent: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert agent.poll() is None, "the installed agent exited during start-up"
        probe = subprocess.run(
            ["/usr/bin/secretd", "status"], capture_output=True, cwd="/", env=ENV, timeout=10
        )
        if probe.returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the installed agent did not serve within 30s")


def test_installed_agent_serves_a_secret_put_by_secretd(installed: Path, scratch_dir: Path) -> None:
    value = secrets.token_hex(16).encode()
    put = [*AS_SECRETD, "/usr/bin/secretd", "store", "put", str(STORE), "app/db"]
    version_id = run(put, stdin=value).strip()
    assert re.fullmatch(r"[0-9a-f]{32}", version_id)
    config = _config_with_a_rule(scratch_dir)
    log = (scratch_dir / "agent.log").open("wb")
    agent = subprocess.Popen(
        [*AS_SECRETD, "/usr/bin/secretd", "agent", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd="/",
        env=ENV,
    )
    try:
        _wait_until_serving(agent)
        assert run(["/usr/bin/secretd", "get", "app/db"]).encode() == value
        status = run(["/usr/bin/secretd", "status"])
        assert version_id in status and "local  yes" in status
    finally:
        _stop(agent)
        log.close()
    assert agent.returncode == 0, (scratch_dir / "agent.log").read_text()
    audit = Path("/var/log/secretd/audit.jsonl").read_text()
    assert '"event":"read","secret":"app/db"' in audit
    assert value.decode() not in audit + (scratch_dir / "agent.log").read_text()
    assert not Path("/run/secretd/secretd.sock").exists()


# Run the installed agent with the kernel's memory-deny-write-execute on, the
# protection the unit's MemoryDenyWriteExecute=yes asks systemd for: no bundled
# native module (uvloop, cryptography, orjson, pydantic-core, ...) may need W+X pages.
MDWE_WRAPPER = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit("PR_SET_MDWE failed")
from secretd.cli.main import main
sys.argv = ["secretd", "agent", "-c", sys.argv[1]]
sys.exit(main())
"""


def test_installed_agent_runs_with_memory_deny_write_execute(
    installed: Path, scratch_dir: Path
) -> None:
    probe = "import ctypes, sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    if subprocess.run(["/opt/secretd/bin/python", "-c", probe], timeout=30).returncode != 0:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3)")
    value = secrets.token_hex(16).encode()
    run([*AS_SECRETD, "/usr/bin/secretd", "store", "put", str(STORE), "app/db"], stdin=value)
    config = _config_with_a_rule(scratch_dir)
    wrapper = scratch_dir / "mdwe.py"
    wrapper.write_text(MDWE_WRAPPER)
    wrapper.chmod(0o644)
    log = (scratch_dir / "agent.log").open("wb")
    argv = [*AS_SECRETD, "/opt/secretd/bin/python", str(wrapper), str(config)]
    agent = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd="/", env=ENV)
    try:
        _wait_until_serving(agent)
        assert run(["/usr/bin/secretd", "get", "app/db", "--refresh"]).encode() == value
    finally:
        _stop(agent)
        log.close()
    assert agent.returncode == 0, (scratch_dir / "agent.log").read_text()


def _stop(agent: subprocess.Popen[bytes]) -> None:
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(timeout=15)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)


def test_socket_activated_installed_agent_serves_the_first_connection(
    installed: Path, scratch_dir: Path
) -> None:
    """As secretd.socket starts it: the agent is launched by the first connection."""
    if shutil.which("systemd-socket-activate") is None:
        pytest.skip("systemd-socket-activate is not installed")
    sock = scratch_dir / "api.sock"
    log = (scratch_dir / "agent.log").open("wb")
    agent = ["/usr/bin/secretd", "agent", "-c", str(CONFIG)]
    activator = subprocess.Popen(
        ["systemd-socket-activate", f"--listen={sock}", "--fdname=api", *AS_SECRETD, *agent],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd="/",
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline, "systemd-socket-activate did not listen"
            time.sleep(0.05)
        # The first connection starts the agent and waits in the backlog until it serves.
        status = run(["/usr/bin/secretd", "status", "--socket", str(sock)], timeout=60)
        # Served, its backend not asked anything yet (no secret is declared).
        assert "local  unknown (not yet used)" in status
    finally:
        _stop(activator)
        log.close()
    assert activator.returncode == 0, (scratch_dir / "agent.log").read_text()
    assert "socket.inherited" in (scratch_dir / "agent.log").read_text()
    # A socket systemd passed is systemd's: the agent leaves it in place.
    assert sock.is_socket()


def test_reinstall_keeps_the_store_and_its_key(installed: Path) -> None:
    key_before = hashlib.sha256(KEY.read_bytes()).hexdigest()
    run(["dpkg", "-i", str(installed)])
    assert hashlib.sha256(KEY.read_bytes()).hexdigest() == key_before
    assert "app/db" in run(["/usr/bin/secretd", "store", "list", str(STORE)]).split()


def _assert_purged() -> None:
    for path in (
        "/opt/secretd",
        "/usr/bin/secretd",
        "/etc/secretd",
        "/var/lib/secretd",
        "/var/log/secretd",
        "/run/secretd",
        *(f"/lib/systemd/system/{unit}" for unit in UNITS),
        *map(str, WANTS),
    ):
        assert not os.path.lexists(path), f"{path} left after purge"


def test_purge_removes_everything_but_the_user(installed: Path) -> None:
    run(["dpkg", "--purge", "secretd"])
    _assert_purged()
    # The system user stays, as Debian packages leave theirs (files may still be owned by it).
    assert run(["getent", "passwd", "secretd"]).startswith("secretd:")


def test_install_reuses_a_provisioned_key_and_leaves_a_foreign_store_alone(
    installed: Path,
) -> None:
    # Purged by the previous test (or never installed if it failed: purge is idempotent).
    purge()
    key_bytes = secrets.token_bytes(32)
    KEY.parent.mkdir(mode=0o755)
    KEY.write_bytes(key_bytes)
    KEY.chmod(0o600)
    try:
        run(["dpkg", "-i", str(installed)])
        assert KEY.read_bytes() == key_bytes
        assert json.loads((STORE / "store.json").read_text())["key_file"] == str(KEY)
        run(["dpkg", "--purge", "secretd"])
        STORE.mkdir(parents=True)
        (STORE / "notes.txt").write_text("not a store\n")
        run(["dpkg", "-i", str(installed)])
        assert not (STORE / "store.json").exists()
        assert (STORE / "notes.txt").read_text() == "not a store\n"
        assert not KEY.exists()
    finally:
        purge()
    _assert_purged()


def test_a_bad_provisioned_key_is_reported_and_left_alone(installed: Path) -> None:
    purge()
    KEY.parent.mkdir(mode=0o755)
    KEY.write_bytes(b"too short")
    KEY.chmod(0o600)
    try:
        result = subprocess.run(
            ["dpkg", "-i", str(installed)], capture_output=True, cwd="/", env=ENV, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert b"holds 9 bytes" in result.stderr and b"secretd store init" in result.stderr
        assert KEY.read_bytes() == b"too short" and KEY.stat().st_uid == 0
        assert not (STORE / "store.json").exists()
        check = subprocess.run(
            ["/usr/bin/secretd", "check", "-c", str(CONFIG)], capture_output=True, env=ENV
        )
        # The agent will not start on it either (ExecStartPre= runs this check).
        assert check.returncode == 2 and b"not a secretd store" in check.stderr
    finally:
        purge()
    _assert_purged()
