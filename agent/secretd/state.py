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
import stat
from pathlib import Path
from typing import Any

import orjson
import structlog

from secretd.durable import fsync_dir, replace_file
from secretd.errors import ConfigError

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
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = os.lstat(path)
        except OSError as exc:
            raise ConfigError(f"agent.state_dir {path}: cannot create ({exc.strerror})") from None
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"agent.state_dir {path}: not a directory")
        if st.st_uid not in (0, os.geteuid()):
            raise ConfigError(
                f"agent.state_dir {path}: owned by uid {st.st_uid}; chown it to this user"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            raise ConfigError(
                f"agent.state_dir {path}: mode {mode:04o} lets others write it; chmod 0700 {path}"
            )
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
