"""`secretd store rekey`: re-wraps data keys only, and a rekey killed midway
leaves every version readable with the old or the new key."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import termios
import time
from pathlib import Path

import pytest

from secretd.model import SecretName
from secretd.store.keyfile import load_key_file
from secretd.store.layout import StoreLayout
from secretd.store.store import FileStore
from tests.integration.test_store_cli import SECRETD, fails, history, ok, put, seed

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ on Linux (absent from older Pythons' fcntl)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    ok("store", "init", root)
    return root


def key_ids_on_disk(store_dir: Path) -> list[set[str]]:
    """Per record: the set of key ids of its header MAC and its envelopes.

    Records only, as the store reads them: a kill in the middle of a write
    leaves a `.tmp-*` file behind, which the store ignores (and this test once
    tripped over when the kill landed there)."""
    out = []
    for path in StoreLayout(store_dir).record_files():
        doc = json.loads(path.read_bytes())
        out.append({doc["mac_key_id"]} | {v["key_id"] for v in doc["versions"]})
    return out


def all_values(store_dir: Path, names: list[str]) -> dict[str, bytes]:
    store = FileStore(store_dir)
    keyring = store.keyring(None)
    try:
        values = {}
        for name in names:
            for info in store.history(SecretName(name), keyring):
                version, _ = store.open_version(
                    SecretName(name), keyring, version_id=info.version_id
                )
                values[f"{name}@{info.version_id}"] = version.value.reveal()
        return values
    finally:
        keyring.close()


def test_rekey_rewraps_and_the_old_key_is_no_longer_needed(store_dir: Path, tmp_path: Path) -> None:
    put(store_dir, "db/app", b"one")
    put(store_dir, "db/app", b"two", "--stage", "pending")
    put(store_dir, "other", b"three")
    before = all_values(store_dir, ["db/app", "other"])
    ciphertexts = {
        p.name: [v["ciphertext"] for v in json.loads(p.read_bytes())["versions"]]
        for p in (store_dir / "secrets").iterdir()
    }
    new_key = tmp_path / "new.key"
    out = ok("store", "rekey", store_dir, "--key", new_key)
    assert "created key file" in out and "re-wrapped 2 secrets" in out
    new_id = load_key_file(new_key).key_id
    assert key_ids_on_disk(store_dir) == [{new_id}, {new_id}]
    meta = json.loads((store_dir / "store.json").read_text())
    assert meta == {"format": 1, "key_file": str(new_key), "old_key_files": []}
    # The values were not re-encrypted: only data keys were re-wrapped.
    after_ct = {
        p.name: [v["ciphertext"] for v in json.loads(p.read_bytes())["versions"]]
        for p in (store_dir / "secrets").iterdir()
    }
    assert after_ct == ciphertexts
    store_dir.with_name("store.key").rename(tmp_path / "retired.key")
    assert all_values(store_dir, ["db/app", "other"]) == before
    assert "0 secrets" in ok("store", "rekey", store_dir, "--key", new_key)  # idempotent


def test_rekey_with_explicit_old_key_and_wrong_old_key(store_dir: Path, tmp_path: Path) -> None:
    put(store_dir, "a", b"v")
    ok("store", "init", tmp_path / "unrelated")
    line = fails(
        1,
        "store",
        "rekey",
        store_dir,
        "--key",
        tmp_path / "n.key",
        "--old-key",
        tmp_path / "unrelated.key",
    )
    assert "rekey stopped" in line and "key id" in line and "run it again" in line
    out = ok(
        "store",
        "rekey",
        store_dir,
        "--key",
        tmp_path / "n.key",
        "--old-key",
        store_dir.with_name("store.key"),
    )
    assert "re-wrapped 1 secrets" in out
    assert [r["key_id"] for r in history(store_dir, "a")] == [
        load_key_file(tmp_path / "n.key").key_id
    ]


def _blocked_writing_to_a_pipe(pid: int) -> bool:
    """The process sleeps in a pipe write (between records, not in one)."""
    try:
        return "pipe_write" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def _wait_for_full_pipe(read_fd: int, size: int, proc: subprocess.Popen[bytes]) -> None:
    # A nearly full pipe alone is not enough: the line that filled it may have
    # fitted, and the kill would land in the next record's write (leaving its
    # temp file). Wait until rekey is actually blocked on its output.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        buffered = fcntl.ioctl(read_fd, termios.FIONREAD, b"\0\0\0\0")
        full = int.from_bytes(buffered, "little") >= size - 64
        if full and _blocked_writing_to_a_pipe(proc.pid):
            return
        assert proc.poll() is None, "rekey finished before it could be stopped midway"
        time.sleep(0.02)
    raise AssertionError("rekey never filled its output pipe")


def test_rekey_killed_midway_leaves_everything_readable(store_dir: Path, tmp_path: Path) -> None:
    names = [f"service-{i:03d}/database/password" for i in range(150)]
    for i, name in enumerate(names):
        seed(store_dir, name, f"value-{i}".encode())
    seed(store_dir, names[0], b"second version")
    before = all_values(store_dir, names)
    old_id = load_key_file(store_dir.with_name("store.key")).key_id
    new_key = tmp_path / "new.key"

    # rekey prints one line per re-wrapped record; a 4 KiB pipe nobody reads
    # blocks it after ~100 of the 150, mid-job, where we SIGKILL it.
    read_fd, write_fd = os.pipe()
    pipe_size = fcntl.fcntl(write_fd, F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen(
        [str(SECRETD), "store", "rekey", str(store_dir), "--key", str(new_key)],
        stdout=write_fd,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        _wait_for_full_pipe(read_fd, pipe_size, proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        os.close(read_fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    new_id = load_key_file(new_key).key_id
    states = key_ids_on_disk(store_dir)
    assert {old_id} in states and {new_id} in states, "not killed midway"
    assert all(s in ({old_id}, {new_id}) for s in states)
    assert not [p for p in (store_dir / "secrets").iterdir() if p.name.startswith(".")]
    # The metadata names both keys, so plain commands read the mixed store ...
    meta = json.loads((store_dir / "store.json").read_text())
    assert meta["key_file"] == str(new_key)
    assert meta["old_key_files"] == [str(store_dir.with_name("store.key"))]
    assert all_values(store_dir, names) == before
    # ... and running rekey again finishes the job, including the temp file a
    # kill in the middle of a record's write would have left.
    stale = store_dir / "secrets" / ".tmp-0123456789abcdef-half-written.secret"
    stale.write_bytes(b'{"versions": [')
    out = ok("store", "rekey", store_dir, "--key", new_key)
    assert "re-wrapped" in out
    assert not [p for p in (store_dir / "secrets").iterdir() if p.name.startswith(".")]
    assert all(s == {new_id} for s in key_ids_on_disk(store_dir))
    assert json.loads((store_dir / "store.json").read_text())["old_key_files"] == []
    assert all_values(store_dir, names) == before
