"""Stale serving and recovery through the real agent: a tampered store file is never
served; the last good value is, marked stale, until max_stale; then 503."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from tests.e2e.agent_proc import Store
from tests.e2e.conftest import StartAgent

Check = Callable[[int, dict[str, Any]], bool]


async def until(http: aiohttp.ClientSession, path: str, check: Check, within: float = 15) -> None:
    """Poll `path` until `check(status, body)` holds (bounded)."""
    last: tuple[int, dict[str, Any]] | None = None
    async with asyncio.timeout(within):
        while True:
            resp = await http.get(path)
            last = (resp.status, await resp.json())
            if check(*last):
                return
            await asyncio.sleep(0.05)


def tamper(store: Store, name: str) -> bytes:
    """Flip one byte in the middle of the secret's record; returns the original."""
    path = store.record_path(name)
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return original


def restore(store: Store, name: str, original: bytes) -> None:
    store.record_path(name).write_bytes(original)


async def test_tampered_file_keeps_last_good_value_stale_then_recovers(
    store: Store, start_agent: StartAgent
) -> None:
    vid = store.put("app/k", b"good-value-1")
    agent = await start_agent(declared=("app/k",), cache='max_stale = "1h"\n')
    async with agent.session() as http:
        body = await (await http.get("/v1/secrets/app/k")).json()
        assert (body["value"], body["stale"]) == ("good-value-1", False)

        original = await asyncio.to_thread(tamper, store, "app/k")
        refreshed = await http.get("/v1/secrets/app/k", params={"refresh": "true"})
        assert refreshed.status == 200
        await until(http, "/v1/secrets/app/k", lambda status, b: b.get("stale") is True)
        body = await (await http.get("/v1/secrets/app/k")).json()
        assert (body["value"], body["version_id"], body["stale"]) == ("good-value-1", vid, True)
        health = await (await http.get("/v1/health")).json()
        assert health["status"] == "degraded"
        assert health["cache"]["stale"] >= 1

        await asyncio.to_thread(restore, store, "app/k", original)
        await until(http, "/v1/secrets/app/k", lambda status, b: b.get("stale") is False)
        new = await asyncio.to_thread(store.put, "app/k", b"good-value-2")
        await until(http, "/v1/secrets/app/k", lambda status, b: b.get("version_id") == new)
        body = await (await http.get("/v1/secrets/app/k")).json()
        assert (body["value"], body["stale"]) == ("good-value-2", False)
        assert (await (await http.get("/v1/health")).json())["status"] == "ok"
    assert "good-value" not in agent.log()


async def test_past_max_stale_is_503_until_the_backend_recovers(
    store: Store, start_agent: StartAgent
) -> None:
    store.put("app/k", b"good")
    agent = await start_agent(declared=("app/k",), cache='max_stale = "1s"\n')
    async with agent.session() as http:
        assert (await http.get("/v1/secrets/app/k")).status == 200
        original = await asyncio.to_thread(tamper, store, "app/k")
        gone: Awaitable[None] = until(
            http,
            "/v1/secrets/app/k",
            lambda status, b: status == 503 and b["error"]["code"] == "backend_unavailable",
        )
        await gone
        await asyncio.to_thread(restore, store, "app/k", original)
        await until(http, "/v1/secrets/app/k", lambda status, b: status == 200 and not b["stale"])
        body = await (await http.get("/v1/secrets/app/k")).json()
        assert body["value"] == "good"
