"""`secretd rotate` and the rotation API on the real agent and file store
(docs/rotation.md): the `random` and `command` rotators, who may rotate,
what status shows, and the CLI with and without an agent."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import orjson

from secretd_client import AsyncClient
from tests.e2e.agent_proc import BIN, AgentProcess, Store, secretd
from tests.e2e.conftest import StartAgent
from tests.servers.moto_server import free_port
from tests.servers.pg_app import store_values
from tests.servers.second_user import TestUser, ensure_test_user, needs_root, raw_request_as

ALLOW = '[[allow]]\nsecrets = ["app/**", "svc/*"]\nuids = [0]\n\n'


def request_as(user: TestUser, sock: Path, line: str) -> tuple[int, dict[str, object]]:
    head, _, body = raw_request_as(user, str(sock), line).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body)


async def _start(
    workdir: Path, start_agent: StartAgent, rotation: str, allow: str = ALLOW
) -> AgentProcess:
    return await start_agent(allow=allow + rotation)


RANDOM_FIELD = (
    '[[rotation]]\nsecret = "app/hmac"\nrotator = "random"\nevery = "30d"\n'
    'field = "key"\nlength = 40\nalphabet = "hex"\n\n'
)


async def test_random_rotation_of_a_field_through_the_agent(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    store.put("app/hmac", b'{"key": "old-key", "algorithm": "sha256"}')
    agent = await _start(workdir, start_agent, RANDOM_FIELD)
    async with AsyncClient(str(agent.socket)) as client:
        before = await client.get("app/hmac")
        watcher = client.watch("app/hmac", index=before.version_id, wait=20)
        waiting = asyncio.ensure_future(anext(watcher))
        out = await asyncio.to_thread(
            secretd, "rotate", "app/hmac", "--socket", str(agent.socket), "--json"
        )
        outcome = json.loads(out)
        changed = await asyncio.wait_for(waiting, 20)
        await watcher.aclose()
        previous = await client.get("app/hmac", stage="previous")
    assert outcome["steps"] == ["create", "set", "test", "finish"]
    assert changed.version_id == outcome["version_id"]
    document = json.loads(changed.as_text())
    assert document["algorithm"] == "sha256"  # other fields kept
    assert len(document["key"]) == 40 and set(document["key"]) <= set("0123456789abcdef")
    assert previous.version_id == before.version_id
    audit = [json.loads(x) for x in agent.audit_path.read_text().splitlines()]
    rotate = [a for a in audit if a["event"] == "rotate"]
    assert [(a["step"], a["result"]) for a in rotate] == [
        ("create", "ok"),
        ("set", "ok"),
        ("test", "ok"),
        ("finish", "ok"),
    ]
    assert all(a["caller"]["uid"] == 0 for a in rotate)
    assert "old-key" not in agent.audit_path.read_text() + agent.log()
    assert document["key"] not in agent.audit_path.read_text() + agent.log()


def _command_rotation(workdir: Path, test_exit: int = 0) -> str:
    """A set command that records what it was given: stdin, argv and environment."""
    seen = workdir / "seen"
    seen.mkdir(exist_ok=True)
    set_script = f'cat > {seen}/stdin; printf "%s\\n" "$0" "$@" > {seen}/argv; env > {seen}/env'
    test_script = f"cmp -s - {seen}/stdin && exit {test_exit}"
    return (
        '[[rotation]]\nsecret = "svc/token"\nrotator = "command"\nevery = "30d"\n'
        f'set = ["/bin/sh", "-c", {json.dumps(set_script)}, "set-token"]\n'
        f'test = ["/bin/sh", "-c", {json.dumps(test_script)}]\n\n'
    )


async def test_command_rotation_hands_the_value_on_stdin_only(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    store.put("svc/token", b"first-token")
    agent = await _start(workdir, start_agent, _command_rotation(workdir))
    async with agent.session() as http, http.post("/v1/rotation/svc/token") as response:
        assert response.status == 200, await response.text()
    async with AsyncClient(str(agent.socket)) as client:
        new = (await client.get("svc/token", refresh=True)).as_bytes()
    seen = workdir / "seen"
    assert (seen / "stdin").read_bytes() == new
    assert new not in (seen / "argv").read_bytes()
    assert new not in (seen / "env").read_bytes()
    assert (seen / "argv").read_text().splitlines() == ["set-token"]


async def test_a_failing_test_command_keeps_current(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    first = store.put("svc/token", b"first-token")
    agent = await _start(workdir, start_agent, _command_rotation(workdir, test_exit=3))
    proc = await asyncio.create_subprocess_exec(
        str(BIN),
        "rotate",
        "svc/token",
        "--socket",
        str(agent.socket),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"test command /bin/sh exited with status 3" in err
    async with AsyncClient(str(agent.socket)) as client:
        assert (await client.get("svc/token", refresh=True)).version_id == first


@needs_root
async def test_only_root_or_the_agents_user_may_rotate(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    user = ensure_test_user()
    store.put("app/hmac", b'{"key": "k"}')
    reader = f'[[allow]]\nsecrets = ["app/*"]\nuids = [{user.uid}]\n\n'
    agent = await _start(workdir, start_agent, RANDOM_FIELD, allow=ALLOW + reader)
    first = await asyncio.to_thread(secretd, "store", "history", str(store.root), "app/hmac")

    status, body = await asyncio.to_thread(
        request_as, user, agent.socket, "POST /v1/rotation/app/hmac"
    )
    assert status == 403 and body["error"]["code"] == "forbidden"  # reading is not rotating
    status, missing = await asyncio.to_thread(
        request_as, user, agent.socket, "POST /v1/rotation/app/nope"
    )
    assert (status, missing) == (403, body)  # the same answer: nothing learnt about names
    assert (
        await asyncio.to_thread(secretd, "store", "history", str(store.root), "app/hmac") == first
    )

    status, listing = await asyncio.to_thread(request_as, user, agent.socket, "GET /v1/rotation")
    assert status == 200
    assert [row["name"] for row in listing["rotations"]] == ["app/hmac"]  # may read it

    async with agent.session() as http:
        async with http.post("/v1/rotation/app/nope") as response:
            assert response.status == 404
        async with http.post("/v1/rotation/app/hmac?bogus=1") as response:
            assert response.status == 400
        async with http.get("/v1/rotation/app/hmac") as response:
            assert response.status == 405


async def test_nobody_rotates_over_tcp(workdir: Path, store: Store) -> None:
    store.put("app/hmac", b'{"key": "k"}')
    token = workdir / "token"
    token.write_bytes(b"tcp-token-0123456789abcdef\n")
    token.chmod(0o600)
    port = free_port()
    config = workdir / "tcp.toml"
    config.write_text(
        f'[agent]\nsocket = "{workdir}/s.sock"\nstate_dir = "{workdir}/state"\n\n'
        f'[tcp]\nlisten = "127.0.0.1:{port}"\ntoken_file = "{token}"\n\n'
        f'[backends.local]\ntype = "file"\npath = "{store.root}"\nkey_file = "{store.key}"\n\n'
        '[[allow]]\nsecrets = ["app/*"]\ntcp = true\n\n' + RANDOM_FIELD
    )
    config.chmod(0o600)
    agent = AgentProcess(workdir, config)
    agent.start()
    try:
        await agent.wait_ready()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST /v1/rotation/app/hmac HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "X-Secretd-Token: tcp-token-0123456789abcdef\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        answer = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
    finally:
        agent.stop()
    assert answer.startswith(b"HTTP/1.1 403")


async def test_rotate_without_an_agent_needs_a_config(workdir: Path, store: Store) -> None:
    store.put("app/hmac", b'{"key": "k"}')
    proc = await asyncio.create_subprocess_exec(
        str(BIN),
        "rotate",
        "app/hmac",
        "--socket",
        str(workdir / "nobody.sock"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 1 and b"give -c CONFIG" in err

    store.put("app/hmac", b'{"key": "initial-key-value"}')
    config = workdir / "direct.toml"
    config.write_text(
        f'[agent]\nsocket = "{workdir}/nobody.sock"\nstate_dir = "{workdir}/state"\n\n'
        f'[backends.local]\ntype = "file"\npath = "{store.root}"\nkey_file = "{store.key}"\n\n'
        + RANDOM_FIELD
    )
    config.chmod(0o600)
    out = await asyncio.to_thread(secretd, "rotate", "app/hmac", "-c", str(config))
    assert "secret app/hmac rotated" in out and "steps run: create, set, test, finish" in out
    state_files = list((workdir / "state" / "rotation").glob("*.json"))
    assert len(state_files) == 1
    assert stat.S_IMODE(state_files[0].stat().st_mode) == 0o600
    state_text = state_files[0].read_text()
    assert set(json.loads(state_text)) == {
        "secret",
        "token",
        "step",
        "last_rotated_at",
        "last_attempt_at",
        "last_result",
        "last_error",
        "failures",
    }
    new_key = store_values(store.root, "app/hmac")[-1]["key"]
    assert "initial-key-value" not in state_text and new_key not in state_text
    assert os.stat(workdir / "state" / "rotation").st_mode & 0o777 == 0o700
