"""secretd installed the way the Debian package installs it, for the real-systemd tier.

The service runs as the `secretd` system user with ProtectHome=yes, so it
cannot use the development venv (on an interpreter under /root). As
packaging/build-deb.sh does, this builds a virtualenv on Debian's
/usr/bin/python3 from a clean copy of agent/ and sdk/, byte-compiled (under
ProtectSystem=strict the service could never write __pycache__). It is built
once per source: cached under ROOT by a hash of the sources, so only the first
run after a change pays the pip install. The `secretd` user comes from
packaging/sysusers.d-secretd.conf through systemd-sysusers, as on install.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOT = Path("/var/cache/secretd-systest")  # outside /tmp and /var/tmp: PrivateTmp= hides both
PYTHON = Path("/usr/bin/python3")
SOURCES = ("agent", "sdk")
_SKIP = {"build", "__pycache__"}
# pip keeps the caller's settings (proxies, index URLs); nothing of the dev venv leaks in.
_ENV_DROP = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE"}
STALE_AFTER = 24 * 3600.0


def _source_files() -> list[Path]:
    files = []
    for top in SOURCES:
        for path in sorted((REPO / top).rglob("*")):
            parts = set(path.relative_to(REPO).parts)
            if (
                path.is_file()
                and not parts & _SKIP
                and not any(p.endswith(".egg-info") for p in parts)
            ):
                files.append(path)
    return files


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _run(argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
    done = subprocess.run(argv, capture_output=True, env=env, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed: {done.stderr.decode(errors='replace')[-3000:]}")


def _build(target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="sdvenv-src-") as src:
        for top in SOURCES:
            shutil.copytree(
                REPO / top,
                Path(src) / top,
                ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
            )
        _run([str(PYTHON), "-m", "venv", str(target)])
        _run(
            [
                str(target / "bin/pip"),
                "install",
                "--quiet",
                "--no-compile",
                "--disable-pip-version-check",
                f"{src}/sdk",
                f"{src}/agent",
            ]
        )
    _run([str(target / "bin/python"), "-m", "compileall", "-q", "-j", "0", str(target / "lib")])
    for path in [target, *target.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)  # readable by the secretd user whatever our umask


def agent_venv() -> Path:
    """The venv for the current sources: built now, or the cached one."""
    ROOT.mkdir(mode=0o755, exist_ok=True)
    ROOT.chmod(0o755)
    target = ROOT / f"venv-{source_hash()}"
    # pip writes the venv's path into its scripts, so it is built where it stays;
    # the lock keeps a concurrent run from building (or using) it half-made.
    with (ROOT / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".complete").exists():
            shutil.rmtree(target, ignore_errors=True)
            _build(target)
            (target / ".complete").touch()
        os.utime(target)  # in use: old means unused for a day
        _forget_old_venvs(keep=target)
    return target


def _forget_old_venvs(keep: Path) -> None:
    for old in ROOT.glob("venv-*"):
        if old != keep and time.time() - old.stat().st_mtime > STALE_AFTER:
            shutil.rmtree(old, ignore_errors=True)


def ensure_secretd_user() -> pwd.struct_passwd:
    """The `secretd` system user, created from the package's sysusers.d file if absent."""
    try:
        return pwd.getpwnam("secretd")
    except KeyError:
        pass
    _run(["systemd-sysusers", str(REPO / "packaging/sysusers.d-secretd.conf")])
    return pwd.getpwnam("secretd")
