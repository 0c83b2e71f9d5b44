"""Caller identity: real sockets, a real second uid, and /proc parsing."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from secretd.access.identity import (
    effective_ids_from_status,
    groups_from_status,
    peer_caller,
    peer_credentials,
    unit_from_cgroup,
)
from secretd.model import Caller
from tests.servers.second_user import (
    TestUser,
    as_user,
    ensure_group,
    ensure_test_user,
    needs_cgroup,
    needs_root,
    spawn_as,
    unit_cgroup,
)

# A client that connects, says nothing, and stays alive until told to go.
CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.recv(1)
"""


@pytest.fixture
def server() -> Iterator[tuple[socket.socket, str]]:
    directory = tempfile.mkdtemp(prefix="sd-id-", dir="/tmp")
    os.chmod(directory, 0o755)  # the second user must reach the socket
    path = os.path.join(directory, "s")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o777)
    listener.listen(8)
    listener.settimeout(20)
    try:
        yield listener, path
    finally:
        listener.close()
        shutil.rmtree(directory, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def _caller_of(listener: socket.socket, proc: subprocess.Popen[bytes]) -> Caller:
    """The caller the server sees for `proc`'s connection; `proc` is stopped after."""
    try:
        conn, _ = listener.accept()
        with conn:
            caller = peer_caller(conn)
            conn.sendall(b"x")
    finally:
        _stop(proc)
    return caller


# --- real sockets -----------------------------------------------------------


def test_socketpair_peer_is_this_process() -> None:
    left, right = socket.socketpair()
    with left, right:
        caller = peer_caller(left)
    assert (caller.uid, caller.gid, caller.pid) == (os.geteuid(), os.getegid(), os.getpid())
    assert caller.extra_gids == frozenset(os.getgroups())
    assert caller.tcp is False
    assert caller.unit == unit_from_cgroup(Path(f"/proc/{os.getpid()}/cgroup").read_text())


@needs_root
def test_a_client_running_as_another_uid_is_seen_as_that_uid(
    server: tuple[socket.socket, str],
) -> None:
    listener, path = server
    user = ensure_test_user()
    proc = spawn_as(user, [sys.executable, "-c", CLIENT, path])
    caller = _caller_of(listener, proc)
    assert caller.uid == user.uid
    assert caller.gid == user.gid
    assert caller.pid == proc.pid  # setpriv execs: the Popen pid is the client's
    assert caller.extra_gids == frozenset()  # --clear-groups


@needs_root
def test_ids_above_two_to_the_31_are_kept_unsigned(server: tuple[socket.socket, str]) -> None:
    # Container and systemd-nspawn ranges use large ids; a signed unpack would
    # turn them negative and lose the caller.
    listener, path = server
    big = TestUser(name="big", uid=3_000_000_000, gid=3_000_000_001)
    proc = spawn_as(big, [sys.executable, "-c", CLIENT, path])
    caller = _caller_of(listener, proc)
    assert (caller.uid, caller.gid) == (3_000_000_000, 3_000_000_001)


@needs_root
def test_supplementary_groups_come_from_the_kernel(server: tuple[socket.socket, str]) -> None:
    listener, path = server
    user = ensure_test_user()
    extra = ensure_group()
    proc = spawn_as(user, [sys.executable, "-c", CLIENT, path], groups=[extra])
    caller = _caller_of(listener, proc)
    assert caller.uid == user.uid
    assert extra in caller.extra_gids


@needs_root
def test_thousands_of_groups_are_read_whole_from_proc(server: tuple[socket.socket, str]) -> None:
    # More than SO_PEERGROUPS can hand Python (256) falls back to /proc/PID/status,
    # whose Groups: line is then ~100 KB: it must be read whole, never cut.
    listener, path = server
    user = ensure_test_user()
    many = [1_000_000 + i for i in range(12_000)]
    proc = spawn_as(user, [sys.executable, "-c", CLIENT, path], groups=many)
    caller = _caller_of(listener, proc)
    assert caller.extra_gids == frozenset(many)


@needs_root
def test_a_peer_that_already_exited_keeps_its_uid_but_gets_no_unit(
    server: tuple[socket.socket, str], tmp_path: Path
) -> None:
    listener, path = server
    user = ensure_test_user()
    quick = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"
    proc = spawn_as(user, [sys.executable, "-c", quick, path])
    assert proc.wait(timeout=20) == 0  # exited and reaped: its pid is free for reuse
    # Plant what a pid reuser's /proc would say: a privileged unit.
    fake = tmp_path / str(proc.pid)
    fake.mkdir()
    (fake / "cgroup").write_text("0::/system.slice/privileged.service\n")
    (fake / "status").write_text(
        f"Uid:\t{user.uid}\t{user.uid}\t{user.uid}\t{user.uid}\n"
        f"Gid:\t{user.gid}\t{user.gid}\t{user.gid}\t{user.gid}\n"
    )
    conn, _ = listener.accept()
    with conn:
        caller = peer_caller(conn, proc_root=tmp_path)
    assert (caller.uid, caller.gid, caller.pid) == (user.uid, user.gid, proc.pid)
    assert caller.unit is None


@needs_root
def test_identity_through_uvloops_transport_socket() -> None:
    # The agent runs on uvloop, whose transports hand out a PseudoSocket.
    user = ensure_test_user()
    directory = tempfile.mkdtemp(prefix="sd-uv-", dir="/tmp")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "s")

    async def serve() -> Caller:
        seen: asyncio.Future[Caller] = asyncio.get_running_loop().create_future()

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                if not seen.done():
                    seen.set_result(peer_caller(writer.get_extra_info("socket")))
                writer.write(b"x")
                await writer.drain()
            finally:
                writer.close()
                await writer.wait_closed()

        server = await asyncio.start_unix_server(accepted, path)
        os.chmod(path, 0o777)
        proc = spawn_as(user, [sys.executable, "-c", CLIENT, path])
        try:
            async with asyncio.timeout(20):
                caller = await seen
                await asyncio.to_thread(proc.wait, 20)
                return caller
        finally:
            server.close()
            await server.wait_closed()
            await asyncio.to_thread(_stop, proc)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            caller = runner.run(serve())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert (caller.uid, caller.gid) == (user.uid, user.gid)
    assert caller.pid is not None and caller.pid > 0


