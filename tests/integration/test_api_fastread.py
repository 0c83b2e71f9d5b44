"""The fast route for plain reads (api.fastread), against the real parts.

A real SecretCache over a MemoryBackend, the real Policy, AuditLog (a file),
Metrics and RateLimiter, behind the real app on a real Unix socket (and the
loopback TCP listener with its guard): the fast route must answer exactly
what the application answers, authorise, audit and count every read, and
leave everything else to the application.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from secretd.access.identity import peer_caller
from secretd.access.policy import Policy
from secretd.api.app import build_app
from secretd.api.listener import ConnectionTracker, UnixListener, start_serving
from secretd.api.ports import ApiDeps, ServingState
from secretd.api.ratelimit import RateLimiter
from secretd.api.tcp import bind_tcp, install_tcp_guard
from secretd.audit import AuditLog
from secretd.config import AllowRule
from secretd.errors import BackendUnavailable
from secretd.metrics import Metrics
from secretd.model import Caller
from tests.fakes.cache_rig import CacheRig, close_cache, make_rig

TOKEN = b"t" * 32
_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


@dataclass
class Real:
    unix: Path
    port: int
    rig: CacheRig
    audit_path: Path
    metrics: Metrics

    def audit_lines(self) -> list[dict[str, object]]:
        return [orjson.loads(line) for line in self.audit_path.read_bytes().splitlines()]

    def metric(self, sample: str) -> float:
        for line in self.metrics.exposition().decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@asynccontextmanager
async def serve_real(
    *,
    burst: int = 100,
    max_stale: str = "1h",
    identify: Callable[[socket.socket], Caller] = peer_caller,
) -> AsyncIterator[Real]:
    tmp = Path(tempfile.mkdtemp(prefix="sdfast", dir="/tmp"))
    rig = make_rig(max_stale=max_stale)
    audit = AuditLog.open(str(tmp / "audit.jsonl"), clock=rig.clock)
    metrics = Metrics()
    tracker = ConnectionTracker(identify=identify, observer=metrics, max_connections=64)
    policy = Policy([AllowRule(secrets=["app/**"], uids=[os.getuid()], tcp=True)])
    deps = ApiDeps.fixed(
        cache=rig.cache,
        policy=policy,
        audit=audit,
        hub=rig.hub,
        metrics=metrics,
        limiter=RateLimiter(rate=0.001, burst=burst, clock=rig.clock),
        identify=lambda request: tracker.caller(request.protocol),
        state=ServingState(ready=True),
    )
    tcp = bind_tcp("127.0.0.1:0")
    port = tcp.getsockname()[1]
    app = build_app(deps)
    install_tcp_guard(app, f"127.0.0.1:{port}", TOKEN)
    listener = UnixListener.create(tmp / "s.sock", mode=0o660, group=None)
    runner = await start_serving(app, [listener.sock, tcp], tracker=tracker, idle_timeout=5)
    try:
        yield Real(tmp / "s.sock", port, rig, tmp / "audit.jsonl", metrics)
    finally:
        await runner.cleanup()
        listener.close()
        tcp.close()
        audit.close()
        await close_cache(rig.cache)
        shutil.rmtree(tmp, ignore_errors=True)


def get(target: str, headers: str = "", version: str = "1.1", host: str = "x") -> bytes:
    return f"GET {target} HTTP/{version}\r\nHost: {host}\r\n{headers}\r\n".encode()


async def exchange(real: Real, requests: list[bytes], *, tcp: bool = False) -> list[bytes]:
    """Send `requests` pipelined in one write; each whole answer (head and
    body), in order, until all came back or the server closed."""
    if tcp:
        reader, writer = await asyncio.open_connection("127.0.0.1", real.port)
    else:
        reader, writer = await asyncio.open_unix_connection(str(real.unix))
    answers: list[bytes] = []
    try:
        writer.write(b"".join(requests))
        async with asyncio.timeout(10):
            for request in requests:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break  # closed
                found = _LENGTH.search(head)
                bodyless = request.startswith(b"HEAD ") or found is None
                body = b"" if bodyless else await reader.readexactly(int(found.group(1)))
                answers.append(head + body)
    finally:
        writer.close()
    return answers


async def until_closed(real: Real, request: bytes) -> bytes:
    """Everything the server sends until it closes the connection."""
    reader, writer = await asyncio.open_unix_connection(str(real.unix))
    try:
        writer.write(request)
        async with asyncio.timeout(10):
            return await reader.read(-1)
    finally:
        writer.close()


def without_date(answer: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"", answer)


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def document(answer: bytes) -> dict[str, object]:
    parsed: dict[str, object] = orjson.loads(answer.partition(b"\r\n\r\n")[2])
    return parsed


async def test_a_plain_read_is_answered_byte_for_byte_as_the_application_answers() -> None:
    async with serve_real() as real:
        real.rig.backend.put("app/text", '{"user": "u", "password": "p"}')
        real.rig.backend.put("app/blob", bytes(range(256)))
        await real.rig.cache.read("app/text")  # cached: the fast route answers
        await real.rig.cache.read("app/blob")
        for name in ("app/text", "app/blob"):
            # `?format=json` is the same read, but goes through the router and middleware.
            fast, routed = await exchange(
                real, [get(f"/v1/secrets/{name}"), get(f"/v1/secrets/{name}?format=json")]
            )
            assert status(fast) == 200
            assert without_date(fast) == without_date(routed)
            assert b"\r\nDate: " in fast and b"\r\nServer: " in fast


async def test_every_fast_read_is_authorised_audited_and_counted() -> None:
    async with serve_real() as real:
        vid = real.rig.backend.put("app/db", "s3cret")
        answers = await exchange(real, [get("/v1/secrets/app/db")] * 50)
        assert [status(a) for a in answers] == [200] * 50
        assert {document(a)["value"] for a in answers} == {"s3cret"}
        reads = [line for line in real.audit_lines() if line["event"] == "read"]
        assert len(reads) == 50
        assert all(r["secret"] == "app/db" and r["version_id"] == vid for r in reads)
        assert all(r["result"] == "ok" and r["caller"]["uid"] == os.getuid() for r in reads)  # type: ignore[index]
        assert real.metric('secretd_reads_total{result="ok"}') == 50
        assert real.rig.observer.lookups["hit"] == 49
        assert real.rig.backend.fetches["app/db"] == 1  # the first read loaded it
        assert b"s3cret" not in real.audit_path.read_bytes()


async def test_a_denied_read_is_refused_audited_once_and_asks_no_backend() -> None:
    async with serve_real() as real:
        real.rig.backend.put("root/key", "root-only")
        await real.rig.cache.read("root/key")  # cached, so only the rules refuse it
        (answer, absent) = await exchange(
            real, [get("/v1/secrets/root/key"), get("/v1/secrets/root/nothing")]
        )
        assert status(answer) == 403
        error = document(answer)["error"]
        assert error["code"] == "forbidden"
        assert error["message"].startswith("not allowed to read root/key: no [[allow]] rule")
        # the same answer as for a name that does not exist
        assert document(absent)["error"]["message"] == error["message"].replace(
            "root/key", "root/nothing"
        )
        assert b"root-only" not in answer
        lines = real.audit_lines()
        assert [(x["event"], x["result"]) for x in lines] == [("deny", "deny")] * 2
        assert real.metric('secretd_reads_total{result="forbidden"}') == 2
        assert real.rig.backend.fetches["root/key"] == 1  # our own load above, nothing more


async def test_a_miss_is_left_to_the_application_charged_once_and_audited_once() -> None:
    async with serve_real(burst=1) as real:
        real.rig.backend.put("app/a", "a")
        real.rig.backend.put("app/b", "b")
        first, limited = await exchange(real, [get("/v1/secrets/app/a"), get("/v1/secrets/app/b")])
        assert status(first) == 200 and document(first)["value"] == "a"
        assert status(limited) == 429  # a second miss spends a token there is not
        cached = await exchange(real, [get("/v1/secrets/app/a")] * 5)
        assert [status(a) for a in cached] == [200] * 5  # cached reads are never limited
        results = [x["result"] for x in real.audit_lines()]
        assert results == ["ok", "rate_limited", "ok", "ok", "ok", "ok", "ok"]


async def test_a_new_version_and_a_failing_backend_show_at_once() -> None:
    async with serve_real(max_stale="10s") as real:
        real.rig.backend.put("app/db", "v1-value")
        (one,) = await exchange(real, [get("/v1/secrets/app/db")])
        new = real.rig.backend.put("app/db", "v2-value")
        await real.rig.cache.read("app/db", refresh=True)
        (two,) = await exchange(real, [get("/v1/secrets/app/db")])
        assert (document(one)["value"], document(two)["value"]) == ("v1-value", "v2-value")
        assert document(two)["version_id"] == new and document(two)["stale"] is False
        real.rig.backend.fail = BackendUnavailable("down")
        await real.rig.cache.read("app/db", refresh=True)  # fails: the value turns stale
        (stale,) = await exchange(real, [get("/v1/secrets/app/db")])
        assert document(stale)["stale"] is True and document(stale)["value"] == "v2-value"
        real.rig.clock.advance(11)  # past max_stale: no longer served
        (gone,) = await exchange(real, [get("/v1/secrets/app/db")])
        assert status(gone) == 503 and b"v2-value" not in gone
        assert real.audit_lines()[-1]["result"] == "backend_unavailable"


async def test_requests_the_fast_route_leaves_to_the_application() -> None:
    async with serve_real() as real:
        real.rig.backend.put("app/db", "value")
        await real.rig.cache.read("app/db")
        (old,) = await exchange(real, [get("/v1/secrets/app/db", version="1.0")])
        assert old.startswith(b"HTTP/1.0 200") and document(old)["value"] == "value"
        closing = await until_closed(real, get("/v1/secrets/app/db", "Connection: close\r\n"))
        assert status(closing) == 200 and b"\r\nConnection: close" in closing
        assert document(closing)["value"] == "value"
        (encoded,) = await exchange(real, [get("/v1/secrets/app%2Fdb")])
        assert status(encoded) == 200 and document(encoded)["name"] == "app/db"
        (dotted,) = await exchange(real, [get("/v1/secrets/app/./db")])
        assert status(dotted) in (200, 400, 404)  # what the router makes of it, never a value
        (head,) = await exchange(real, [b"HEAD /v1/secrets/app/db HTTP/1.1\r\nHost: x\r\n\r\n"])
        assert status(head) == 405
        body = get("/v1/secrets/app/db", "Content-Length: 5\r\n") + b"hello"
        (refused,) = await exchange(real, [body])
        assert status(refused) == 400 and b"value" not in refused
        reads = [x for x in real.audit_lines() if x["event"] == "read"]
        assert len(reads) == 3 + (status(dotted) == 200)  # each read once, wherever answered


async def test_pipelined_reads_of_different_secrets_are_answered_in_order() -> None:
    async with serve_real() as real:
        names = [f"app/s{i}" for i in range(8)]
        for name in names:
            real.rig.backend.put(name, f"value-of-{name}")
            await real.rig.cache.read(name)
        answers = await exchange(real, [get(f"/v1/secrets/{n}") for n in names * 3])
        assert [document(a)["name"] for a in answers] == names * 3
        assert all(document(a)["value"] == f"value-of-{document(a)['name']}" for a in answers)


def any_socket(sock: socket.socket) -> Caller:
    """The Unix peer, and for a TCP socket the agent's own uid: were a TCP
    request to take the fast route, it would be served without its guard."""
    return peer_caller(sock) if sock.family == socket.AF_UNIX else Caller(uid=os.getuid())


async def test_tcp_requests_never_take_the_fast_route() -> None:
    async with serve_real(identify=any_socket) as real:
        real.rig.backend.put("app/db", "value")
        await real.rig.cache.read("app/db")
        host = f"127.0.0.1:{real.port}"
        (no_token,) = await exchange(real, [get("/v1/secrets/app/db", host=host)], tcp=True)
        assert status(no_token) == 401 and b"value" not in no_token
        token = f"X-Secretd-Token: {TOKEN.decode()}\r\n"
        (ok,) = await exchange(real, [get("/v1/secrets/app/db", token, host=host)], tcp=True)
        assert status(ok) == 200 and document(ok)["value"] == "value"
        assert real.audit_lines()[-1]["caller"] == {"tcp": True}
