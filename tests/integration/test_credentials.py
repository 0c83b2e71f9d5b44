"""LoadCredential= over a real Unix socket: a client bound to systemd's abstract
address gets the value only when it runs as root and a [[credential]] matches."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from secretd.access.identity import peer_caller
from secretd.audit import AuditLog
from secretd.config.schema import CredentialConfig
from secretd.credentials import (
    CredentialProtocol,
    CredentialRequest,
    CredentialService,
    parse_peer_address,
)
from secretd.model import SecretName
from tests.fakes.dict_reader import DictReader
from tests.fakes.second_user import can_switch_users, ensure_test_user, run_python_as

CANARY = "CANARY-cred-5b2f"

CLIENT = """
import os, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind("\\0" + os.urandom(8).hex() + "/unit/" + sys.argv[2] + "/" + sys.argv[3])
sock.settimeout(10)
sock.connect(sys.argv[1])
data = b""
while chunk := sock.recv(4096):
    data += chunk
sys.stdout.write(data.hex())
"""


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    reader = DictReader()
    reader.put("db/app", json.dumps({"password": CANARY, "user": "app"}))
    reader.put("api/key", "k-" + CANARY)
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog.open(str(audit_path))
    service = CredentialService(
        [
            CredentialConfig(
                unit="app.service", id="db-password", secret=SecretName("db/app"), field="password"
            ),
            CredentialConfig(unit="web-*.service", id="api", secret=SecretName("api/key")),
            CredentialConfig(unit="app.service", id="gone", secret=SecretName("no/such")),
        ],
        reader,
        audit,
    )
    path = f"/tmp/sd-cred-{os.getpid()}.sock"
    srv = await asyncio.get_running_loop().create_unix_server(
        lambda: CredentialProtocol(service, peer_caller), path
    )
    try:
        yield path, audit_path
    finally:
        srv.close()
        await srv.wait_closed()
        audit.close()
        os.unlink(path)


async def _request_as_root(path: str, unit: str, cred_id: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENT, path, unit, cred_id, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    return bytes.fromhex(out.decode())


def _audit_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_root_gets_the_matching_field(server: tuple[str, Path]) -> None:
    path, audit = server
    assert await _request_as_root(path, "app.service", "db-password") == CANARY.encode()
    assert await _request_as_root(path, "web-1.service", "api") == b"k-" + CANARY.encode()
    lines = _audit_lines(audit)
    assert [line["result"] for line in lines] == ["ok", "ok"]
    assert all(line["event"] == "credential" for line in lines)
    assert CANARY not in audit.read_text()


@pytest.mark.parametrize(
    ("unit", "cred_id"),
    [("other.service", "db-password"), ("app.service", "api"), ("app.service", "gone")],
)
async def test_no_match_gets_nothing(server: tuple[str, Path], unit: str, cred_id: str) -> None:
    path, audit = server
    assert await _request_as_root(path, unit, cred_id) == b""
    assert _audit_lines(audit)[-1]["result"] in {"no_match", "not_found"}


@pytest.mark.skipif(not can_switch_users(), reason="needs root to switch users")
async def test_non_root_with_spoofed_address_gets_nothing(server: tuple[str, Path]) -> None:
    path, audit = server
    user = ensure_test_user()
    os.chmod(path, 0o666)  # let the test user reach the socket; the uid check must hold
    result = await asyncio.to_thread(
        run_python_as, user, CLIENT, path, "app.service", "db-password"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    line = _audit_lines(audit)[-1]
    assert line["result"] == "forbidden_peer"
    assert line["caller"]["uid"] == user.uid  # type: ignore[index]


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("\0abc/unit/app.service/db", CredentialRequest("app.service", "db")),
        (b"\0abc/unit/app.service/db", CredentialRequest("app.service", "db")),
        ("\0abc/unit/app.service/db/extra", None),
        ("\0abc/unit//db", None),
        ("/run/x.sock", None),
        ("", None),
        (b"\0\xff/unit/a/b", None),
        (None, None),
    ],
)
def test_parse_peer_address(peer: object, expected: CredentialRequest | None) -> None:
    assert parse_peer_address(peer) == expected
