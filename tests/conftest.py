"""Suite-wide set-up shared by every test directory."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _grant_traversal(path: Path) -> None:
    """Let other users pass through (not list) every directory above `path`.

    Tests run code as a second uid (setpriv) from this checkout and its venv. A
    checkout in a 0700 directory (`mktemp -d`, as CI may use) would hide both
    from that uid, so, as root, add the search bit where it is missing.
    """
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


@pytest.fixture(scope="session", autouse=True)
def reachable_by_other_users() -> Iterator[None]:
    if os.geteuid() == 0:
        _grant_traversal(REPO)
        _grant_traversal(Path(sys.prefix))
    yield
