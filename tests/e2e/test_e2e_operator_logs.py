"""What an operator reads while the agent starts and runs (docs/troubleshooting.md):
one `agent.serving` line naming the real socket with what was loaded and
rendered; a failed load a reader waited on is a warning; a backend nobody has
used yet is "unknown", not "ok". The real agent, its JSON log and `secretd status`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson

from tests.e2e.agent_proc import BIN, AgentProcess, Store
from tests.e2e.conftest import StartAgent


def events(agent: AgentProcess, name: str) -> list[dict[str, object]]:
    lines = agent.log_path.read_bytes().splitlines()
    found = []
    for line in lines:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event") == name:
            found.append(event)
    return found


async def test_one_serving_line_names_the_socket_and_what_was_loaded(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    store.put("app/one", b"1")
    out = workdir / "out"
    out.mkdir(mode=0o700)
    template = (
        f'[[template]]\ndestination = "{out}/ok.env"\nformat = "env"\nvars = {{ A = "app/one" }}\n'
        f'[[template]]\ndestination = "{out}/bad.env"\nformat = "env"\n'
        'vars = { B = "app/missing" }\n'
    )
    agent = await start_agent(declared=("app/one", "app/absent"), allow=template)
    [serving] = events(agent, "agent.serving")
    assert serving["socket"] == str(agent.socket)
    assert serving["secrets"] == 1  # app/absent and the template's app/missing failed
    assert serving["secrets_failed"] == 2
    assert serving["templates"] == 2 and serving["templates_failed"] == 1
    assert serving["backends"] == 1


async def test_a_failed_load_a_reader_waited_on_is_a_warning(
    store: Store, start_agent: StartAgent
) -> None:
    store.put("app/broken", b"v")
    record = store.record_path("app/broken")
    data = bytearray(record.read_bytes())
    data[-10] ^= 0x01  # tampered: it will not verify
    record.write_bytes(bytes(data))
    agent = await start_agent()
    async with agent.session() as http:
        response = await http.get("/v1/secrets/app/broken")
        assert response.status >= 500
    [failed] = events(agent, "secret.load_failed")
    assert failed["level"] == "warning"
    assert failed["secret"] == "app/broken"


async def test_status_says_unknown_for_a_backend_not_yet_used(
    store: Store, start_agent: StartAgent
) -> None:
    store.put("app/one", b"1")
    agent = await start_agent()

    def status() -> str:
        done = subprocess.run(
            [str(BIN), "status", "--socket", str(agent.socket)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return done.stdout

    async with agent.session() as http:
        health = await (await http.get("/v1/health")).json()
        assert health["backends"]["local"]["state"] == "unknown"
        assert health["status"] == "ok"
        assert "local  unknown (not yet used)" in status()
        assert (await http.get("/v1/secrets/app/one")).status == 200
        health = await (await http.get("/v1/health")).json()
        assert health["backends"]["local"]["state"] == "ok"
    assert "local  yes" in status()
