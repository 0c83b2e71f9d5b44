"""systemd `LoadCredential=ID:<socket>` on the agent's own socket: the request is the
client's abstract address; honoured only from uid 0, else closed with nothing written.
The client half-closes before it reads, as systemd does (tests.fakes.credential_client)."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path

import orjson

from tests.e2e.agent_proc import Store
from tests.e2e.conftest import ALLOW_ROOT, StartAgent
from tests.fakes.credential_client import SCRIPT, load_credential
from tests.servers.second_user import can_switch_users, ensure_test_user, run_python_as

CREDENTIAL = (
    '[[credential]]\nunit = "app*.service"\nid = "db-password"\n'
    'secret = "app/db"\nfield = "password"\n'
)


async def test_credential_served_to_uid_0_and_refused_otherwise(
    store: Store, start_agent: StartAgent
) -> None:
    store.put("app/db", b'{"password": "cred-pw-42"}')
    agent = await start_agent(allow=ALLOW_ROOT + CREDENTIAL)
    sock = str(agent.socket)
    assert (
        await asyncio.to_thread(load_credential, sock, "app-web.service", "db-password")
        == b"cred-pw-42"
    )
    assert await asyncio.to_thread(load_credential, sock, "other.service", "db-password") == b""
    assert await asyncio.to_thread(load_credential, sock, "app-web.service", "nope") == b""
    if can_switch_users():
        user = ensure_test_user()
        done = await asyncio.to_thread(
            run_python_as, user, SCRIPT, sock, "app-web.service", "db-password"
        )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout == b""
    # HTTP on the same socket is unaffected
    async with agent.session() as http:
        assert (await http.get("/v1/health")).status == 200
    lines = [orjson.loads(x) for x in agent.audit_path.read_bytes().splitlines()]
    results = [x["result"] for x in lines if x["event"] == "credential"]
    assert results[:3] == ["ok", "no_match", "no_match"]
    if can_switch_users():
        assert results[3] == "forbidden_peer"
    assert b"cred-pw-42" not in agent.audit_path.read_bytes()
    assert "cred-pw-42" not in agent.log()


async def test_the_dedicated_credentials_socket_is_0600_and_speaks_no_http(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    store.put("app/db", b'{"password": "cred-pw-42"}')
    path = workdir / "creds.sock"
    agent = await start_agent(
        allow=ALLOW_ROOT + CREDENTIAL, agent_extra=f'credentials_socket = "{path}"\n'
    )
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    plain = socket.socket(socket.AF_UNIX)  # no credential address: closed, nothing written
    plain.settimeout(10)
    plain.connect(str(path))
    plain.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        answer = plain.recv(65536)
    except ConnectionResetError:
        answer = b""
    plain.close()
    assert answer == b""
    assert (
        await asyncio.to_thread(load_credential, str(path), "other.service", "db-password") == b""
    )
    assert agent.stop() < 5.0
    assert not path.exists()


async def test_the_dedicated_credentials_socket_serves_credentials(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    store.put("app/db", b'{"password": "cred-pw-42"}')
    path = workdir / "creds.sock"
    await start_agent(allow=ALLOW_ROOT + CREDENTIAL, agent_extra=f'credentials_socket = "{path}"\n')
    assert (
        await asyncio.to_thread(load_credential, str(path), "app-web.service", "db-password")
        == b"cred-pw-42"
    )
