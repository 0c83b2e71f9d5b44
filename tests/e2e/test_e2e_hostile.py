"""Hostile bytes, slow clients and connection floods against the real agent.

Run with both of aiohttp's HTTP parsers: the C one and the pure-Python one
(`AIOHTTP_NO_EXTENSIONS=1`), as request-smuggling advisories hit them differently.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.agent_proc import AgentProcess, Store
from tests.e2e.conftest import StartAgent
from tests.integration.hostile_requests import HEALTH_CLOSE, HOSTILE, close_get, status_of

CANARY = b"hostile-e2e-canary-value"
PARSERS = {"c-parser": {}, "py-parser": {"AIOHTTP_NO_EXTENSIONS": "1"}}


@pytest.mark.parametrize("parser", sorted(PARSERS))
async def test_hostile_requests_get_4xx_or_close(
    parser: str, store: Store, start_agent: StartAgent
) -> None:
    store.put("app/k", CANARY)
    agent = await start_agent(env=PARSERS[parser])
    for kind, data in sorted(HOSTILE.items()):
        answer = await agent.raw(data, timeout=3.0)
        status = status_of(answer)
        assert status is None or 400 <= status < 500, (kind, answer[:200])
        assert CANARY not in answer, kind
        assert b"Traceback" not in answer, kind
        assert answer.count(b"HTTP/1.1 ") <= 1, kind  # nothing smuggled through
        assert status_of(await agent.raw(HEALTH_CLOSE)) == 200, kind
    assert agent.proc is not None and agent.proc.poll() is None
    assert CANARY.decode() not in agent.log()


async def _half_open(agent: AgentProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that sends half a request line and then nothing."""
    reader, writer = await asyncio.open_unix_connection(str(agent.socket))
    writer.write(b"GET /v1/secrets/app/k HTT")
    await writer.drain()
    return reader, writer


async def _closed_by_peer(reader: asyncio.StreamReader) -> bool:
    try:
        return await reader.read() == b""
    except ConnectionResetError:
        return True


async def test_slow_clients_do_not_delay_a_normal_one(
    store: Store, start_agent: StartAgent
) -> None:
    store.put("app/k", b"v")
    agent = await start_agent()
    slow = await asyncio.gather(*(_half_open(agent) for _ in range(200)))
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(5):  # a bound, not a speed target
            answer = await agent.raw(close_get(b"/v1/secrets/app/k"))
        assert status_of(answer) == 200
        print(f"normal read beside 200 half-open clients: {loop.time() - started:.3f}s")
        # ...and the half-open ones are cut off after idle_timeout (2 s here).
        async with asyncio.timeout(15):
            closed = await asyncio.gather(*(_closed_by_peer(reader) for reader, _ in slow))
        assert all(closed)
    finally:
        for _, writer in slow:
            writer.close()


async def _one_client(agent: AgentProcess) -> int | None:
    try:
        return status_of(await agent.raw(HEALTH_CLOSE, timeout=20))
    except OSError:
        return None  # refused at connect (backlog full): an answer, not a hang


@pytest.mark.parametrize("max_connections", [1024, 100])
async def test_a_thousand_concurrent_clients_are_served_or_refused_fast(
    max_connections: int, store: Store, start_agent: StartAgent
) -> None:
    store.put("app/k", b"v")
    agent = await start_agent(limits=f"max_connections = {max_connections}\n")
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(40):  # none may hang
        statuses = await asyncio.gather(*(_one_client(agent) for _ in range(1000)))
    took = loop.time() - started
    served = statuses.count(200)
    refused = statuses.count(503)
    other = len(statuses) - served - refused
    print(f"cap {max_connections}: {served} served, {refused} 503, {other} other in {took:.2f}s")
    assert other == 0  # every client got an answer: served, or a fast 503
    assert served >= min(max_connections, 1000) // 2
    if max_connections >= 1000:
        assert served == 1000
    assert status_of(await agent.raw(HEALTH_CLOSE)) == 200
