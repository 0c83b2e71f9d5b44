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

from secretd.api.listener import ConnectionLimits, ListenerError, UnixListener
from secretd.errors import ConfigError
from tests.integration.api_harness import serve_api
from tests.integration.hostile_requests import (
    HEALTH_CLOSE,
    HOSTILE,
    close_get,
    malformed_with,
    status_of,
)

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


async def _read_to_eof(path: Path, data: bytes, *, within: float = 10.0) -> bytes:
    """Send `data`; everything the server writes until it closes the connection.
    Fails if the connection is still open after `within` seconds."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(within):
            return await reader.read()
    finally:
        writer.close()


PLANTED = b"tok-planted-0123456789abcdef"


@pytest.mark.parametrize("kind", sorted(malformed_with(PLANTED)))
async def test_parser_errors_are_ours_and_echo_nothing(kind: str) -> None:
    """aiohttp's default 400 page quotes the offending line (a token header
    included); every error body must be our JSON and carry nothing sent."""
    async with serve_api() as srv:
        answer = await _read_to_eof(srv.path, malformed_with(PLANTED)[kind])
        assert PLANTED not in answer
        head, _, body = answer.partition(b"\r\n\r\n")
        status = status_of(answer)
        assert status is not None and 400 <= status < 500, answer[:200]
        assert b"content-type: application/json" in head.lower()
        error = orjson.loads(body)["error"]
        assert set(error) == {"code", "message"}
        assert status_of(await srv.raw(HEALTH_CLOSE)) == 200


@pytest.mark.parametrize(
    "body",
    [
        b"Content-Length: 5\r\n\r\nhello",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_a_get_with_a_body_is_refused_and_the_connection_closed(body: bytes) -> None:
    """The 400 for a body ends the connection: a request pipelined after the body
    is never answered, and the client sees EOF."""
    async with serve_api() as srv:
        first = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + body
        answer = await _read_to_eof(srv.path, first + b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(answer) == 400
        assert answer.count(b"HTTP/1.") == 1
        assert b"secretd_" not in answer
        head = answer.partition(b"\r\n\r\n")[0].lower()
        assert b"connection: close" in head


async def test_a_pipelined_long_poll_is_answered_at_its_wait() -> None:
    """A long-poll sent in the same write as the request before it is a complete
    head already: the head deadline must not cut it off while it waits."""
    async with serve_api(idle_timeout=30, head_timeout=0.5) as srv:
        vid = srv.cache.put("app/k", b"v")
        first = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
        poll = close_get(f"/v1/secrets/app/k?wait=2s&index={vid}".encode())
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await _read_to_eof(srv.path, first + poll)
        assert answer.count(b"HTTP/1.1 200 OK") == 2, answer[-300:]
        assert orjson.loads(answer.rpartition(b"\r\n\r\n")[2])["version_id"] == vid
        assert loop.time() - started >= 1.5  # it waited (2 s), was not cut at 0.5 s


async def test_a_pipelined_partial_head_after_complete_ones_is_still_timed() -> None:
    """Complete heads followed by the start of another: the start is held to the
    head deadline (the fix for pipelined long-polls must not lift it)."""
    async with serve_api(idle_timeout=30, head_timeout=0.5) as srv:
        data = HEALTH + HEALTH + b"GET /v1/hea"
        answer = await _read_to_eof(srv.path, data, within=10)
        assert answer.count(b"HTTP/1.1 200 OK") == 2


async def test_a_peer_that_never_reads_is_aborted_after_the_write_timeout() -> None:
    """Pipelined answers nobody reads: the connection goes once its output has
    waited write_timeout, while a long-poll that writes nothing for longer is
    untouched."""
    async with serve_api() as srv:
        srv.tracker.limits = ConnectionLimits(64, write_timeout=0.5)
        vid = srv.cache.put("app/k", b"v")
        _, writer = await asyncio.open_unix_connection(str(srv.path))
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
        await writer.drain()
        try:
            async with asyncio.timeout(15):  # a bound, not a speed target
                while srv.tracker.open_count:
                    await asyncio.sleep(0.05)
        finally:
            writer.close()
        poll = close_get(f"/v1/secrets/app/k?wait=1500ms&index={vid}".encode())
        assert status_of(await _read_to_eof(srv.path, poll)) == 200