@needs_cgroup
@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        ("system.slice/{unit}", "{unit}"),
        ("system.slice/{unit}/worker", "{unit}"),  # a delegated subgroup
        (
            "user.slice/user-{uid}.slice/user@{uid}.service/app.slice/{unit}",
            "user@{uid}.service/{unit}",
        ),
    ],
)
def test_unit_of_a_real_process_in_a_unit_cgroup(
    server: tuple[socket.socket, str], cgroup: str, expected: str
) -> None:
    listener, path = server
    user = ensure_test_user()
    names = {"unit": f"secretd-test-{os.getpid()}.service", "uid": str(user.uid)}
    with unit_cgroup(cgroup.format(**names)) as enter:
        argv = [*enter, *as_user(user, [sys.executable, "-c", CLIENT, path])]
        proc = subprocess.Popen(argv, env={"PATH": os.environ["PATH"]})
        caller = _caller_of(listener, proc)
    assert caller.unit == expected.format(**names)
    assert (caller.uid, caller.pid) == (user.uid, proc.pid)


def test_unit_is_read_from_the_peers_cgroup_file(tmp_path: Path) -> None:
    left, right = socket.socketpair()
    mine = tmp_path / str(os.getpid())
    mine.mkdir()
    (mine / "cgroup").write_text("0::/system.slice/app.service\n")
    (mine / "status").write_text("Name:\tx\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n")
    with left, right:
        caller = peer_caller(left, proc_root=tmp_path)
    assert caller.unit == "app.service"


def test_missing_proc_files_give_no_unit(tmp_path: Path) -> None:
    left, right = socket.socketpair()
    with left, right:
        caller = peer_caller(left, proc_root=tmp_path)
    assert caller.unit is None
    assert caller.uid == os.geteuid()


