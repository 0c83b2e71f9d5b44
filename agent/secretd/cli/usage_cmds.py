"""`secretd unused [--for 30d] [--json]`: secrets nobody read lately (docs/client.md).

Asks the running agent (`GET /v1/usage`, on `--socket`, else `$SECRETD_SOCKET`,
else the default socket) and lists every secret it knows of - read ones,
declared ones, cached ones, every name in the file store - whose last read is
older than the window, never-read ones included. Run as root (or the agent's
user) it sees every secret; anyone else only those they may read. When the
agent has recorded reads for less time than the window, a note says so: a
secret read once a month may not have come round yet. Never a value.

`fetch_usage` is also what `secretd status --json` uses for `last_read` and
`reads` per secret.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from secretd.cli.options import socket_option
from secretd.durations import parse_duration
from secretd.errors import SecretdError, UsageError

DEFAULT_WINDOW = "30d"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    unused = sub.add_parser(
        "unused",
        help="secrets not read within a window (default 30d), never-read ones included",
        description="List the secrets the agent knows of (read, declared, cached, or in the "
        "file store) that nobody read within the window: through the API, the AWS- and "
        "Vault-compatible routes, secretd exec, templates or systemd credentials.",
    )
    unused.add_argument(
        "--for",
        dest="window",
        default=DEFAULT_WINDOW,
        metavar="DURATION",
        help=f"not read for at least this long (default {DEFAULT_WINDOW})",
    )
    unused.add_argument("--json", action="store_true", help="machine-readable output")
    socket_option(unused)
    unused.set_defaults(run=run_unused)


def run_unused(args: argparse.Namespace) -> int:
    try:
        window = parse_duration(args.window)
    except ValueError as exc:
        raise UsageError(f"unused: --for: {exc}") from None
    from secretd_client import resolve_socket

    socket = resolve_socket(args.socket)
    document, error = fetch_usage(socket)
    if document is None:
        raise SecretdError(f"unused: {error}")
    now = _parse_time(document.get("now")) or datetime.now().astimezone()
    cutoff = now - timedelta(seconds=window)
    rows = [row for row in _rows(document) if _unused(row, cutoff)]
    since = _parse_time(document.get("since"))
    if args.json:
        shown = {"now": document.get("now"), "since": document.get("since"), "for": window}
        print(json.dumps({**shown, "unused": rows}, indent=2, ensure_ascii=False))
        return 0
    if since is not None and since > cutoff:
        print(
            f"secretd: unused: note: reads are known only since {document.get('since')}, "
            f"less than {args.window} ago",
            file=sys.stderr,
        )
    sys.stdout.write(render_unused(rows, args.window))
    return 0


def fetch_usage(socket: str) -> tuple[dict[str, Any] | None, str | None]:
    """`GET /v1/usage`: (document, None) or (None, why not)."""
    from secretd.cli.rotate_cmds import get_from_agent

    return get_from_agent(socket, "/v1/usage", timeout=30.0)


def reads_by_name(document: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """{name: {"last_read", "reads"}} from a usage document (empty when there is none)."""
    return {
        row["name"]: {"last_read": row.get("last_read"), "reads": row.get("reads", 0)}
        for row in _rows(document)
    }


def render_unused(rows: list[dict[str, Any]], window: str) -> str:
    from secretd.cli.client_status import clean, table

    if not rows:
        return f"every secret was read within {window}\n"
    cells = [
        [clean(str(row["name"])), clean(str(row.get("last_read") or "never")), str(row["reads"])]
        for row in rows
    ]
    lines = [f"not read within {window}:", *table([["NAME", "LAST READ", "READS"], *cells])]
    return "\n".join(lines) + "\n"


def _rows(document: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    raw = document.get("secrets") if document is not None else None
    if not isinstance(raw, list):
        return []
    rows = []
    for row in raw:
        if isinstance(row, dict) and isinstance(row.get("name"), str):
            reads = row.get("reads")
            last = row.get("last_read")
            rows.append(
                {
                    "name": row["name"],
                    "last_read": last if isinstance(last, str) else None,
                    "reads": reads if isinstance(reads, int) else 0,
                }
            )
    return rows


def _unused(row: Mapping[str, Any], cutoff: datetime) -> bool:
    last = _parse_time(row.get("last_read"))
    return last is None or last < cutoff


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
