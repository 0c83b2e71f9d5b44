"""`secretd store ...` through the real executable, on real files.

Values are checked by decrypting with the store's own API (the CLI never prints
them); everything else goes through `.venv/bin/secretd` in a subprocess.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from secretd.errors import IntegrityError, StoreError, UnknownKeyId
from secretd.model import SecretName
from secretd.store.store import FileStore

SECRETD = Path(sys.executable).with_name("secretd")
CANARY = b"canary-Value-7f3a9c-do-not-leak"


def run(
    *args: str | Path, stdin: bytes | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "SECRETD_KEY_FILE"}
    full_env.update(env or {})
    proc = subprocess.run(
        [str(SECRETD), *map(str, args)],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=full_env,
        timeout=30,
        check=False,
    )
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


def ok(*args: str | Path, stdin: bytes | None = None, env: Mapping[str, str] | None = None) -> str:
    proc = run(*args, stdin=stdin, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def fails(
    code: int, *args: str | Path, stdin: bytes | None = None, env: Mapping[str, str] | None = None
) -> str:
    """Run a command expected to fail with `code` and one clear stderr line."""
    proc = run(*args, stdin=stdin, env=env)
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("secretd: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def value_of(store_dir: Path, name: str, **where: str) -> bytes:
    store = FileStore(store_dir)
    keyring = store.keyring(None)
    try:
        version, _gen = store.open_version(SecretName(name), keyring, **where)  # type: ignore[arg-type]
        return version.value.reveal()
    finally:
        keyring.close()


def history(store_dir: Path, name: str, *extra: str) -> list[dict[str, object]]:
    doc = json.loads(ok("store", "history", store_dir, name, "--json", *extra))
    assert doc["name"] == name
    versions: list[dict[str, object]] = doc["versions"]
    return versions


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    out = ok("store", "init", root)
    assert "created key file" in out
    return root


def seed(store_dir: Path, name: str, value: bytes) -> str:
    """Write a version in-process (quicker than the CLI where the CLI is not under test)."""
    store = FileStore(store_dir)
    keyring = store.keyring(None)
    try:
        return store.put(SecretName(name), value, keyring)
    finally:
        keyring.close()


def put(store_dir: Path, name: str, value: bytes, *extra: str | Path) -> str:
    return ok("store", "put", store_dir, name, *extra, stdin=value).strip()


# -- init and keys ------------------------------------------------------------


def test_init_creates_the_store_and_a_0600_key(tmp_path: Path) -> None:
    root = tmp_path / "s"
    ok("store", "init", root)
    key = tmp_path / "s.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 32
    meta = json.loads((root / "store.json").read_text())
    assert meta["key_file"] == str(key)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_init_twice_is_refused(store_dir: Path) -> None:
    assert "already a secretd store" in fails(1, "store", "init", store_dir)


def test_init_takes_an_empty_directory_and_refuses_a_used_one(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o750)
    ok("store", "init", empty)
    assert (empty / "store.json").is_file()
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    assert "not empty" in fails(1, "store", "init", used)
    assert sorted(p.name for p in used.iterdir()) == ["notes.txt"]


def test_init_uses_an_existing_key(tmp_path: Path) -> None:
    key = tmp_path / "given.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    out = ok("store", "init", tmp_path / "s", "--key", key)
    assert "using existing key file" in out
    assert key.read_bytes() != b""


@pytest.mark.parametrize(("mode", "says"), [(0o644, "lets others read"), (0o620, "write")])
def test_loose_key_modes_are_refused(store_dir: Path, mode: int, says: str) -> None:
    key = store_dir.with_name("store.key")
    key.chmod(mode)
    line = fails(1, "store", "put", store_dir, "a", stdin=b"v")
    assert says in line and str(key) in line


def test_symlinked_key_in_a_directory_others_can_write_is_refused(
    store_dir: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    link = shared / "link.key"
    link.symlink_to(store_dir.with_name("store.key"))
    assert "symlink" in fails(1, "store", "put", store_dir, "a", "--key", link, stdin=b"v")


def test_key_from_env_is_used_and_a_wrong_key_is_an_unknown_id(
    store_dir: Path, tmp_path: Path
) -> None:
    put(store_dir, "db/app", b"v1")
    other = tmp_path / "other"
    ok("store", "init", other)
    env = {"SECRETD_KEY_FILE": str(tmp_path / "other.key")}
    line = fails(1, "store", "history", store_dir, "db/app", env=env)
    assert "db/app" in line and "key id" in line
    line = fails(
        1, "store", "put", store_dir, "db/app", "--key", tmp_path / "other.key", stdin=b"x"
    )
    assert "key id" in line
    assert len(history(store_dir, "db/app")) == 1


# -- put, promote, list, history -------------------------------------------------


def test_put_promote_history_round_trip(store_dir: Path, tmp_path: Path) -> None:
    first = put(store_dir, "db/app", b"one")
    value_file = tmp_path / "v"
    value_file.write_bytes(b"two\x00\xff binary")
    second = put(store_dir, "db/app", b"", "--file", value_file)
    pending = put(store_dir, "db/app", b"three", "--stage", "pending")
    rows = {r["version_id"]: r["stages"] for r in history(store_dir, "db/app")}
    assert rows == {first: ["previous"], second: ["current"], pending: ["pending"]}
    assert value_of(store_dir, "db/app") == b"two\x00\xff binary"
    assert value_of(store_dir, "db/app", stage="pending") == b"three"
    assert "is now current" in ok("store", "promote", store_dir, "db/app", pending)
    rows = {r["version_id"]: r["stages"] for r in history(store_dir, "db/app")}
    assert rows == {first: [], second: ["previous"], pending: ["current"]}
    assert value_of(store_dir, "db/app") == b"three"
    assert value_of(store_dir, "db/app", version_id=first) == b"one"
    assert "already current" in ok("store", "promote", store_dir, "db/app", pending)


def test_table_history_and_list(store_dir: Path) -> None:
    put(store_dir, "b/x", b"1")
    put(store_dir, "a", b"2")
    assert ok("store", "list", store_dir).split() == ["a", "b/x"]
    table = ok("store", "history", store_dir, "a").splitlines()
    assert table[0].split() == ["VERSION", "CREATED", "KEY", "ID", "STAGES"]
    assert table[1].split()[-1] == "current"


def test_promote_and_history_of_unknowns(store_dir: Path) -> None:
    put(store_dir, "db/app", b"1")
    assert "no version 'nope'" in fails(1, "store", "promote", store_dir, "db/app", "nope")
    assert "'db/none' is not in the store" in fails(1, "store", "history", store_dir, "db/none")


@pytest.mark.parametrize("name", ["../etc", "/abs", "a//b", "a/./b", "bad name", "x" * 513])
def test_invalid_names_are_usage_errors(store_dir: Path, name: str) -> None:
    line = fails(2, "store", "put", store_dir, name, stdin=b"v")
    assert "invalid secret name" in line
    assert name not in line  # the raw input is never echoed


def test_size_limits(store_dir: Path, tmp_path: Path) -> None:
    assert "max_secret_bytes (65536" in fails(
        1, "store", "put", store_dir, "big", stdin=b"x" * 65537
    )
    put(store_dir, "big", b"x" * 65536)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[limits]\nmax_secret_bytes = 16\n[backends.l]\ntype = "file"\npath = "{store_dir}"\n'
    )
    assert "16 bytes" in fails(1, "store", "put", store_dir, "s", "-c", config, stdin=b"x" * 17)
    put(store_dir, "s", b"x" * 16, "-c", config)
    assert "empty" in fails(2, "store", "put", store_dir, "e", stdin=b"")


def test_bad_stage_and_missing_store(store_dir: Path, tmp_path: Path) -> None:
    assert "previous" in fails(2, "store", "put", store_dir, "a", "--stage", "previous", stdin=b"v")
    assert "first version must be current" in fails(
        2, "store", "put", store_dir, "new", "--stage", "pending", stdin=b"v"
    )
    assert "not a secretd store" in fails(1, "store", "list", tmp_path / "nothing")


def test_help_everywhere() -> None:
    for cmd in ("init", "put", "promote", "list", "history", "rekey"):
        assert "usage: secretd store" in ok("store", cmd, "--help")


def test_concurrent_puts_all_land(store_dir: Path) -> None:
    procs = [
        subprocess.Popen(
            [str(SECRETD), "store", "put", str(store_dir), "shared"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(8)
    ]
    ids = set()
    for i, proc in enumerate(procs):
        out, err = proc.communicate(f"value-{i}".encode(), timeout=30)
        assert proc.returncode == 0, err
        ids.add(out.decode().strip())
    rows = history(store_dir, "shared")
    assert {r["version_id"] for r in rows} == ids
    assert len(ids) == 8
    assert sum("current" in r["stages"] for r in rows) == 1  # type: ignore[operator]
    values = {value_of(store_dir, "shared", version_id=vid) for vid in ids}
    assert values == {f"value-{i}".encode() for i in range(8)}


def test_files_follow_the_directory_owner_group_and_mode(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    os.chown(root, 4242, 4343)  # as deployed: owned by the agent's user and group
    root.chmod(0o750)
    key = tmp_path / "k"
    ok("store", "init", root, "--key", key)
    put(root, "a", b"v", "--key", key)
    record = next((root / "secrets").iterdir())
    st = record.stat()
    secrets_st = (root / "secrets").stat()
    if os.geteuid() == 0:
        for path in (record, root / "secrets", root / "store.json", root / ".lock"):
            owner = path.stat()
            assert (owner.st_uid, owner.st_gid) == (4242, 4343), path
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert stat.S_IMODE(secrets_st.st_mode) == 0o750


# -- secrecy and tampering -------------------------------------------------------


def _b64_forms(value: bytes) -> list[bytes]:
    """Base64 of `value` at each of the three alignments it could sit at."""
    forms = []
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + value)
        start = (pad * 4 + 2) // 3 + 1  # skip characters that mix in the padding bytes
        forms.append(encoded[start : len(encoded) - 4])
    return forms


def test_no_plaintext_nor_base64_in_the_store(store_dir: Path) -> None:
    put(store_dir, "db/app", CANARY)
    put(store_dir, "db/app", CANARY + b"-2", "--stage", "pending")
    put(store_dir, "json", b'{"password": "' + CANARY + b'"}')
    listing = ok("store", "list", store_dir) + ok("store", "history", store_dir, "db/app")
    assert CANARY.decode() not in listing
    needles = [CANARY, CANARY.hex().encode(), *_b64_forms(CANARY)]
    for path in store_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in needles:
                assert needle not in data, (path, needle)


def _record(store_dir: Path, name: str) -> Path:
    return FileStore(store_dir).layout.record_path(name)


def _edit_json(path: Path, change: object) -> None:
    doc = json.loads(path.read_bytes())
    change(doc)  # type: ignore[operator]
    path.write_text(json.dumps(doc))


def _flip_b64(field: str, byte: int) -> object:
    def change(doc: dict[str, list[dict[str, str]]]) -> None:
        entry = doc["versions"][-1]
        raw = bytearray(base64.b64decode(entry[field]))
        raw[byte] ^= 0x01
        entry[field] = base64.b64encode(bytes(raw)).decode()

    return change


TAMPERS = {
    "ciphertext bit": lambda p: _edit_json(p, _flip_b64("ciphertext", 0)),
    "tag bit": lambda p: _edit_json(p, _flip_b64("ciphertext", -1)),
    "nonce bit": lambda p: _edit_json(p, _flip_b64("nonce", 3)),
    "wrapped key bit": lambda p: _edit_json(p, _flip_b64("wrapped_key", 20)),
    "wrap tag bit": lambda p: _edit_json(p, _flip_b64("wrapped_key", -1)),
    "header stage moved": lambda p: _edit_json(
        p, lambda d: d["stages"].update(current=d["stages"]["previous"])
    ),
    "header generation": lambda p: _edit_json(p, lambda d: d.update(generation=1)),
    "unknown key id": lambda p: _edit_json(p, lambda d: d.update(mac_key_id="00" * 8)),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:100]),
    "empty": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_every_tamper_is_a_clear_error_without_plaintext(store_dir: Path, tamper: str) -> None:
    seed(store_dir, "db/app", CANARY + b"-old")
    seed(store_dir, "db/app", CANARY)
    path = _record(store_dir, "db/app")
    TAMPERS[tamper](path)
    tampered = path.read_bytes()
    line = fails(1, "store", "history", store_dir, "db/app")
    assert "db/app" in line and str(path) in line
    assert CANARY.decode() not in line
    # A write on top of a tampered record is refused and leaves it as it was.
    fails(1, "store", "put", store_dir, "db/app", stdin=b"new")
    assert path.read_bytes() == tampered
    with pytest.raises((IntegrityError, UnknownKeyId)):
        value_of(store_dir, "db/app")


def test_blob_moved_to_another_name_is_refused(store_dir: Path) -> None:
    put(store_dir, "db/app", CANARY)
    put(store_dir, "db/other", b"other")
    _record(store_dir, "db/other").write_bytes(_record(store_dir, "db/app").read_bytes())
    line = fails(1, "store", "history", store_dir, "db/other")
    assert "different secret" in line
    assert "different secret" in run("store", "list", store_dir).stderr
    with pytest.raises(IntegrityError):
        value_of(store_dir, "db/other")


def test_version_entry_moved_between_records_is_refused(store_dir: Path) -> None:
    put(store_dir, "a", CANARY)
    put(store_dir, "b", b"b")
    a_doc = json.loads(_record(store_dir, "a").read_bytes())
    _edit_json(_record(store_dir, "b"), lambda d: d["versions"].append(a_doc["versions"][0]))
    assert "failed to verify" in fails(1, "store", "history", store_dir, "b")


def test_symlinked_record_is_refused(store_dir: Path, tmp_path: Path) -> None:
    put(store_dir, "db/app", b"v")
    path = _record(store_dir, "db/app")
    moved = tmp_path / "elsewhere"
    path.rename(moved)
    path.symlink_to(moved)
    assert "symlink" in fails(1, "store", "history", store_dir, "db/app")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, to run out of space for real."""
    mount = tmp_path / "small"
    mount.mkdir()
    argv = ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)]
    if subprocess.run(argv, capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_is_a_clear_error_and_keeps_the_old_record(
    small_fs: Path, tmp_path: Path
) -> None:
    root = small_fs / "store"
    key = tmp_path / "k"
    ok("store", "init", root, "--key", key)
    seed(root, "small", b"still here")
    for _attempt in range(40):  # each version of "big" makes its record ~80 KiB larger
        try:
            seed(root, "big", os.urandom(30000))
        except StoreError:
            break
    else:
        raise AssertionError("the tmpfs never filled up")
    big_before = _record(root, "big").read_bytes()
    line = fails(1, "store", "put", root, "big", "--key", key, stdin=b"x" * 30000)
    assert "No space left on device" in line and str(root / "secrets") in line
    assert _record(root, "big").read_bytes() == big_before
    assert value_of(root, "small") == b"still here"
    assert not [p for p in (root / "secrets").iterdir() if p.name.startswith(".")]
