"""`secretd cache init-key FILE`: create the key of the persisted cache (docs/cache.md).

The key is 32 random bytes from the kernel in a new file of mode 0600 (never an
existing file overwritten), under the same rules as a file store's key: the
agent refuses it when anyone but its owner may read it. Point
`[cache] persist_key_file` at it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from secretd.errors import KeyFileError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cache = sub.add_parser("cache", help="the persisted cache's key")
    actions = cache.add_subparsers(dest="action", required=True, parser_class=type(cache))
    init_key = actions.add_parser(
        "init-key",
        help="create a new persist_key_file (32 random bytes, mode 0600)",
        description="Create FILE holding a new random 32-byte key, mode 0600. An existing "
        "file is never overwritten.",
    )
    init_key.add_argument("file", type=Path, metavar="FILE")
    init_key.set_defaults(run=run_init_key)


def run_init_key(args: argparse.Namespace) -> int:
    from secretd.store.keyfile import create_key_file  # cryptography: only when run

    try:
        key = create_key_file(args.file)
    except KeyFileError as exc:
        raise KeyFileError(exc.message.replace("store key file", "cache key file", 1)) from None
    print(f"created cache key {args.file} (key id {key.key_id}); mode 0600")
    key.wipe()
    return 0
