"""LoadCredential= over a real Unix socket: a client bound to systemd's abstract
address gets the value only when it runs as root and a [[credential]] matches.

The client is systemd's, in effect (tests.fakes.credential_client): it shuts
down its writing side before it reads, so the agent sees EOF before it answers.
That must not cancel the answer, on the bare protocol, on the API socket
(api.listener.Serving) and on the dedicated credentials socket (serve_diverted), under
asyncio and under uvloop (the agent's loop). tests/system runs it under systemd.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import structlog
import uvloop
from aiohttp import web

from secretd.access.identity import peer_caller
from secretd.api.listener import (
    ConnectionTracker,
    Divert,
    UnixListener,
    serve_diverted,
    start_serving,
)
from secretd.audit import AuditLog, AuditSink
from secretd.config.schema import CredentialConfig
from secretd.credentials import (
    CredentialProtocol,
    CredentialRequest,
    CredentialService,
    parse_peer_address,
)
from secretd.denials import DENY_BURST
from secretd.model import Caller, SecretName
from tests.fakes.api_deps import CountingMetrics, ListAudit
from tests.fakes.credential_client import SCRIPT, load_credential
from tests.fakes.dict_reader import DictReader
from tests.servers.second_user import ensure_test_user, needs_root, run_python_as

CANARY = "CANARY-cred-5b2f"


def _service(audit: AuditSink, *, delay: float = 0.0) -> CredentialService:
    reader = DictReader(delay=delay)
    reader.put("db/app", json.dumps({"password": CANARY, "user": "app"}))
    reader.put("api/key", "k-" + CANARY)
    return CredentialService(
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


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog.open(str(audit_path))
    # Reads take a while (as a backend's would), so the client's EOF comes first.
    service = _service(audit, delay=0.1)
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
    """systemd's request, from another process (root, like PID 1)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRIPT, path, unit, cred_id, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    return out


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


@needs_root
async def test_non_root_with_spoofed_address_gets_nothing(server: tuple[str, Path]) -> None:
    path, audit = server
    user = ensure_test_user()
    os.chmod(path, 0o666)  # let the test user reach the socket; the uid check must hold
    result = await asyncio.to_thread(
        run_python_as, user, SCRIPT, path, "app.service", "db-password"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    line = _audit_lines(audit)[-1]
    assert line["result"] == "forbidden_peer"
    assert line["caller"]["uid"] == user.uid  # type: ignore[index]


def _divert(service: CredentialService) -> Divert:
    """As the agent wires it (live.credential_divert): credential addresses go to
    the credential protocol, everything else to HTTP (or, dedicated, nowhere)."""

    def divert(transport: asyncio.BaseTransport) -> asyncio.Protocol | None:
        request = parse_peer_address(transport.get_extra_info("peername"))
        return None if request is None else CredentialProtocol(service, peer_caller, request)

    return divert


ASKED = (("app.service", "db-password"), ("web-1.service", "api"), ("other.service", "api"))
ANSWERS = [CANARY.encode(), b"k-" + CANARY.encode(), b""]


async def _ask_both_sockets(directory: Path) -> dict[str, list[bytes]]:
    """systemd's requests on an API socket and a dedicated credentials socket."""
    # Each read takes a while, so the client's EOF surely arrives before the answer.
    service = _service(ListAudit(), delay=0.2)
    api = UnixListener.create(directory / "api.sock", mode=0o600, group=None)
    creds = UnixListener.create(directory / "cred.sock", mode=0o600, group=None)
    tracker = ConnectionTracker(identify=peer_caller, observer=CountingMetrics(), max_connections=8)
    runner = await start_serving(
        web.Application(), [api.sock], tracker=tracker, idle_timeout=5, divert=_divert(service)
    )
    dedicated = await serve_diverted(creds.sock, _divert(service))
    answers: dict[str, list[bytes]] = {}
    try:
        for listener in (api, creds):
            path = str(listener.path)
            answers[path] = [
                await asyncio.to_thread(load_credential, path, unit, cred_id)
                for unit, cred_id in ASKED
            ]
    finally:
        dedicated.close()
        await runner.cleanup()
        api.close()
        creds.close()
    return answers


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_half_closed_request_is_answered_on_both_sockets(loop: str) -> None:
    """Regression: the EOF systemd sends first closed the connection unanswered."""
    directory = Path(tempfile.mkdtemp(prefix="sdc", dir="/tmp"))
    try:
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            answers = runner.run(_ask_both_sockets(directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert answers == {f"{directory}/api.sock": ANSWERS, f"{directory}/cred.sock": ANSWERS}


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


async def test_refusals_of_one_peer_log_a_bounded_number_of_lines() -> None:
    """Any local user can pose as systemd as fast as it can connect; the log
    (stderr, the journal) gets a burst of `credential.refused` lines, then the
    rest are counted into the next line that is written."""
    service = _service(ListAudit())
    hostile = Caller(uid=1000, gid=1000, pid=1)
    request = CredentialRequest(unit="app.service", id="db-password")
    with structlog.testing.capture_logs() as logs:
        for _ in range(200):
            assert await service.answer(request, hostile) is None
    refused = [line for line in logs if line["event"] == "credential.refused"]
    assert 1 <= len(refused) <= DENY_BURST
    assert all(line["reason"] == "forbidden_peer" for line in refused)
    # root's refusals are not held back by another peer's flood, and the next
    # line written says how many were not
    with structlog.testing.capture_logs() as logs:
        assert await service.answer(CredentialRequest("other.service", "x"), Caller(uid=0)) is None
    assert [line["reason"] for line in logs] == ["no_match"]
    assert logs[0]["refusals_not_logged"] == 200 - len(refused)
