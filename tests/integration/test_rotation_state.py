"""Rotation state made by root (an operator's `secretd rotate -c`) stays usable
by an agent that runs as its own user: files take the state dir's owner."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from secretd.model import SecretName
from secretd.rotation.state import RotationState, StateDir
from tests.fakes.fake_clock import FakeClock
from tests.servers.second_user import ensure_test_user, needs_root, run_python_as

pytestmark = needs_root

# Runs as the agent's user: take the lock and record a rotation.
AGENT = """
import sys
from pathlib import Path
from datetime import datetime, timezone
from secretd.model import SecretName
from secretd.rotation.state import RotationState, StateDir
state = StateDir(Path(sys.argv[1]))
with state.hold(SecretName("db/app")):
    state.save(SecretName("db/app"), RotationState().succeeded(datetime.now(timezone.utc)))
print(state.load(SecretName("db/app")).last_result)
"""


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sdst", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_files_root_makes_belong_to_the_state_dirs_owner(state_dir: Path) -> None:
    user = ensure_test_user()
    directory = state_dir / "lib"
    directory.mkdir(mode=0o700)
    os.chown(directory, user.uid, user.gid)
    state = StateDir(directory)
    with state.hold(SecretName("db/app")):  # as root
        state.save(SecretName("db/app"), RotationState().succeeded(FakeClock().now()))
    for path in [directory / "rotation", *(directory / "rotation").iterdir()]:
        assert (path.stat().st_uid, path.stat().st_gid) == (user.uid, user.gid), path

    done = run_python_as(user, AGENT, str(directory))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "rotated"
