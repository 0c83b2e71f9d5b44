"""The atomic writer against real files and real filesystems: modes, owners,
no-op on unchanged output, symlinks, open directories, a full tmpfs and a
read-only mount."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from secretd.errors import RenderError
from secretd.render.writer import FileSpec, write_atomic


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if "secretd-tmp" in p.name]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted for the test (root only), unmounted after."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        timeout=10,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def test_writes_bytes_mode_and_owner(tmp_path: Path) -> None:
    dest = tmp_path / "app.conf"
    spec = FileSpec(dest, mode=0o640, uid=4321, gid=4322)
    assert write_atomic(spec, b"hello\n") is True
    st = os.lstat(dest)
    assert dest.read_bytes() == b"hello\n"
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (4321, 4322)
    assert _leftovers(tmp_path) == []


def test_default_mode_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_atomic(FileSpec(tmp_path / "f"), b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(tmp_path / "f").st_mode) == 0o600


def test_unchanged_output_is_not_rewritten(tmp_path: Path) -> None:
    spec = FileSpec(tmp_path / "f", mode=0o600)
    assert write_atomic(spec, b"same") is True
    inode = os.lstat(spec.path).st_ino
    assert write_atomic(spec, b"same") is False
    assert os.lstat(spec.path).st_ino == inode


@pytest.mark.parametrize(
    "change",
    [
        {"data": b"other"},
        {"data": b"same+"},
        {"mode": 0o644},
        {"uid": 1111},
        {"gid": 2222},
    ],
)
def test_any_difference_rewrites(tmp_path: Path, change: dict[str, object]) -> None:
    spec = FileSpec(tmp_path / "f", mode=0o600)
    write_atomic(spec, b"same")
    inode = os.lstat(spec.path).st_ino
    data = change.pop("data", b"same")
    assert isinstance(data, bytes)
    new_spec = FileSpec(spec.path, **change)  # type: ignore[arg-type]
    assert write_atomic(new_spec, data) is True
    assert os.lstat(spec.path).st_ino != inode
    assert spec.path.read_bytes() == data


def test_symlink_destination_is_refused_and_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    os.chmod(target, 0o644)
    dest = tmp_path / "app.conf"
    dest.symlink_to(target)
    with pytest.raises(RenderError, match="is a symlink"):
        write_atomic(FileSpec(dest), b"attacker-chosen")
    assert target.read_bytes() == b"precious"
    assert stat.S_IMODE(os.lstat(target).st_mode) == 0o644
    assert dest.is_symlink()
    assert _leftovers(tmp_path) == []


def test_dangling_symlink_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "app.conf"
    dest.symlink_to(tmp_path / "would-be-created")
    with pytest.raises(RenderError, match="is a symlink"):
        write_atomic(FileSpec(dest), b"x")
    assert not (tmp_path / "would-be-created").exists()


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777, 0o757])
def test_directory_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, mode)
    with pytest.raises(RenderError, match="writable by group or others"):
        write_atomic(FileSpec(shared / "f"), b"x")
    assert list(shared.iterdir()) == []


def test_destination_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(RenderError, match="not a regular file"):
        write_atomic(FileSpec(tmp_path / "d"), b"x")


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="cannot open its directory"):
        write_atomic(FileSpec(tmp_path / "nope" / "f"), b"x")


def test_full_filesystem_keeps_the_old_file(tmpfs: Path) -> None:
    dest = tmpfs / "app.conf"
    write_atomic(FileSpec(dest), b"old contents\n")
    with pytest.raises(RenderError, match="No space left") as info:
        write_atomic(FileSpec(dest), b"n" * (256 * 1024))
    assert "previous file is unchanged" in str(info.value)
    assert dest.read_bytes() == b"old contents\n"
    assert _leftovers(tmpfs) == []


def test_read_only_filesystem_keeps_the_old_file(tmpfs: Path) -> None:
    dest = tmpfs / "app.conf"
    write_atomic(FileSpec(dest), b"old contents\n")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True, timeout=10)
    with pytest.raises(RenderError, match="Read-only file system"):
        write_atomic(FileSpec(dest), b"new contents\n")
    assert dest.read_bytes() == b"old contents\n"
    assert _leftovers(tmpfs) == []


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path is 0700 all the way up)."""
    path = Path(tempfile.mkdtemp(prefix="r5w-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_read_only_directory_for_an_unprivileged_writer(world_dir: Path) -> None:
    """Root ignores directory modes, so check the same path as a plain user via setpriv."""
    locked = world_dir / "locked"
    locked.mkdir()
    (locked / "app.conf").write_bytes(b"old\n")
    os.chmod(locked / "app.conf", 0o644)
    os.chmod(locked, 0o555)
    script = (
        "from pathlib import Path\n"
        "from secretd.errors import RenderError\n"
        "from secretd.render.writer import FileSpec, write_atomic\n"
        "try:\n"
        f"    write_atomic(FileSpec(Path({str(locked / 'app.conf')!r})), b'new')\n"
        "except RenderError as exc:\n"
        "    print(exc)\n"
    )
    python = Path(os.environ.get("VIRTUAL_ENV", ".venv")) / "bin" / "python"
    if not python.exists():
        python = Path(".venv/bin/python").resolve()
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(python), "-c", script],
        capture_output=True,
        timeout=30,
    )
    if done.returncode != 0 and b"setpriv" in done.stderr:
        pytest.skip(f"setpriv unusable: {done.stderr.decode().strip()}")
    message = done.stdout.decode()
    assert "cannot create a temporary file beside it (Permission denied)" in message, done.stderr
    assert (locked / "app.conf").read_bytes() == b"old\n"
    assert _leftovers(locked) == []


def _write_under_strace(dest: Path, inject: str) -> str:
    """Run write_atomic in a child with a syscall fault injected by strace."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    script = (
        "from pathlib import Path\n"
        "from secretd.errors import RenderError\n"
        "from secretd.render.writer import FileSpec, write_atomic\n"
        "try:\n"
        f"    print(write_atomic(FileSpec(Path({str(dest)!r})), b'new contents'))\n"
        "except RenderError as exc:\n"
        "    print(exc)\n"
    )
    python_c = [sys.executable, "-c", script]
    done = subprocess.run(
        ["strace", "-f", "-o", "/dev/null", "-e", "trace=fsync", "-e", inject, *python_c],
        capture_output=True,
        timeout=60,
    )
    if done.returncode != 0 and b"ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.decode().strip()}")
    return done.stdout.decode().strip()


def test_eio_on_fsync_keeps_the_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "app.conf"
    write_atomic(FileSpec(dest), b"old contents")
    message = _write_under_strace(dest, "inject=fsync:error=EIO:when=1")
    assert "cannot write (Input/output error)" in message
    assert "previous file is unchanged" in message
    assert dest.read_bytes() == b"old contents"
    assert _leftovers(tmp_path) == []


def test_eio_on_directory_fsync_is_reported(tmp_path: Path) -> None:
    dest = tmp_path / "app.conf"
    message = _write_under_strace(dest, "inject=fsync:error=EIO:when=2")
    assert "written, but the directory fsync failed (Input/output error)" in message
    assert dest.read_bytes() == b"new contents"
    assert _leftovers(tmp_path) == []
