"""`secretd store init|put|promote|list|history|rekey`: manage an encrypted file store.

Commands that need the key take `--key FILE`, else `$SECRETD_KEY_FILE`, else the
key file recorded by `store init` (or the last `rekey`). Values come from
`--file` or stdin and are never printed: `list` and `history` show names,
version ids, stages and key ids only.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import orjson

from secretd.errors import StoreError, TooLarge, UsageError
from secretd.model import SecretName, rfc3339
from secretd.store.keyfile import Keyring, StoreKey, create_key_file, load_key_file
from secretd.store.store import DEFAULT_MAX_SECRET_BYTES, FileStore

KEY_ENV = "SECRETD_KEY_FILE"


def _reporting_os_errors(
    run: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """A failed read or write of a store file is one clear line, not an internal error."""

    @functools.wraps(run)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except OSError as exc:
            where = exc.filename or args.dir
            raise StoreError(f"{where}: {exc.strerror or type(exc).__name__}") from None

    return wrapped


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    store = sub.add_parser(
        "store",
        help="manage an envelope-encrypted file store",
        description="Manage an envelope-encrypted file store (AES-256-GCM, one data key per "
        "version). The key is --key FILE, else $SECRETD_KEY_FILE, else the one `init` recorded.",
    )
    cmds = store.add_subparsers(dest="store_command", required=True, parser_class=type(store))

    init = cmds.add_parser("init", help="create a store and, if absent, its key file (0600)")
    init.add_argument("dir", type=Path, metavar="DIR")
    init.add_argument("--key", type=Path, metavar="FILE", help="key file (default: DIR.key)")
    init.set_defaults(run=_reporting_os_errors(run_init))

    put = cmds.add_parser("put", help="add a version (value from --file or stdin)")
    put.add_argument("dir", type=Path, metavar="DIR")
    put.add_argument("name", metavar="NAME")
    put.add_argument("--file", type=Path, metavar="F", help="read the value from F, not stdin")
    put.add_argument(
        "--stage",
        metavar="S",
        help="pending: stage it without making it current; "
        "any other label: attach it, and make the version current",
    )
    put.add_argument("-c", "--config", type=Path, metavar="CONFIG", help="take limits from it")
    _key_options(put)
    put.set_defaults(run=_reporting_os_errors(run_put))

    promote = cmds.add_parser("promote", help="make VERSION current (rotation finish step)")
    promote.add_argument("dir", type=Path, metavar="DIR")
    promote.add_argument("name", metavar="NAME")
    promote.add_argument("version", metavar="VERSION")
    _key_options(promote)
    promote.set_defaults(run=_reporting_os_errors(run_promote))

    listing = cmds.add_parser("list", help="the names in the store (never values)")
    listing.add_argument("dir", type=Path, metavar="DIR")
    listing.set_defaults(run=_reporting_os_errors(run_list))

    history = cmds.add_parser("history", help="versions of NAME with stages (never values)")
    history.add_argument("dir", type=Path, metavar="DIR")
    history.add_argument("name", metavar="NAME")
    history.add_argument("--json", action="store_true", help="one JSON document")
    _key_options(history)
    history.set_defaults(run=_reporting_os_errors(run_history))

    rekey = cmds.add_parser("rekey", help="re-wrap every data key under a new key")
    rekey.add_argument("dir", type=Path, metavar="DIR")
    rekey.add_argument(
        "--key",
        type=Path,
        required=True,
        metavar="NEW",
        help="the new key file (created, mode 0600, if absent)",
    )
    rekey.add_argument(
        "--old-key",
        type=Path,
        action="append",
        default=[],
        metavar="OLD",
        help="the key now in use (default: the recorded one); repeatable",
    )
    rekey.set_defaults(run=_reporting_os_errors(run_rekey))


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help=f"key file (else ${KEY_ENV}, else the recorded one)",
    )
    parser.add_argument(
        "--old-key",
        type=Path,
        action="append",
        default=[],
        metavar="OLD",
        help="an older, decrypt-only key file; repeatable",
    )


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
