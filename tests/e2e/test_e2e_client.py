"""The SDK and the client commands (`get`, `status`, `exec`) against the real
`secretd agent` over its Unix socket, with rotation made by `secretd store put`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import secretd_client as sc
from tests.e2e.agent_proc import BIN, AgentProcess, Store
from tests.e2e.conftest import StartAgent
from tests.integration.waits import until

CANARY = "e2e-client-canary-3kP"
DB = json.dumps({"user": "app", "password": CANARY}).encode()


def cli(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, SECRETD_SOCKET=str(agent.socket))
    return subprocess.run([str(BIN), *args], env=env, capture_output=True, timeout=30, check=False)


async def test_sdk_reads_lists_and_health(store: Store, start_agent: StartAgent) -> None:
    first = store.put("app/db", DB)
    second = store.put("app/db", b'{"password": "two"}')
    store.put("other/x", b"hidden")
    agent = await start_agent(declared=("app/db",))
    async with sc.AsyncClient(agent.socket) as client:
        current = await client.get("app/db", field="password")
        assert (current.value, current.version_id, current.stale) == ("two", second, False)
        previous = await client.get("app/db", stage="previous", field="password")
        assert (previous.value, previous.version_id) == (CANARY, first)
        assert (await client.get("app/db", version=first)).stages == {"previous"}
        assert (await client.get("app/db", refresh=True)).version_id == second
        assert [row.name for row in await client.list("app/")] == ["app/db"]
        health = await client.health()
        assert health.ok and health.backends["local"].ok
        with pytest.raises(sc.NotFound):
            await client.get("app/missing")
        with pytest.raises(sc.Forbidden):  # the same answer whether it exists or not
            await client.get("other/x")
        with pytest.raises(sc.Forbidden):
            await client.get("other/missing")
        with pytest.raises(sc.InvalidRequest):
            await client.get("app/db", field="nope")


async def test_watch_and_cache_follow_store_put(store: Store, start_agent: StartAgent) -> None:
    store.put("app/rot", b"one")
    agent = await start_agent(declared=("app/rot",))
    async with sc.AsyncClient(agent.socket, cache=True) as client:
        watch = client.watch("app/rot", wait=10)
        assert (await anext(watch)).value == "one"
        assert (await client.get("app/rot")).value == "one"
        vid = await asyncio.to_thread(store.put, "app/rot", b"two")
        async with asyncio.timeout(10):
            rotated = await anext(watch)
        assert (rotated.version_id, rotated.value) == (vid, "two")
        await watch.aclose()
        for _ in range(500):
            if (await client.get("app/rot")).value == "two":
                break
            await asyncio.sleep(0.01)
        assert (await client.get("app/rot")).version_id == vid


async def test_cli_get_and_status(store: Store, start_agent: StartAgent) -> None:
    vid = store.put("app/db", DB)
    store.put("other/x", b"hidden")
    agent = await start_agent(declared=("app/db",))
    got = await asyncio.to_thread(cli, agent, "get", "app/db", "--field", "password")
    assert (got.returncode, got.stdout) == (0, CANARY.encode())
    document = json.loads((await asyncio.to_thread(cli, agent, "get", "app/db", "--json")).stdout)
    assert document["version_id"] == vid and document["value"] == DB.decode()
    for name, code in (("app/none", 1), ("other/x", 1), ("app/../x", 2)):
        failed = await asyncio.to_thread(cli, agent, "get", name)
        assert failed.returncode == code, name
        assert failed.stderr.decode().count("\n") == 1 and failed.stdout == b""
    status = await asyncio.to_thread(cli, agent, "status")
    out = status.stdout.decode()
    assert status.returncode == 0, status.stderr
    assert "app/db" in out and vid in out and "local" in out and "other/x" not in out
    assert CANARY not in out + status.stderr.decode()
    as_json = json.loads((await asyncio.to_thread(cli, agent, "status", "--json")).stdout)
    assert as_json["health"]["status"] == "ok"
    assert CANARY not in json.dumps(as_json)


async def test_exec_restarts_on_store_put(
    store: Store, start_agent: StartAgent, workdir: Path
) -> None:
    store.put("app/db", DB)
    agent = await start_agent(declared=("app/db",))
    log = workdir / "child.log"
    script = workdir / "child.py"
    script.write_text(
        "import os, sys, time\n"
        "with open(sys.argv[1], 'a') as f:\n"
        "    f.write(f\"{os.getpid()} {os.environ['PW']}\\n\")\n"
        "for _ in range(600): time.sleep(0.1)\n"
    )
    env = dict(os.environ, SECRETD_SOCKET=str(agent.socket))
    argv = [str(BIN), "exec", "--restart", "--grace", "2s", "--env", "PW=app/db#password"]
    proc = subprocess.Popen([*argv, "--", sys.executable, str(script), str(log)], env=env)

    def starts() -> list[list[str]]:
        text = log.read_text() if log.exists() else ""
        return [line.split(" ", 1) for line in text.splitlines()]

    try:
        await until(lambda: len(starts()) == 1)
        pid = int(starts()[0][0])
        assert starts()[0][1] == CANARY
        assert CANARY.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert f"PW={CANARY}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        await asyncio.to_thread(store.put, "app/db", b'{"password": "rotated"}')
        await until(lambda: len(starts()) == 2)
        assert starts()[1][1] == "rotated" and starts()[1][0] != starts()[0][0]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
    assert code == 128 + signal.SIGTERM  # the child had no handler: it died by the signal
    assert CANARY not in agent.log()


async def test_watch_survives_an_agent_restart(store: Store, start_agent: StartAgent) -> None:
    store.put("app/k", b"one")
    agent = await start_agent(declared=("app/k",))
    async with sc.AsyncClient(agent.socket) as client:
        watch = client.watch("app/k", wait=10, backoff=sc.Backoff(initial=0.05, maximum=0.5))
        assert (await anext(watch)).value == "one"
        pending = asyncio.ensure_future(anext(watch))
        assert await asyncio.to_thread(agent.stop) < 5
        vid = await asyncio.to_thread(store.put, "app/k", b"two")  # rotated while it was down
        await start_agent(declared=("app/k",))
        async with asyncio.timeout(15):
            rotated = await pending
        assert (rotated.version_id, rotated.value) == (vid, "two")
        await watch.aclose()


async def test_names_with_every_allowed_character(store: Store, start_agent: StartAgent) -> None:
    name = "app/A-z_0+9=x.y@host"
    store.put(name, b"odd")
    agent = await start_agent()
    async with sc.AsyncClient(agent.socket) as client:
        secret = await client.get(name)
        assert (secret.name, secret.value) == (name, "odd")
    got = await asyncio.to_thread(cli, agent, "get", name)
    assert (got.returncode, got.stdout) == (0, b"odd")
