"""SIGHUP reload of the real agent: a valid config is swapped in whole (new rules,
new declared secrets); an invalid or unappliable one is rejected and the old one
keeps serving; long-polls parked across a reload still see rotations."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp

from tests.e2e.agent_proc import AgentProcess, Store, config_text
from tests.e2e.conftest import ALLOW_ROOT, StartAgent

ALLOW_OTHER = '[[allow]]\nsecrets = ["other/*"]\nuids = [0]\n\n'


def sighup(agent: AgentProcess) -> None:
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGHUP)


async def wait_log(agent: AgentProcess, event: str, count: int = 1) -> None:
    async with asyncio.timeout(20):
        while agent.log().count(event) < count:
            await asyncio.sleep(0.05)


def rewrite(agent: AgentProcess, text: str) -> None:
    agent.config.write_text(text)
    agent.config.chmod(0o600)


async def test_reload_applies_new_rules_and_rejects_bad_configs(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    store.put("app/k", b"app-value")
    store.put("other/k", b"other-value")
    agent = await start_agent()
    async with agent.session() as http:
        assert (await http.get("/v1/secrets/app/k")).status == 200
        assert (await http.get("/v1/secrets/other/k")).status == 403

        # a broken config: rejected, the old rules keep working
        rewrite(agent, config_text(workdir, store, allow=ALLOW_ROOT) + "[nonsense]\n")
        sighup(agent)
        await wait_log(agent, "config.reload_rejected")
        assert (await http.get("/v1/secrets/app/k")).status == 200

        # a socket change cannot be applied without a restart: rejected too
        moved = config_text(workdir, store, allow=ALLOW_ROOT).replace("s.sock", "t.sock")
        rewrite(agent, moved)
        sighup(agent)
        await wait_log(agent, "config.reload_rejected", 2)
        assert (await http.get("/v1/secrets/app/k")).status == 200

        # a valid one: swapped in whole
        rewrite(
            agent,
            config_text(workdir, store, allow=ALLOW_OTHER, declared=("other/k",)),
        )
        sighup(agent)
        await wait_log(agent, "config.reloaded")
        async with asyncio.timeout(10):
            while (await http.get("/v1/secrets/other/k")).status != 200:
                await asyncio.sleep(0.05)
        assert (await http.get("/v1/secrets/app/k")).status == 403
        health = await (await http.get("/v1/health")).json()
        assert health["status"] == "ok"
    assert agent.proc is not None and agent.proc.poll() is None
    assert agent.stop() < 5.0


async def test_a_parked_long_poll_survives_a_reload(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    first = store.put("app/k", b"one")
    agent = await start_agent(declared=("app/k",))
    async with agent.session() as http:
        poll = asyncio.create_task(
            http.get("/v1/secrets/app/k", params={"wait": "30s", "index": first})
        )
        await asyncio.sleep(0.2)
        sighup(agent)  # same config: a full swap all the same
        await wait_log(agent, "config.reloaded")
        second = await asyncio.to_thread(store.put, "app/k", b"two")
        async with asyncio.timeout(15):
            resp = await poll
        body = await resp.json()
        assert (body["version_id"], body["value"]) == (second, "two")


async def read_value(http: aiohttp.ClientSession, name: str) -> tuple[int, str | None]:
    async with http.get(f"/v1/secrets/{name}") as resp:
        body = await resp.json()
        return resp.status, body.get("value")


async def test_rollback_protection_survives_a_reload_and_a_restart(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    store.put("app/k", b"old")
    record = store.record_path("app/k")
    older = record.read_bytes()  # an authentic record, its first generation
    first = json.loads(older)["generation"]
    store.put("app/k", b"new")
    agent = await start_agent(declared=("app/k",))
    async with agent.session() as http:
        assert await read_value(http, "app/k") == (200, "new")
        record.write_bytes(older)  # the older file is put back: a replay
        await wait_log(agent, "went back from generation")
        assert await read_value(http, "app/k") != (200, "old")

        sighup(agent)  # the same config: a reload keeps the backend and its marks
        await wait_log(agent, "config.reloaded")
        async with http.get("/v1/secrets/app/k", params={"refresh": "true"}) as resp:
            body = await resp.json()
        assert body.get("value") != "old"
    agent.stop()

    # A restart reads the marks back from the state directory: still refused.
    restarted = await start_agent(declared=("app/k",))
    async with restarted.session() as http:
        status, value = await read_value(http, "app/k")
    assert value != "old" and status == 503
    assert f"went back from generation {first + 1} to {first}" in restarted.log()
    marks = list((workdir / "state").glob("file-store-*.json"))
    assert len(marks) == 1 and f'"app/k":{first + 1}' in marks[0].read_text()


async def test_sigusr1_reopens_the_audit_log_and_reloads_nothing(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    store.put("app/k", b"v")
    agent = await start_agent()
    async with agent.session() as http:
        assert (await read_value(http, "app/k"))[0] == 200
        rotated = agent.audit_path.with_suffix(".1")
        agent.audit_path.rename(rotated)  # what logrotate does
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGUSR1)
        await wait_log(agent, "audit.reopened")
        assert (await read_value(http, "app/k"))[0] == 200
    lines = [json.loads(line) for line in agent.audit_path.read_text().splitlines()]
    assert [(e["event"], e["secret"]) for e in lines] == [("read", "app/k")]
    assert rotated.read_text().count('"event":"read"') == 1
    assert "config.reloaded" not in agent.log() and "RELOADING" not in agent.log()
    assert agent.audit_path.stat().st_mode & 0o777 == 0o600