def test_a_symlinked_cgroup_file_is_not_followed(tmp_path: Path) -> None:
    left, right = socket.socketpair()
    mine = tmp_path / str(os.getpid())
    mine.mkdir()
    elsewhere = tmp_path / "planted"
    elsewhere.write_text("0::/system.slice/app.service\n")
    (mine / "cgroup").symlink_to(elsewhere)
    (mine / "status").write_text("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
    with left, right:
        assert peer_caller(left, proc_root=tmp_path).unit is None


def test_sockets_without_peer_credentials_fail_loudly() -> None:
    # The kernel answers these with uid/gid -1 rather than an error.
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    unconnected = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with tcp, unconnected:
        for sock in (tcp, unconnected):
            with pytest.raises(OSError):
                peer_credentials(sock)
            with pytest.raises(OSError):
                peer_caller(sock)


# --- pure parsers on sample /proc texts ------------------------------------


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("0::/system.slice/app.service\n", "app.service"),
        ("0::/system.slice/app.service/worker\n", "app.service"),  # delegated subgroup
        ("0::/system.slice/svc.service/app.service\n", "svc.service"),  # cannot claim deeper
        ("0::/system.slice/app-web.slice/app@web.service\n", "app@web.service"),
        ("0::/system.slice/docker-0123abcd.scope\n", "docker-0123abcd.scope"),
        ("0::/init.scope\n", "init.scope"),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", "session-3.scope"),
        (
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.service\n",
            "user@1000.service/x.service",
        ),
        (
            "0::/user.slice/user-1000.slice/user@1000.service/init.scope\n",
            "user@1000.service/init.scope",
        ),
        ("0::/user.slice/user-1000.slice/user@1000.service\n", "user@1000.service"),
        ("0::/\n", None),
        ("0::/system.slice\n", None),
        ("0::/mygroup/app.service\n", None),  # not systemd's layout
        ("0::/system.slice/app.service (deleted)\n", None),
        ("", None),
        ("garbage\n\x00\xff", None),
        # cgroup v1 and hybrid: the name=systemd hierarchy decides.
        (
            "12:pids:/system.slice/a.service\n1:name=systemd:/system.slice/b.service\n",
            "b.service",
        ),
        ("1:name=systemd:/system.slice/b.service\n0::/system.slice/c.service\n", "b.service"),
        ("4:memory:/system.slice/app.service\n", None),  # controllers alone do not count
        # Ambiguity (e.g. an injected line) means unknown.
        ("0::/user.slice/x\n0::/system.slice/app.service\n", None),
        (
            "1:name=systemd:/system.slice/a.service\n2:name=systemd:/system.slice/b.service\n",
            None,
        ),
        ("0::/system.slice/" + "a" * 300 + ".service\n", None),
        ("0::/system.slice/a b.service\n", None),
        ("0::system.slice/app.service\n", None),
    ],
)
def test_unit_from_cgroup(text: str, unit: str | None) -> None:
    assert unit_from_cgroup(text) == unit


def test_groups_from_status() -> None:
    text = "Name:\tapp\nUid:\t1\t1\t1\t1\nGroups:\t4 27 1000 \nNgid:\t0\n"
    assert groups_from_status(text) == frozenset({4, 27, 1000})
    assert groups_from_status("Groups:\t\n") == frozenset()
    assert groups_from_status("Name:\tx\n") == frozenset()
    assert groups_from_status("Groups:\t4 x 5\n") == frozenset()


def test_effective_ids_from_status() -> None:
    text = "Uid:\t1000\t1001\t1000\t1000\nGid:\t50\t51\t50\t50\n"
    assert effective_ids_from_status(text) == (1001, 51)
    assert effective_ids_from_status("Uid:\t1\t1\t1\t1\n") is None
    assert effective_ids_from_status("Uid:\tx\ty\nGid:\t1\t1\n") is None


_cgroup_part = st.one_of(
    st.sampled_from(
        [
            "system.slice",
            "user.slice",
            "user-1000.slice",
            "user@1000.service",
            "app.service",
            "x.scope",
            "init.scope",
            "app.slice",
            "a b",
            "..",
            "",
            "x.service (deleted)",
        ]
    ),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
)
_cgroup_line = st.tuples(
    st.sampled_from(["0", "1", "12"]),
    st.sampled_from(["", "name=systemd", "memory", "pids"]),
    st.lists(_cgroup_part, max_size=6).map(lambda parts: "/" + "/".join(parts)),
).map(":".join)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(_cgroup_line, max_size=6), junk=st.text(max_size=40))
def test_unit_parser_never_fails_and_answers_a_unit_or_none(lines: list[str], junk: str) -> None:
    unit = unit_from_cgroup("\n".join([*lines, junk]))
    if unit is not None:
        parts = unit.split("/")
        assert 1 <= len(parts) <= 2
        assert all(
            re.fullmatch(r"[A-Za-z0-9:_.\\@-]+\.(service|scope|socket|mount|swap)", p)
            for p in parts
        )
        if len(parts) == 2:
            assert re.fullmatch(r"user@[0-9]+\.service", parts[0])
