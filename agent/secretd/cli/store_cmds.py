"""`secretd store init|put|promote|list|history|rekey|delete`: manage an
encrypted file store.

Commands that need the key take `--key FILE`, else `$SECRETD_KEY_FILE`, else the
key file recorded by `store init` (or the last `rekey`). Values come from
`--file` or stdin and are never printed: `list` and `history` show names,
version ids, stages and key ids only.

This module only builds the parser; the commands themselves are in
`store_run`, imported when one runs (the store's crypto is not loaded for
`secretd get`).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import cast

from secretd.errors import StoreError

KEY_ENV = "SECRETD_KEY_FILE"
Run = Callable[[argparse.Namespace], int]


def _runs(name: str) -> Run:
    """The command `store_run.<name>`, imported when it runs; a failed read or
    write of a store file is one clear line, not an internal error."""

    def run(args: argparse.Namespace) -> int:
        module = importlib.import_module("secretd.cli.store_run")
        try:
            return cast(Run, getattr(module, name))(args)
        except OSError as exc:
            where = exc.filename or args.dir
            raise StoreError(f"{where}: {exc.strerror or type(exc).__name__}") from None

    return run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    store = sub.add_parser(
        "store",
        help="manage an envelope-encrypted file store",
        description="Manage an envelope-encrypted file store (AES-256-GCM, one data key per "
        "version). The key is --key FILE, else $SECRETD_KEY_FILE, else the one `init` recorded.",
        epilog="exit status: 0 ok, 1 failure (store, key or file), 2 bad command line. "
        "environment: SECRETD_KEY_FILE",
    )
    cmds = store.add_subparsers(dest="store_command", required=True, parser_class=type(store))

    init = cmds.add_parser("init", help="create a store and, if absent, its key file (0600)")
    init.add_argument("dir", type=Path, metavar="DIR", help="the store directory")
    init.add_argument("--key", type=Path, metavar="FILE", help="key file (default: DIR.key)")
    init.set_defaults(run=_runs("run_init"))

    put = cmds.add_parser("put", help="add a version (value from --file or stdin)")
    put.add_argument("dir", type=Path, metavar="DIR", help="the store directory")
    put.add_argument("name", metavar="NAME", help="the secret's name")
    put.add_argument("--file", type=Path, metavar="F", help="read the value from F, not stdin")
    put.add_argument(
        "--stage",
        metavar="S",
        help="pending: stage it without making it current; "
        "any other label: attach it, and make the version current",
    )
    put.add_argument("-c", "--config", type=Path, metavar="CONFIG", help="take limits from it")
    _key_options(put)
    put.set_defaults(run=_runs("run_put"))

    promote = cmds.add_parser("promote", help="make VERSION current (rotation finish step)")
    promote.add_argument("dir", type=Path, metavar="DIR", help="the store directory")
    promote.add_argument("name", metavar="NAME", help="the secret's name")
    promote.add_argument(
        "version", metavar="VERSION", help="a version id (`store history` lists them)"
    )
    _key_options(promote)
    promote.set_defaults(run=_runs("run_promote"))

    listing = cmds.add_parser("list", help="the names in the store (never values)")
    listing.add_argument("dir", type=Path, metavar="DIR", help="the store directory")
    listing.set_defaults(run=_runs("run_list"))

    history = cmds.add_parser("history", help="versions of NAME with stages (never values)")
    history.add_argument("dir", type=Path, metavar="DIR", help="the store directory")
    history.add_argument("name", metavar="NAME", help="the secret's name")
    history.add_argument("--json", action="store_true", help="one JSON document")
    _key_options(history)
    history.set_defaults(run=_runs("run_history"))

    rekey = cmds.add_parser("rekey", help="re-wrap every data key under a new key")
    rekey.add_argument("dir", type=Path, metavar="DIR", help="the store directory")
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
    rekey.set_defaults(run=_runs("run_rekey"))

    delete = cmds.add_parser(
        "delete",
        help="remove NAME and all its versions",
        description="Remove NAME with every version it has, under the store lock (a put "
        "running at the same time is not lost half-way). A running agent sees it gone "
        "within 100 ms. Putting the name again later starts a new history.",
    )
    delete.add_argument("dir", type=Path, metavar="DIR", help="the store directory")
    delete.add_argument("name", metavar="NAME", help="the secret's name")
    delete.set_defaults(run=_runs("run_delete"))


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
