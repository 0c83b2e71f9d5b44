"""SIGHUP reload of the real agent: a valid config is swapped in whole (new rules,
new declared secrets); an invalid or unappliable one is rejected and the old one
keeps serving; long-polls parked across a reload still see rotations."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

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
