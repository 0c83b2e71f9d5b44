"""Where the agent's socket is.

An explicit argument wins, then ``$SECRETD_SOCKET``. Otherwise the default
places are tried in order: ``$XDG_RUNTIME_DIR/secretd.sock`` (a user's own
agent; only for a non-root caller with ``$XDG_RUNTIME_DIR`` set), then
``/run/secretd/secretd.sock`` (the packaged system agent). The first that
exists is used; when none exists, the first, and a failure to connect names
every place tried.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["ENV_VAR", "SYSTEM_SOCKET", "resolve_socket", "socket_candidates"]

ENV_VAR = "SECRETD_SOCKET"
SYSTEM_SOCKET = "/run/secretd/secretd.sock"


def socket_candidates(
    socket: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    euid: int | None = None,
) -> list[str]:
    """The socket paths to try, in order (`environ` and `euid` are for tests)."""
    if socket is not None and os.fspath(socket) != "":
        return [os.fspath(socket)]
    env = os.environ if environ is None else environ
    from_env = env.get(ENV_VAR, "")
    if from_env:
        return [from_env]
    uid = os.geteuid() if euid is None else euid
    runtime_dir = env.get("XDG_RUNTIME_DIR", "")
    if uid == 0 or not runtime_dir:
        return [SYSTEM_SOCKET]
    return [str(Path(runtime_dir) / "secretd.sock"), SYSTEM_SOCKET]


def resolve_socket(
    socket: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    euid: int | None = None,
    exists: Callable[[str], bool] = os.path.exists,
) -> str:
    """The socket path to connect to: the first candidate that exists, else the first."""
    candidates = socket_candidates(socket, environ=environ, euid=euid)
    return next((path for path in candidates if exists(path)), candidates[0])
