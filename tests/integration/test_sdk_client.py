"""The SDK over a real Unix socket, against the fake agent (tests/fakes/api_server.py):
transport faults, timeouts, reconnecting watches and the cache going stale."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import secretd_client as sc
from tests.e2e.agent_proc import short_tmp
from tests.fakes.api_server import FakeAgent

FAST = sc.Backoff(initial=0.01, maximum=0.05)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with short_tmp("sdk-") as path:
        yield path


@pytest.fixture
def agent(sock_dir: Path) -> Iterator[FakeAgent]:
    with FakeAgent(sock_dir / "a.sock", {"db/app": '{"password": "pw"}', "bin": b"\xff"}) as fake:
        yield fake


def _eventually(check: Callable[[], bool], attempts: int = 500) -> None:
    for _ in range(attempts):
        if check():
            return
        time.sleep(0.01)
    raise AssertionError("condition never held")


def test_sync_client_reads_lists_and_checks_health(agent: FakeAgent) -> None:
    with sc.Client(agent.socket_path) as client:
        assert client.get("db/app", field="password").value == "pw"
        assert client.get("bin").value == b"\xff"
        assert [row.name for row in client.list()] == ["bin", "db/app"]
        assert client.health().status == "ok"
        with pytest.raises(sc.NotFound):
            client.get("nope")
    assert "/v1/secrets/db/app?field=password" in agent.paths


def test_socket_from_environment(agent: FakeAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRETD_SOCKET", agent.socket_path)
    with sc.Client() as client:
        assert client.socket == agent.socket_path
        assert client.get("db/app").version_id == "v1"


async def test_async_client_reads(agent: FakeAgent) -> None:
    async with sc.AsyncClient(agent.socket_path) as client:
        assert (await client.get("db/app", field="password")).value == "pw"
        assert (await client.health()).ok


def test_missing_socket_is_agent_unavailable(sock_dir: Path) -> None:
    with sc.Client(sock_dir / "none.sock") as client, pytest.raises(sc.AgentUnavailable) as info:
        client.get("db/app")
    assert "none.sock" in str(info.value) and "no such socket" in str(info.value)


def test_dead_socket_file_is_agent_unavailable(sock_dir: Path) -> None:
    path = sock_dir / "dead.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.close()  # the file stays, nobody listens
    with sc.Client(path) as client, pytest.raises(sc.AgentUnavailable) as info:
        client.health()
    assert "refused" in str(info.value)


def test_hang_up_and_garbage_are_typed(agent: FakeAgent) -> None:
    with sc.Client(agent.socket_path) as client:
        agent.inject("hang_up")
        with pytest.raises(sc.AgentUnavailable):
            client.get("db/app")
        agent.inject("garbage")
        with pytest.raises(sc.ProtocolError):
            client.get("db/app")
        agent.inject("not_a_secret")
        with pytest.raises(sc.ProtocolError):
            client.get("db/app")
        assert client.get("db/app").version_id == "v1"  # the connection pool recovered


def test_oversized_answers_are_refused(agent: FakeAgent) -> None:
    agent.secrets.rotate("big", "x" * 5000)
    with sc.Client(agent.socket_path, max_response_bytes=1000) as client:
        with pytest.raises(sc.ProtocolError, match="oversized"):
            client.get("big")
        assert client.get("bin").value == b"\xff"  # and the client carries on


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_endless_answers_are_cut_off(agent: FakeAgent, mode: str) -> None:
    agent.inject("endless")
    limit = 1024 * 1024
    if mode == "sync":
        client = sc.Client(agent.socket_path, max_response_bytes=limit)
        with client, pytest.raises(sc.ProtocolError, match="oversized"):
            client.get("db/app")
        return
    async with sc.AsyncClient(agent.socket_path, max_response_bytes=limit) as aclient:
        with pytest.raises(sc.ProtocolError, match="oversized"):
            await aclient.get("db/app")


def test_slow_agent_is_a_request_timeout(agent: FakeAgent) -> None:
    agent.inject("slow")
    with sc.Client(agent.socket_path, timeout=0.3) as client, pytest.raises(sc.RequestTimeout):
        client.get("db/app")


def test_watch_sees_rotation_over_the_socket(agent: FakeAgent) -> None:
    with sc.Client(agent.socket_path) as client:
        watch = client.watch("db/app", wait=10, backoff=FAST)
        assert next(watch).version_id == "v1"
        agent.secrets.rotate("db/app", '{"password": "pw2"}')
        assert next(watch).version_id == "v2"
    assert any("wait=10s&index=v1" in path for path in agent.paths)


def test_watch_reconnects_after_the_agent_restarts(agent: FakeAgent) -> None:
    with sc.Client(agent.socket_path, timeout=1) as client:
        watch = client.watch("db/app", wait=10, backoff=FAST)
        assert next(watch).version_id == "v1"
        agent.stop()
        agent.secrets.rotate("db/app", "while away")
        restarted = time.monotonic()
        agent.start()
        assert next(watch).version_id == "v2"
        assert time.monotonic() - restarted < 30


def test_watch_ends_when_access_is_revoked(agent: FakeAgent) -> None:
    with sc.Client(agent.socket_path) as client:
        watch = client.watch("db/app", wait=10, backoff=FAST)
        next(watch)
        agent.secrets.forbid("db/app")
        agent.secrets.rotate("db/app", "x")
        with pytest.raises(sc.Forbidden):
            next(watch)


async def test_eager_long_poll_answers_do_not_spin(agent: FakeAgent) -> None:
    agent.inject("eager", 1000)
    async with sc.AsyncClient(agent.socket_path) as client:
        watch = client.watch("db/app", wait=10, backoff=sc.Backoff(initial=0.05, maximum=0.2))
        await anext(watch)
        task = asyncio.ensure_future(anext(watch))
        await asyncio.sleep(1.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watch.aclose()
    # spinning would be thousands of requests in a second; backoff keeps it to a few
    assert len(agent.paths) < 40


def test_cache_serves_stale_while_the_agent_is_away(agent: FakeAgent) -> None:
    with sc.Client(agent.socket_path, cache=True, timeout=1) as client:
        assert client.get("db/app").stale is False
        agent.stop()
        _eventually(lambda: client.get("db/app").stale)
        assert client.get("db/app").value == '{"password": "pw"}'
        agent.secrets.rotate("db/app", "fresh")
        agent.start()
        _eventually(lambda: client.get("db/app").value == "fresh")
        assert client.get("db/app").stale is False
