"""A second (and third) local user for tests that need a caller other than root.

Root bypasses file permissions and is the uid everything else runs as here, so
access-control tests need real other uids. This helper creates them once
(idempotent, safe when several test processes race to do it) and runs commands
as them with `setpriv --reuid --regid --clear-groups` (or explicit groups).

    user = ensure_test_user()                        # "secretd-test"
    proc = run_python_as(user, "import os; print(os.getuid())")
    argv = as_user(user, ["curl", "--unix-socket", sock, url])   # for asyncio/Popen

Where the host mounts a writable systemd cgroup hierarchy (cgroup v1/hybrid
`name=systemd`, or a cgroup2 root), `unit_cgroup` puts a command inside a
systemd-looking unit cgroup such as `system.slice/app.service`, so the unit
read from `/proc/PID/cgroup` is real; without one, the parser
(`secretd.access.identity.unit_from_cgroup`) is still tested on sample texts.

    with unit_cgroup("system.slice/app.service") as enter:
        proc = subprocess.Popen([*enter, *as_user(user, argv)])
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

TEST_USER = "secretd-test"
OTHER_USER = "secretd-test2"
TEST_GROUP = "secretd-testgrp"  # a supplementary group neither user is in by default
_RETRIES = 20
_SYSTEMD_HIERARCHIES = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup"))


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


# Marks a test (or, as `pytestmark`, a module) that runs a client as another uid.
needs_root = pytest.mark.skipif(not can_switch_users(), reason="needs root and setpriv")


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


# Runs as the user: one request, argv[2] ("METHOD /target"), over the Unix socket
# argv[1]; writes the raw answer.
RAW_REQUEST = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sys.argv[1])
end = "\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n"
head = sys.argv[2] + " HTTP/1.1\\r\\nHost: x" + end
s.sendall(head.encode())
out = b""
while chunk := s.recv(65536):
    out += chunk
sys.stdout.buffer.write(out)
"""


def raw_request_as(user: TestUser, socket_path: str, line: str) -> bytes:
    """The agent's whole answer to `line` ("GET /v1/health") from `user`
    (b"" when it closes without one)."""
    done = run_python_as(user, RAW_REQUEST, socket_path, line)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def _child_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    """A small environment: no HOME of root's, no inherited secrets."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if extra:
        env.update(extra)
    return env


def systemd_cgroup_root() -> Path | None:
    """The cgroup hierarchy systemd-style units live in, when we may write it."""
    if os.geteuid() != 0:
        return None
    for root in _SYSTEMD_HIERARCHIES:
        if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
            return root
    return None


# Marks a test that puts a process in a systemd-looking unit cgroup.
needs_cgroup = pytest.mark.skipif(
    not can_switch_users() or systemd_cgroup_root() is None,
    reason="needs root, setpriv and a writable systemd cgroup hierarchy",
)


@contextmanager
def unit_cgroup(path: str) -> Iterator[list[str]]:
    """A cgroup at `path` (e.g. "system.slice/app.service") under the systemd
    hierarchy; yields an argv prefix that moves the command into it before it
    execs. The leaf is removed afterwards (once its processes are gone)."""
    root = systemd_cgroup_root()
    if root is None:
        raise RuntimeError("no writable systemd cgroup hierarchy on this host")
    leaf = root / path
    created = [d for d in (leaf, *leaf.parents) if d.is_relative_to(root) and not d.exists()]
    leaf.mkdir(parents=True, exist_ok=True)
    procs = leaf / "cgroup.procs"
    try:
        yield ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh"]
    finally:
        for directory in created:  # deepest first; only what we made
            _remove_cgroup(directory)


def _remove_cgroup(directory: Path) -> None:
    for _ in range(_RETRIES):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)  # a just-killed process may linger for a moment
