"""Where the agent's socket is: the same rule as the agent's own default.

An explicit argument wins, then ``$SECRETD_SOCKET``, then
``/run/secretd/secretd.sock`` for root (or when ``$XDG_RUNTIME_DIR`` is unset),
else ``$XDG_RUNTIME_DIR/secretd.sock``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ENV_VAR", "SYSTEM_SOCKET", "resolve_socket"]

ENV_VAR = "SECRETD_SOCKET"
SYSTEM_SOCKET = "/run/secretd/secretd.sock"


def resolve_socket(
    socket: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    euid: int | None = None,
) -> str:
    """The socket path to connect to (`environ` and `euid` are for tests)."""
    if socket is not None and os.fspath(socket) != "":
        return os.fspath(socket)
    env = os.environ if environ is None else environ
    from_env = env.get(ENV_VAR, "")
    if from_env:
        return from_env
    uid = os.geteuid() if euid is None else euid
    runtime_dir = env.get("XDG_RUNTIME_DIR", "")
    if uid == 0 or not runtime_dir:
        return SYSTEM_SOCKET
    return str(Path(runtime_dir) / "secretd.sock")
