"""The file backend on real store directories: opening, error mapping, tampering,
rollback, listing and the watcher (fed by the real `secretd store put`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from secretd.backends.file import FileBackend, open_backend
from secretd.backends.file_watch import WatchTuning
from secretd.config import FileBackendConfig
from secretd.errors import (
    BackendTimeout,
    BackendUnavailable,
    BadBackendAnswer,
    ConfigError,
    NotFound,
)
from secretd.model import SecretName
from secretd.store.store import FileStore
from tests.fakes.store_seeder import StoreSeeder, init_store
from tests.integration.test_store_cli import SECRETD
from tests.servers.second_user import (
    OTHER_USER,
    TestUser,
    can_switch_users,
    ensure_test_user,
    run_as,
    run_python_as,
)

CANARY = b"canary-file-backend-51c0"
WATCH_BOUND = 5.0
NAME = SecretName("db/app")


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    init_store(root)
    return root


@pytest.fixture
def seeder(store_dir: Path) -> StoreSeeder:
    return StoreSeeder(store_dir)


@pytest.fixture
async def backend(store_dir: Path) -> AsyncIterator[FileBackend]:
    opened = await open_backend(
        "local", FileBackendConfig(type="file", path=store_dir), max_secret_bytes=65536
    )
    yield opened
    await opened.aclose()


# -- opening ------------------------------------------------------------------


async def test_open_refuses_a_directory_that_is_not_a_store(tmp_path: Path) -> None:
    config = FileBackendConfig(type="file", path=tmp_path)
    with pytest.raises(ConfigError, match=r"backend 'local'.*not a secretd store"):
        await open_backend("local", config, max_secret_bytes=1024)


async def test_open_refuses_a_loose_key(store_dir: Path) -> None:
    store_dir.with_name("store.key").chmod(0o644)
    config = FileBackendConfig(type="file", path=store_dir)
    with pytest.raises(ConfigError, match="lets others read"):
        await open_backend("local", config, max_secret_bytes=1024)


async def test_open_refuses_a_world_writable_store(store_dir: Path) -> None:
    (store_dir / "secrets").chmod(0o777)
    config = FileBackendConfig(type="file", path=store_dir)
    with pytest.raises(ConfigError, match="others cannot write"):
        await open_backend("local", config, max_secret_bytes=1024)


async def test_config_keys_override_and_extend_the_recorded_key(
    store_dir: Path, tmp_path: Path, seeder: StoreSeeder
) -> None:
    await seeder.put(NAME, b"sealed with the first key")
    first_key = store_dir.with_name("store.key").rename(tmp_path / "first.key")
    other_root = tmp_path / "other"
    other_key = init_store(other_root)
    config = FileBackendConfig(type="file", path=store_dir, key_file=other_key)
    only_other = await open_backend("l", config, max_secret_bytes=1024)
    with pytest.raises(BadBackendAnswer, match="key id"):
        await only_other.fetch(NAME)
    await only_other.aclose()
    config = FileBackendConfig(
        type="file",
        path=store_dir,
        key_file=other_key,
        old_key_files=(first_key,),
    )
    both = await open_backend("l", config, max_secret_bytes=1024)
    assert (await both.fetch(NAME)).version.value.reveal() == b"sealed with the first key"
    await both.aclose()


# -- error mapping --------------------------------------------------------------


async def test_tampered_record_is_a_bad_answer_and_recovers_after_a_good_put(
    backend: FileBackend, seeder: StoreSeeder, store_dir: Path
) -> None:
    await seeder.put(NAME, CANARY)
    path = FileStore(store_dir).layout.record_path(NAME)
    good = path.read_bytes()
    doc = json.loads(good)
    sealed = doc["versions"][0]["ciphertext"]
    # Another first character, always: replacing an "A" with "A" tampered nothing
    # (this test failed once in 64 runs when it did that).
    doc["versions"][0]["ciphertext"] = ("B" if sealed[0] == "A" else "A") + sealed[1:]
    path.write_text(json.dumps(doc))
    with pytest.raises(BadBackendAnswer) as caught:
        await backend.fetch(NAME)
    assert "db/app" in str(caught.value) and CANARY.decode() not in str(caught.value)
    with pytest.raises(BadBackendAnswer):
        await backend.current_versions([NAME])
    path.write_bytes(good)
    assert (await backend.fetch(NAME)).version.value.reveal() == CANARY


async def test_record_replaced_by_a_directory_is_a_bad_answer(
    backend: FileBackend, store_dir: Path
) -> None:
    FileStore(store_dir).layout.record_path(NAME).mkdir()
    with pytest.raises(BadBackendAnswer, match="not a regular file"):
        await backend.fetch(NAME)


async def test_os_errors_are_backend_unavailable(backend: FileBackend, store_dir: Path) -> None:
    shutil.rmtree(store_dir / "secrets")
    (store_dir / "secrets").write_bytes(b"not a directory")
    with pytest.raises(BackendUnavailable, match="file backend 'local'"):
        await backend.fetch(NAME)


async def test_timeout_is_backend_timeout(store_dir: Path, seeder: StoreSeeder) -> None:
    await seeder.put(NAME, b"v")
    store = FileStore(store_dir)
    slow = FileBackend("slow", store, store.keyring(None), timeout=0.0)
    with pytest.raises(BackendTimeout, match="took longer"):
        await slow.fetch(NAME)
    await slow.aclose()


async def test_closed_backend_is_unavailable(backend: FileBackend, seeder: StoreSeeder) -> None:
    await seeder.put(NAME, b"v")
    await backend.aclose()
    with pytest.raises(BackendUnavailable, match="closed"):
        await backend.fetch(NAME)


async def test_an_older_file_put_back_is_refused(
    backend: FileBackend, seeder: StoreSeeder, store_dir: Path
) -> None:
    await seeder.put(NAME, b"old")
    path = FileStore(store_dir).layout.record_path(NAME)
    old_file = path.read_bytes()
    await seeder.put(NAME, b"new")
    assert (await backend.fetch(NAME)).version.value.reveal() == b"new"
    first = json.loads(old_file)["generation"]
    path.write_bytes(old_file)  # authentic, but a replay of the first generation
    with pytest.raises(BadBackendAnswer, match=f"went back from generation {first + 1} to {first}"):
        await backend.fetch(NAME)


async def test_missing_names_and_stages(backend: FileBackend, seeder: StoreSeeder) -> None:
    with pytest.raises(NotFound, match="not in the store"):
        await backend.fetch(NAME)
    await seeder.put(NAME, b"v")
    with pytest.raises(NotFound, match="stage 'pending'"):
        await backend.fetch(NAME, stage="pending")


# -- listing ----------------------------------------------------------------------


async def test_list_skips_broken_records(
    backend: FileBackend, seeder: StoreSeeder, store_dir: Path
) -> None:
    for name in ("a/one", "a/two", "b"):
        await seeder.put(name, b"v")
    (store_dir / "secrets" / ("f" * 64 + ".secret")).write_bytes(b"{broken")
    (store_dir / "secrets" / ".tmp-123-x.secret").write_bytes(b"half written")
    assert list(await backend.list_names()) == ["a/one", "a/two", "b"]
    assert list(await backend.list_names("a/")) == ["a/one", "a/two"]


# -- watching -----------------------------------------------------------------------


async def _collect(backend: FileBackend, into: list[SecretName]) -> None:
    async for name in backend.changes():
        into.append(name)


async def _wait_for(seen: list[SecretName], name: str) -> None:
    async with asyncio.timeout(WATCH_BOUND):
        while name not in seen:
            await asyncio.sleep(0.01)


async def _put_with_cli(store_dir: Path, name: str, value: bytes) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(SECRETD),
        "store",
        "put",
        str(store_dir),
        name,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _out, err = await proc.communicate(value)
    assert proc.returncode == 0, err


@contextlib.asynccontextmanager
async def watching(backend: FileBackend, seeder: StoreSeeder) -> AsyncIterator[list[SecretName]]:
    """Start consuming changes() and return once the watcher demonstrably runs."""
    seen: list[SecretName] = []
    task = asyncio.create_task(_collect(backend, seen))
    try:
        async with asyncio.timeout(WATCH_BOUND):
            while "warm-up" not in seen:
                await seeder.put("warm-up", b"v")
                await asyncio.sleep(0.1)
        yield seen
    finally:
        await backend.aclose()
        async with asyncio.timeout(WATCH_BOUND):  # stopping is prompt, never hangs
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_watch_reports_a_cli_put_and_a_removal(
    backend: FileBackend, seeder: StoreSeeder, store_dir: Path
) -> None:
    await seeder.put("gone", b"v")
    async with watching(backend, seeder) as seen:
        await _put_with_cli(store_dir, "db/app", b"rotated")
        await _wait_for(seen, "db/app")
        await seeder.delete("gone")
        await _wait_for(seen, "gone")


async def test_watch_by_polling_also_reports(store_dir: Path, seeder: StoreSeeder) -> None:
    store = FileStore(store_dir)
    polled = FileBackend(
        "polled", store, store.keyring(None), tuning=WatchTuning(force_polling=True)
    )
    async with watching(polled, seeder) as seen:
        await seeder.put("via/poll", b"v")
        await _wait_for(seen, "via/poll")


async def test_watch_survives_a_tampered_write_and_reports_the_name(
    backend: FileBackend, seeder: StoreSeeder, store_dir: Path
) -> None:
    await seeder.put(NAME, b"v")
    path = FileStore(store_dir).layout.record_path(NAME)
    async with watching(backend, seeder) as seen:
        path.write_bytes(b"garbage")  # the cache re-reads it, fails, keeps the last good value
        await _wait_for(seen, NAME)
        await seeder.put("after", b"v")
        await _wait_for(seen, "after")


async def test_a_running_backend_learns_the_key_of_a_rekey(
    backend: FileBackend, seeder: StoreSeeder, store_dir: Path, tmp_path: Path
) -> None:
    await seeder.put(NAME, b"survives rekey")
    assert (await backend.fetch(NAME)).version.value.reveal() == b"survives rekey"
    proc = await asyncio.create_subprocess_exec(
        str(SECRETD),
        "store",
        "rekey",
        str(store_dir),
        "--key",
        str(tmp_path / "new.key"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _out, err = await proc.communicate()
    assert proc.returncode == 0, err
    store_dir.with_name("store.key").unlink()  # the old key is gone for good
    await asyncio.sleep(1.1)  # key learning is throttled to once a second
    fetched = await backend.fetch(NAME)
    assert fetched.version.value.reveal() == b"survives rekey"
    assert list(await backend.current_versions([NAME])) == [NAME]


async def test_unknown_key_ids_are_still_refused_after_learning(
    backend: FileBackend, store_dir: Path, tmp_path: Path
) -> None:
    other_root = tmp_path / "other"
    init_store(other_root)
    foreign = StoreSeeder(other_root)
    await foreign.put(NAME, b"sealed elsewhere")
    target = FileStore(store_dir).layout.record_path(NAME)
    target.write_bytes(FileStore(other_root).layout.record_path(NAME).read_bytes())
    with pytest.raises(BadBackendAnswer, match="key id"):
        await backend.fetch(NAME)


READ_AS_AGENT = """
import asyncio, sys
from pathlib import Path
from secretd.backends.file import open_backend
from secretd.config import FileBackendConfig
from secretd.errors import SecretdError

