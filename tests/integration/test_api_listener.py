"""The Unix listener and the guarded site: socket creation, caps, timeouts, hostile bytes."""

from __future__ import annotations

import asyncio
import grp
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from secretd.api.listener import ListenerError, UnixListener
from secretd.errors import ConfigError
from tests.integration.api_harness import serve_api
from tests.integration.hostile_requests import HEALTH_CLOSE, HOSTILE, close_get, status_of

HEALTH = b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.fixture
def sockdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sdl", dir="/tmp"))
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def test_socket_gets_mode_and_group(sockdir: Path) -> None:
    group = grp.getgrgid(os.getgid() if os.getgid() != 0 else 1)
    listener = UnixListener.create(sockdir / "s.sock", mode=0o620, group=group.gr_name)
    try:
        st = os.lstat(sockdir / "s.sock")
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o620
        assert st.st_gid == group.gr_gid
        assert [p.name for p in sockdir.iterdir()] == ["s.sock"]  # no temp name left
    finally:
        listener.close()
    assert not (sockdir / "s.sock").exists()


def test_stale_socket_is_replaced(sockdir: Path) -> None:
    path = sockdir / "s.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays; nobody listens: connect gives ECONNREFUSED
    listener = UnixListener.create(path, mode=0o600, group=None)
    try:
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(str(path))
        probe.close()
    finally:
        listener.close()


def test_live_socket_is_never_stolen(sockdir: Path) -> None:
    path = sockdir / "s.sock"
    first = UnixListener.create(path, mode=0o600, group=None)
    try:
        inode = os.lstat(path).st_ino
        with pytest.raises(ListenerError, match="another agent"):
            UnixListener.create(path, mode=0o600, group=None)
        assert os.lstat(path).st_ino == inode
        assert [p.name for p in sockdir.iterdir()] == ["s.sock"]
    finally:
        first.close()


def test_non_socket_is_refused_and_kept(sockdir: Path) -> None:
    path = sockdir / "s.sock"
    path.write_text("not a socket")
    with pytest.raises(ListenerError, match="not a socket"):
        UnixListener.create(path, mode=0o600, group=None)
    assert path.read_text() == "not a socket"
    path.unlink()


def test_bad_group_and_missing_dir(sockdir: Path) -> None:
    with pytest.raises(ConfigError, match="no such group"):
        UnixListener.create(sockdir / "s.sock", mode=0o600, group="no-such-group-xyz")
    with pytest.raises(ConfigError, match="does not exist"):
        UnixListener.create(sockdir / "missing" / "s.sock", mode=0o600, group=None)
    with pytest.raises(ConfigError, match="too long"):
        UnixListener.create(sockdir / ("x" * 120), mode=0o600, group=None)


def test_close_keeps_a_replacement(sockdir: Path) -> None:
    """A listener closing late does not remove a newer agent's socket."""
    path = sockdir / "s.sock"
    old = UnixListener.create(path, mode=0o600, group=None)
    path.unlink()
    new = UnixListener.create(path, mode=0o600, group=None)
    old.close()
    assert path.exists()
    new.close()
    assert not path.exists()


def test_adopted_socket_is_left_alone(sockdir: Path) -> None:
    path = sockdir / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.listen(8)
    UnixListener.adopt(sock).close()
    assert path.exists()
    path.unlink()


async def test_connection_cap_answers_503_fast_and_recovers() -> None:
    async with serve_api(max_connections=3) as srv:
        held = [await asyncio.open_unix_connection(str(srv.path)) for _ in range(3)]
        async with asyncio.timeout(5):
            refused = await srv.raw(HEALTH)
        assert refused.startswith(b"HTTP/1.1 503")
        head, _, body = refused.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert length == len(body)
        assert orjson.loads(body)["error"]["code"] == "too_many_connections"
        assert srv.tracker.refused >= 1
        for _, writer in held:
            writer.close()
            await writer.wait_closed()
        async with asyncio.timeout(5):
            while srv.tracker.open_count:
                await asyncio.sleep(0.01)
        served = await srv.raw(HEALTH_CLOSE)
        assert served.startswith(b"HTTP/1.1 200")
        assert srv.metrics.opened == srv.metrics.closed + srv.tracker.open_count


async def test_slow_headers_are_cut_off() -> None:
    async with serve_api(idle_timeout=0.5) as srv:
        reader, writer = await asyncio.open_unix_connection(str(srv.path))
        closed = False
        async with asyncio.timeout(10):  # bound; the idle timeout is 0.5 s
            for byte in HEALTH[:-2]:
                try:
                    writer.write(bytes([byte]))
                    await writer.drain()
                except (ConnectionResetError, BrokenPipeError):
                    closed = True
                    break
                await asyncio.sleep(0.05)
            if not closed:
                closed = await reader.read() == b""
        assert closed
        writer.close()


async def test_our_head_deadline_holds_whatever_aiohttp_does() -> None:
    """With aiohttp's keep-alive timer far away (30 s), the head deadline alone cuts a
    trickling client; a long-poll with a complete head is not cut by it."""
    async with serve_api(idle_timeout=30, head_timeout=0.5) as srv:
        vid = srv.cache.put("app/k", b"v")
        reader, writer = await asyncio.open_unix_connection(str(srv.path))
        closed = False
        async with asyncio.timeout(10):
            for byte in HEALTH[:-2]:
                try:
                    writer.write(bytes([byte]))
                    await writer.drain()
                except (ConnectionResetError, BrokenPipeError):
                    closed = True
                    break
                await asyncio.sleep(0.05)
            if not closed:
                closed = await reader.read() == b""
        assert closed
        writer.close()
        poll = close_get(f"/v1/secrets/app/k?wait=1500ms&index={vid}".encode())
        answer = await srv.raw(poll, timeout=10)
        assert status_of(answer) == 200


async def test_idle_connection_is_closed() -> None:
    async with serve_api(idle_timeout=0.3) as srv:
        reader, writer = await asyncio.open_unix_connection(str(srv.path))
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        writer.close()


@pytest.mark.parametrize("kind", sorted(HOSTILE))
async def test_hostile_bytes_get_4xx_or_close_and_serving_goes_on(kind: str) -> None:
    async with serve_api() as srv:
        srv.cache.put("app/k", b"hostile-canary-value")
        answer = await srv.raw(HOSTILE[kind])
        status = status_of(answer)
        assert status is None or 400 <= status < 500, answer[:200]
        assert b"hostile-canary-value" not in answer
        assert b"Traceback" not in answer
        ok = await srv.raw(HEALTH_CLOSE)
        assert status_of(ok) == 200


async def test_smuggled_second_request_is_not_served() -> None:
    """CL+TE: whatever the first answer, the smuggled request must not be answered."""
    async with serve_api() as srv:
        answer = await srv.raw(HOSTILE["cl+te"])
        assert answer.count(b"HTTP/1.1 ") <= 1
        assert b"secretd_reads_total" not in answer
