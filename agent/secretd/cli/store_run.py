"""What `secretd store ...` does (the parser is in store_cmds); imported only
when a store command runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import orjson

from secretd.cli.store_cmds import KEY_ENV
from secretd.errors import StoreError, TooLarge, UsageError
from secretd.model import SecretName, rfc3339
from secretd.store.keyfile import Keyring, StoreKey, create_key_file, load_key_file
from secretd.store.store import DEFAULT_MAX_SECRET_BYTES, FileStore


def _key_from_args(args: argparse.Namespace) -> Path | None:
    key: Path | None = args.key
    if key is None and os.environ.get(KEY_ENV):
        key = Path(os.environ[KEY_ENV])
    return key.absolute() if key is not None else None


@contextmanager
def _opened(
    args: argparse.Namespace,
    *,
    max_secret_bytes: int = DEFAULT_MAX_SECRET_BYTES,
) -> Iterator[tuple[FileStore, Keyring]]:
    store = FileStore(args.dir, max_secret_bytes=max_secret_bytes)
    keyring = store.keyring(_key_from_args(args), [p.absolute() for p in args.old_key])
    try:
        yield store, keyring
    finally:
        keyring.close()


def run_init(args: argparse.Namespace) -> int:
    root: Path = args.dir.absolute()
    key_path = _key_from_args(args) or root.with_name(root.name + ".key")
    _store, key, created = FileStore.init(root, key_path)
    try:
        what = "created" if created else "using existing"
        print(f"initialised store {root}; {what} key file {key_path} (key id {key.key_id})")
    finally:
        key.wipe()
    return 0


def _max_secret_bytes(config: Path | None) -> int:
    if config is None:
        return DEFAULT_MAX_SECRET_BYTES
    from secretd.config import load_config  # pydantic is slow to import; only when asked

    return load_config(config).limits.max_secret_bytes


def _read_value(source: Path | None, limit: int) -> bytes:
    if source is None:
        if sys.stdin.isatty():
            print("reading the value from stdin; end it with Ctrl-D", file=sys.stderr)
        data = sys.stdin.buffer.read(limit + 1)
        what = "the value on stdin"
    else:
        try:
            with source.open("rb") as handle:
                data = handle.read(limit + 1)
        except OSError as exc:
            raise UsageError(f"value file {source}: cannot read ({exc.strerror})") from None
        what = f"value file {source}"
    if len(data) > limit:
        raise TooLarge(f"{what} is larger than limits.max_secret_bytes ({limit} bytes)")
    if not data:
        raise UsageError(f"{what} is empty; a secret needs a value")
    return data


def run_put(args: argparse.Namespace) -> int:
    name = SecretName(args.name)
    limit = _max_secret_bytes(args.config)
    value = _read_value(args.file, limit)
    with _opened(args, max_secret_bytes=limit) as (store, keyring):
        version_id = store.put(name, value, keyring, stage=args.stage)
    del value
    print(version_id)
    return 0


def run_promote(args: argparse.Namespace) -> int:
    name = SecretName(args.name)
    with _opened(args) as (store, keyring):
        changed = store.promote(name, args.version, keyring)
    state = "is now current" if changed else "was already current"
    print(f"secret {name}: version {args.version} {state}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    store = FileStore(args.dir)
    store.layout.require_store()
    names, problems = store.names()
    for name in names:
        print(name)
    for problem in problems:
        print(f"secretd: {problem}", file=sys.stderr)
    return 1 if problems else 0


def run_history(args: argparse.Namespace) -> int:
    name = SecretName(args.name)
    with _opened(args) as (store, keyring):
        rows = store.history(name, keyring)
    if args.json:
        doc = [
            {
                "version_id": r.version_id,
                "created_at": rfc3339(r.created_at),
                "stages": sorted(r.stages),
                "key_id": r.key_id,
            }
            for r in rows
        ]
        sys.stdout.write(orjson.dumps({"name": name, "versions": doc}).decode() + "\n")
        return 0
    print(f"{'VERSION':<34} {'CREATED':<26} {'KEY ID':<18} STAGES")
    for r in rows:
        stages = ",".join(sorted(r.stages)) or "-"
        print(f"{r.version_id:<34} {rfc3339(r.created_at):<26} {r.key_id:<18} {stages}")
    return 0


def _load_or_create(path: Path) -> tuple[StoreKey, bool]:
    if path.exists() or path.is_symlink():
        return load_key_file(path), False
    return create_key_file(path), True


def _old_keys(store: FileStore, explicit: Sequence[Path], new_path: Path) -> list[StoreKey]:
    meta = store.meta()
    paths = list(explicit) if explicit else ([meta.key_file] if meta.key_file else [])
    paths += meta.old_key_files  # left behind by an interrupted rekey
    unique = {p.absolute(): None for p in paths if p.absolute() != new_path}
    return [load_key_file(p) for p in unique]


def run_rekey(args: argparse.Namespace) -> int:
    store = FileStore(args.dir)
    store.layout.require_store()
    new_path: Path = args.key.absolute()
    old = _old_keys(store, args.old_key, new_path)
    new_key, created = _load_or_create(new_path)
    keyring = Keyring(new_key, old)
    if created:
        print(f"created key file {new_path} (key id {new_key.key_id})", flush=True)

    def progress(name: SecretName) -> None:
        print(f"rekeyed {name}", flush=True)

    try:
        done, skipped = store.rekey(keyring, new_key, new_path, progress)
    except StoreError as exc:
        raise type(exc)(f"rekey stopped: {exc.message}; run it again to finish") from None
    finally:
        keyring.close()
    print(f"re-wrapped {done} secrets under key id {new_key.key_id} ({skipped} already were)")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    name = SecretName(args.name)
    store = FileStore(args.dir)
    store.layout.require_store()
    if not store.delete(name):
        print(f"secretd: secret {name} is not in store {args.dir}", file=sys.stderr)
        return 1
    print(f"deleted {name}")
    return 0
