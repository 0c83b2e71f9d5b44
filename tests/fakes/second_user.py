"""A second (and third) local user for tests that need a caller other than root.

Root bypasses file permissions and is the uid everything else runs as here, so
access-control tests need real other uids. This helper creates them once
(idempotent, safe when several test processes race to do it) and runs commands
as them with `setpriv --reuid --regid --clear-groups` (or explicit groups).

    user = ensure_test_user()                        # "secretd-test"
    proc = run_python_as(user, "import os; print(os.getuid())")
    argv = as_user(user, ["curl", "--unix-socket", sock, url])   # for asyncio/Popen

Systemd units cannot be faked without systemd; the unit-from-cgroup parser is a
pure function (`secretd.access.identity.unit_from_cgroup`) tested on texts.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TEST_USER = "secretd-test"
OTHER_USER = "secretd-test2"
TEST_GROUP = "secretd-testgrp"  # a supplementary group neither user is in by default
_RETRIES = 20


@dataclass(frozen=True, slots=True)
class TestUser:
    """A local account tests can run processes as."""

    __test__ = False  # not a pytest test class

    name: str
    uid: int
    gid: int


def can_switch_users() -> bool:
    """Whether this process can run commands as other users (root with setpriv)."""
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


def ensure_group(name: str = TEST_GROUP) -> int:
    """The gid of group `name`, creating it with `groupadd --system` if absent."""
    for _ in range(_RETRIES):
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            pass
        # A concurrent creator makes this fail with "already exists": re-check.
        subprocess.run(["groupadd", "--system", name], capture_output=True, check=False)
        time.sleep(0.05)
    raise RuntimeError(f"could not create test group {name}")


def ensure_test_user(name: str = TEST_USER) -> TestUser:
    """The account `name` (with a same-named primary group), created if absent."""
    for _ in range(_RETRIES):
        try:
            entry = pwd.getpwnam(name)
            return TestUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid)
        except KeyError:
            pass
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            capture_output=True,
            check=False,
        )
        time.sleep(0.05)
    raise RuntimeError(f"could not create test user {name}")


def as_user(user: TestUser, argv: Sequence[str], *, groups: Sequence[int] = ()) -> list[str]:
    """`argv` prefixed with setpriv so it runs as `user` with exactly `groups`
    as supplementary groups (none by default)."""
    group_arg = f"--groups={','.join(str(g) for g in groups)}" if groups else "--clear-groups"
    return [
        "setpriv",
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        group_arg,
        "--",
        *argv,
    ]


def spawn_as(
    user: TestUser,
    argv: Sequence[str],
    *,
    groups: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
    **popen: object,
) -> subprocess.Popen[bytes]:
    """Start `argv` as `user` (the Popen pid is the command's pid: setpriv execs)."""
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        as_user(user, argv, groups=groups), env=_child_env(env), **popen
    )


def run_as(
    user: TestUser,
    argv: Sequence[str],
    *,
    groups: Sequence[int] = (),
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run `argv` as `user` to completion and capture its output."""
    return subprocess.run(
        as_user(user, argv, groups=groups),
        env=_child_env(env),
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def run_python_as(
    user: TestUser,
    code: str,
    *args: str,
    groups: Sequence[int] = (),
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a Python snippet as `user` with this interpreter (secretd importable)."""
    return run_as(
        user, [sys.executable, "-c", code, *args], groups=groups, timeout=timeout, env=env
    )


def _child_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    """A small environment: no HOME of root's, no inherited secrets."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if extra:
        env.update(extra)
    return env
