"""The agent's own state directory (`[agent] state_dir`): small JSON documents
that must survive a restart, never secret values.

What lives there is listed in docs/operating.md (today: the file stores'
rollback high-water marks). The directory is created 0700 when missing and
refused - a configuration error - when another user owns it or group/others
can write it, since whoever can rewrite these documents could, for example,
erase a rollback high-water mark. Documents are replaced atomically (temporary
file, fsync, rename, fsync of the directory); a damaged document is reported
and read as empty, never trusted in part.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import orjson
import structlog

from secretd.durable import fsync_dir, replace_file
from secretd.fileperm import check_private_dir

log = structlog.get_logger(__name__)

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
_TMP_PREFIX = ".tmp-"


def default_state_dir() -> Path:
    """/var/lib/secretd/state for root; $XDG_STATE_HOME/secretd (~/.local/state) otherwise."""
    if os.geteuid() == 0:
        return Path("/var/lib/secretd/state")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "secretd"


class StateDir:
    """One state directory, checked on open."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, path: Path) -> StateDir:
        """Create `path` (0700) if missing and check it. Raises ConfigError saying what to fix."""
        check_private_dir(path, f"agent.state_dir {path}")
        return cls(path)

    def read(self, name: str) -> dict[str, Any]:
        """The document `name` (a JSON object), or {} when absent or damaged."""
        target = self.path / name
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("state.unreadable", document=name, error=exc.strerror)
            return {}
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(MAX_DOCUMENT_BYTES + 1)
        try:
            document = orjson.loads(raw) if len(raw) <= MAX_DOCUMENT_BYTES else None
        except orjson.JSONDecodeError:
            document = None
        if not isinstance(document, dict):
            log.warning("state.damaged", document=name, policy="read as empty")
            return {}
        return document

    def write(self, name: str, document: dict[str, Any]) -> None:
        """Replace `name` with `document` atomically. Raises OSError on failure."""
        data = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        tmp = self.path / f"{_TMP_PREFIX}{secrets.token_hex(8)}-{name}"
        replace_file(tmp, self.path / name, data)
        fsync_dir(self.path)
