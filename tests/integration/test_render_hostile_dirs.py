"""Rendered files under directories another local user controls (issue 11, item 3).

The template runner runs as root here, as the agent often does; the attacker
is a real second uid acting through setpriv on real directories. Each attack
is played at the granularity the runner exposes: a render, the attacker's
move, the next render (what a rotation triggers).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from secretd.clock import SystemClock
from secretd.config.schema import TemplateConfig
from secretd.errors import RenderError
from secretd.render.runner import TemplateRunner, TemplateStatus
from secretd.render.writer import FileSpec, write_atomic
from tests.fakes.dict_reader import DictReader
from tests.servers.second_user import TestUser, ensure_test_user, needs_root, run_as

pytestmark = needs_root

SECRET = b"root-rendered-secret-4d1c"


@pytest.fixture
def base() -> Iterator[Path]:
    """A root-owned directory like /tmp (1777): anyone may create entries in it,
    nobody may rename or delete another's."""
    path = Path(tempfile.mkdtemp(prefix="sdhd", dir="/tmp"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def attacker() -> TestUser:
    return ensure_test_user()


def act(user: TestUser, *argv: str) -> None:
    done = run_as(user, list(argv))
    assert done.returncode == 0, done.stderr.decode()


def root_only(base: Path) -> Path:
    """A directory only root may enter: where the attacker wants root to write."""
    private = base / "root-only"
    private.mkdir(mode=0o700)
    return private


def runner_for(dest: Path, reader: DictReader, **fields: Any) -> TemplateRunner:
    config = TemplateConfig.model_validate(
        {"destination": str(dest), "contents": "{{ secret('db/app') }}", **fields}
    )
    return TemplateRunner(
        [config], reader, reader.hub, pin=lambda _names: None, clock=SystemClock()
    )


async def render_after_rotation(runner: TemplateRunner, reader: DictReader) -> TemplateStatus:
    """What a rotation makes the runner do: a new value, then one more render."""
    reader.put("db/app", SECRET + b"-rotated", publish=False)
    runner.memo.invalidate(["db/app"])
    return (await runner.first_render())[0]


def reader_with_secret() -> DictReader:
    reader = DictReader()
    reader.put("db/app", SECRET, publish=False)
    return reader


async def test_a_destination_directory_another_user_made_is_refused(
    base: Path, attacker: TestUser
) -> None:
    """(a) The attacker creates the destination directory first (0755, theirs):
    root must not put the secret where they can replace or read it."""
    planted = base / "app"
    act(attacker, "mkdir", "-m", "0755", str(planted))
    dest = planted / "app.conf"
    status = (await runner_for(dest, reader_with_secret()).first_render())[0]
    assert not dest.exists()
    assert status.ok is False and status.last_error is not None
    assert f"directory {planted} is owned by uid {attacker.uid}" in status.last_error
    assert "must be owned by root" in status.last_error


async def test_a_directory_swapped_for_a_symlink_is_never_written_through(
    base: Path, attacker: TestUser
) -> None:
    """(b) With a parent the attacker controls, they swap the destination's
    directory for a symlink to a root-only directory between two renders."""
    parent = base / "parent"
    act(attacker, "mkdir", "-m", "0755", str(parent))
    app_dir = parent / "app"
    app_dir.mkdir(mode=0o755)  # made by root: trusted on its own
    private = root_only(base)
    reader = reader_with_secret()
    runner = runner_for(app_dir / "app.conf", reader)
    first = (await runner.first_render())[0]
    act(attacker, "mv", str(app_dir), str(parent / "moved"))
    act(attacker, "ln", "-s", str(private), str(app_dir))
    second = await render_after_rotation(runner, reader)
    assert os.listdir(private) == []
    # refused from the start: an ancestor belongs to the attacker
    assert first.ok is False and second.ok is False
    assert f"directory {parent} is owned by uid {attacker.uid}" in (second.last_error or "")


async def test_a_symlink_planted_in_a_sticky_directory_is_refused(
    base: Path, attacker: TestUser
) -> None:
    """(b) In a /tmp-like directory the attacker cannot move root's entries, but
    can plant the destination's directory as a symlink before root makes it."""
    private = root_only(base)
    planted = base / "app"
    act(attacker, "ln", "-s", str(private), str(planted))
    status = (await runner_for(planted / "app.conf", reader_with_secret()).first_render())[0]
    assert os.listdir(private) == []
    assert status.ok is False
    assert f"symlink {planted} is owned by uid {attacker.uid}" in (status.last_error or "")


async def test_a_group_writable_ancestor_is_refused_a_sticky_one_is_not(base: Path) -> None:
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    app_dir = shared / "app"
    app_dir.mkdir(mode=0o755)
    reader = reader_with_secret()
    refused = (await runner_for(app_dir / "app.conf", reader).first_render())[0]
    assert refused.ok is False
    assert f"directory {shared} is writable by group or others" in (refused.last_error or "")
    assert not (app_dir / "app.conf").exists()

    shared.chmod(0o1777)  # sticky: others may add names but not replace root's
    written = await render_after_rotation(runner_for(app_dir / "app.conf", reader), reader)
    assert written.ok is True, written.last_error
    assert (app_dir / "app.conf").read_bytes() == SECRET + b"-rotated"


async def test_the_templates_own_user_may_own_the_directory(base: Path, attacker: TestUser) -> None:
    """A directory owned by the template's `user` is fine: the file is theirs anyway."""
    own = base / "own"
    act(attacker, "mkdir", "-m", "0700", str(own))
    dest = own / "app.conf"
    status = (await runner_for(dest, reader_with_secret(), user=str(attacker.uid)).first_render())[
        0
    ]
    assert status.ok is True, status.last_error
    assert dest.read_bytes() == SECRET and dest.stat().st_uid == attacker.uid


def test_symlinks_root_controls_are_followed(base: Path) -> None:
    """Like /var/run -> /run: a symlink in a directory only root can write is as
    trustworthy as that directory, so it is followed (and its target checked)."""
    trusted = base / "trusted"
    trusted.mkdir(mode=0o755)
    (trusted / "real").mkdir(mode=0o755)
    (trusted / "link").symlink_to("real")
    (trusted / "abs").symlink_to(trusted / "real")
    assert write_atomic(FileSpec(trusted / "link" / "a.conf"), b"one") is True
    assert write_atomic(FileSpec(trusted / "abs" / "b.conf"), b"two") is True
    assert (trusted / "real" / "a.conf").read_bytes() == b"one"
    assert (trusted / "real" / "b.conf").read_bytes() == b"two"


def test_a_symlink_loop_is_an_error_not_a_hang(base: Path) -> None:
    trusted = base / "loop"
    trusted.mkdir(mode=0o755)
    (trusted / "a").symlink_to("b")
    (trusted / "b").symlink_to("a")
    with pytest.raises(RenderError, match="too many symlinks"):
        write_atomic(FileSpec(trusted / "a" / "x.conf"), b"x")


async def test_a_refused_directory_leaves_the_previous_file_and_says_why(base: Path) -> None:
    parent = base / "p"
    parent.mkdir(mode=0o755)
    (parent / "app").mkdir(mode=0o755)
    dest = parent / "app" / "app.conf"
    reader = reader_with_secret()
    runner = runner_for(dest, reader)
    assert (await runner.first_render())[0].ok is True
    parent.chmod(0o757)  # others may now write the parent: they could swap app/
    status = await render_after_rotation(runner, reader)
    assert dest.read_bytes() == SECRET  # the previous file, untouched
    assert status.ok is False and status.last_rendered is not None
    assert f"directory {parent} is writable by group or others" in (status.last_error or "")