async def main() -> None:
    config = FileBackendConfig(type="file", path=Path(sys.argv[1]))
    try:
        backend = await open_backend("local", config, max_secret_bytes=1024)
    except SecretdError as exc:
        print("refused:", exc)
        return
    fetched = await backend.fetch("db/app")
    print("read:", fetched.version.value.reveal().decode())
    await backend.aclose()

asyncio.run(main())
"""


@pytest.fixture
def user_owned_base() -> Iterator[tuple[Path, TestUser]]:
    if not can_switch_users():
        pytest.skip("needs root and setpriv to act as the agent's user")
    user = ensure_test_user()
    base = Path(tempfile.mkdtemp(prefix="secretd-agent-", dir="/tmp"))
    os.chown(base, user.uid, user.gid)
    base.chmod(0o700)
    try:
        yield base, user
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_agent_user_manages_and_reads_its_store_and_others_cannot(
    user_owned_base: tuple[Path, TestUser],
) -> None:
    base, user = user_owned_base
    store_dir = base / "store"
    for argv, stdin in (
        (["store", "init", str(store_dir)], b""),
        (["store", "put", str(store_dir), "db/app"], b"agent-readable"),
    ):
        proc = run_as(user, [str(SECRETD), *argv], input=stdin)
        assert proc.returncode == 0, proc.stderr
    assert FileStore(store_dir).layout.record_path("db/app").stat().st_uid == user.uid
    proc = run_python_as(user, READ_AS_AGENT, str(store_dir))
    assert proc.stdout.decode().strip() == "read: agent-readable", proc.stderr
    # Root made the base dir reachable only by the agent's user; widen it and a
    # different user still cannot use the key or the store.
    base.chmod(0o755)
    other = ensure_test_user(OTHER_USER)
    proc = run_python_as(other, READ_AS_AGENT, str(store_dir))
    assert proc.stdout.decode().startswith("refused:"), (proc.stdout, proc.stderr)
    assert b"agent-readable" not in proc.stdout + proc.stderr


async def test_cancelling_one_watcher_leaves_the_backend_and_other_watchers_working(
    backend: FileBackend, seeder: StoreSeeder
) -> None:
    await seeder.put(NAME, b"v")
    first: list[SecretName] = []
    doomed = asyncio.create_task(_collect(backend, first))
    async with asyncio.timeout(WATCH_BOUND):
        while "warm-up" not in first:
            await seeder.put("warm-up", b"v")
            await asyncio.sleep(0.1)
    doomed.cancel()
    async with asyncio.timeout(WATCH_BOUND):
        with contextlib.suppress(asyncio.CancelledError):
            await doomed
    assert (await backend.fetch(NAME)).version.value.reveal() == b"v"
    async with watching(backend, seeder) as seen:
        await seeder.put("later", b"v")
        await _wait_for(seen, "later")


async def test_a_write_right_after_changes_starts_is_reported(
    backend: FileBackend, seeder: StoreSeeder
) -> None:
    await seeder.put("early", b"v1")
    changes = backend.changes()
    first = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0)  # one step: the generator has set up its directory watch
    keyring = seeder.store.keyring(None)
    seeder.store.put(SecretName("early"), b"v2", keyring)  # blocking on purpose: no yield
    keyring.close()
    async with asyncio.timeout(WATCH_BOUND):
        assert await first == "early"
    await backend.aclose()
    await changes.aclose()  # type: ignore[attr-defined]
