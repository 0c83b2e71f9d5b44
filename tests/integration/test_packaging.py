"""The systemd units and snippets, checked by systemd's own tools in a scratch root."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
UNITS = sorted((PACKAGING / "systemd").iterdir())

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@pytest.fixture
def scratch_root(tmp_path: Path) -> Path:
    """A root with the system's units, our units, and a stand-in /usr/bin/secretd."""
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    shutil.copytree(
        "/lib/systemd",
        root / "usr/lib/systemd",
        symlinks=True,
        ignore=shutil.ignore_patterns("*.dpkg-*"),
    )
    (root / "usr/bin").mkdir(parents=True)
    exe = root / "usr/bin/secretd"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "bin").mkdir()
    shutil.copy("/bin/kill", root / "bin/kill")
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit, units / unit.name)
    return root


def test_units_verify_without_warnings(scratch_root: Path) -> None:
    names = [f"/etc/systemd/system/{u.name}" for u in UNITS]
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={scratch_root}", *names],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_service_exposure_is_at_most_1_5() -> None:
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            str(PACKAGING / "systemd/secretd.service"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for secretd.service: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= 1.5


def test_service_keeps_peer_credentials_working() -> None:
    text = (PACKAGING / "systemd/secretd.service").read_text()
    assert not re.search(r"^PrivateUsers=", text, re.M)
    assert "Type=notify" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert "WatchdogSec=" in text


def test_sysusers_and_tmpfiles_apply_in_scratch_root(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "usr/lib/sysusers.d").mkdir(parents=True)
    (root / "usr/lib/tmpfiles.d").mkdir(parents=True)
    (root / "etc").mkdir()
    shutil.copy(PACKAGING / "sysusers.d-secretd.conf", root / "usr/lib/sysusers.d/secretd.conf")
    shutil.copy(PACKAGING / "tmpfiles.d-secretd.conf", root / "usr/lib/tmpfiles.d/secretd.conf")
    subprocess.run(["systemd-sysusers", f"--root={root}"], check=True, timeout=60)
    passwd = (root / "etc/passwd").read_text()
    assert re.search(r"^secretd:x:\d+:\d+:", passwd, re.M)
    subprocess.run(["systemd-tmpfiles", "--create", f"--root={root}"], check=True, timeout=60)
    store = root / "var/lib/secretd/store"
    assert store.is_dir()
    assert (store.stat().st_mode & 0o777) == 0o700
    assert ((root / "run/secretd").stat().st_mode & 0o777) == 0o755
