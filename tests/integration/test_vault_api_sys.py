"""The Vault-compatible API's transport rules and node/token routes: X-Vault-Token
on the guarded TCP listener (every TCP guard still applies, answers Vault-shaped),
ignored on the Unix socket; the preflight, health, seal status and token lookup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest

from tests.integration.vault_api_harness import TOKEN, Served, serve_vault_api

T1 = datetime(2026, 3, 1, tzinfo=UTC)
DENIED = b'{"errors":["permission denied"]}'
CANARY = b"canary-vault-tcp-51c0"


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve_vault_api() as served:
        served.add("tcp/db", [("a", CANARY, {"current"}, T1)])
        served.add("app/db", [("b", CANARY, {"current"}, T1)])
        yield served


async def test_tcp_reads_need_the_tcp_token_as_x_vault_token(served: Served) -> None:
    status, _, body = await served.get("/v1/secret/data/tcp/db", tcp=True, token=TOKEN)
    assert status == 200 and orjson.loads(body)["data"]["data"] == {"value": CANARY.decode()}
    assert served.audit.lines[-1]["tcp"] is True
    # The [[allow]] rules for TCP callers still decide.
    assert (await served.get("/v1/secret/data/app/db", tcp=True, token=TOKEN))[:3:2] == (
        403,
        DENIED,
    )


@pytest.mark.parametrize(
    "headers",
    [
        b"",
        b"X-Vault-Token: wrong-token-0123456789abc\r\n",
        b"X-Vault-Token: " + TOKEN + b"x\r\n",
        b"X-Vault-Token: " + TOKEN + b"\r\nX-Vault-Token: " + TOKEN + b"\r\n",
        b"X-Vault-Token: " + TOKEN + b"\r\nX-Secretd-Token: " + TOKEN + b"\r\n",
    ],
)
async def test_a_missing_or_wrong_token_is_vaults_permission_denied(
    served: Served, headers: bytes
) -> None:
    for target in ("/v1/secret/data/tcp/db", "/v1/secret/data/tcp/absent", "/v1/nowhere/x"):
        status, head, body = await served.get(target, tcp=True, headers=headers)
        if target.startswith("/v1/secret/"):
            assert (status, body) == (403, DENIED)
            assert b"\r\ncontent-type: application/json\r\n" in head.lower()
        else:
            assert status == 401  # secretd's own paths keep secretd's answer
        assert CANARY not in body
    assert served.audit.lines == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (b"Origin: http://evil.example\r\n", 403),
        (b"Sec-Fetch-Site: cross-site\r\n", 403),
        (b"X-Forwarded-For: 10.0.0.1\r\n", 400),
        (b"Forwarded: for=10.0.0.1\r\n", 400),
    ],
)
async def test_every_tcp_guard_still_applies(served: Served, headers: bytes, status: int) -> None:
    got, _, body = await served.get(
        "/v1/secret/data/tcp/db", tcp=True, token=TOKEN, headers=headers
    )
    assert got == status and CANARY not in body
    assert list(orjson.loads(body)) == ["errors"]


async def test_a_foreign_host_is_refused_on_tcp(served: Served) -> None:
    request = (
        b"GET /v1/secret/data/tcp/db HTTP/1.1\r\nHost: evil.example\r\n"
        b"X-Vault-Token: " + TOKEN + b"\r\nConnection: close\r\n\r\n"
    )
    status, _, body = await served.raw(request, tcp=True)
    assert (status, body) == (403, DENIED)


async def test_the_token_header_is_ignored_on_the_unix_socket(served: Served) -> None:
    # The peer (uid 0) is the caller: any token, or none, reads what uid 0 may read.
    for token in (None, b"whatever-token"):
        status, _, _ = await served.get("/v1/secret/data/app/db", token=token)
        assert status == 200
    assert (await served.get("/v1/secret/data/tcp/db", token=TOKEN))[:3:2] == (403, DENIED)


@pytest.mark.parametrize(
    "path", ["secret", "secret/", "secret/app/db", "secret/data/app/db", "secret/metadata/x"]
)
async def test_the_preflight_says_kv_version_2(served: Served, path: str) -> None:
    status, _, body = await served.get(f"/v1/sys/internal/ui/mounts/{path}")
    assert status == 200
    data = orjson.loads(body)["data"]
    assert (data["path"], data["type"], data["options"]) == ("secret/", "kv", {"version": "2"})


@pytest.mark.parametrize("path", ["secrets", "other/x", "secretx/app"])
async def test_the_preflight_outside_the_mount_is_403(served: Served, path: str) -> None:
    assert (await served.get(f"/v1/sys/internal/ui/mounts/{path}"))[:3:2] == (403, DENIED)


async def test_health_answers_as_an_unsealed_active_node(served: Served) -> None:
    status, _, body = await served.get("/v1/sys/health")
    document = orjson.loads(body)
    assert status == 200
    assert (document["initialized"], document["sealed"], document["standby"]) == (
        True,
        False,
        False,
    )
    query = "?standbyok=true&perfstandbyok=true&activecode=299&sealedcode=200"
    assert (await served.get("/v1/sys/health" + query))[0] == 299
    status, _, body = await served.call("HEAD", "/v1/sys/health")
    assert (status, body) == (200, b"")
    served.state.ready = False  # starting: what Vault calls sealed
    assert (await served.get("/v1/sys/health"))[0] == 503
    assert (await served.get("/v1/sys/health?sealedcode=200"))[0] == 200
    _, _, body = await served.get("/v1/sys/seal-status")
    assert orjson.loads(body)["sealed"] is True


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?activecode=abc", "activecode must be an HTTP status code"),
        ("?activecode=42", "activecode must be an HTTP status code"),
        ("?standbyok=maybe", "bad value for standbyok parameter"),
        ("?bogus=1", "unknown query parameter 'bogus'"),
    ],
)
async def test_bad_health_flags_are_400(served: Served, query: str, message: str) -> None:
    status, _, body = await served.get("/v1/sys/health" + query)
    assert (status, orjson.loads(body)) == (400, {"errors": [message]})


async def test_status_routes(served: Served) -> None:
    status, _, body = await served.get("/v1/sys/seal-status")
    assert status == 200 and orjson.loads(body)["sealed"] is False
    status, _, body = await served.get("/v1/sys/leader")
    assert (status, orjson.loads(body)) == (200, {"ha_enabled": False})


async def test_lookup_self_describes_a_token_that_never_expires(served: Served) -> None:
    for method in ("GET", "POST"):
        status, _, body = await served.call(
            method, "/v1/auth/token/lookup-self", tcp=True, token=TOKEN
        )
        assert status == 200
        data = orjson.loads(body)["data"]
        assert data["id"] == TOKEN.decode()
        assert isinstance(data["accessor"], str) and data["accessor"]
        assert (data["ttl"], data["renewable"], data["expire_time"]) == (0, False, None)
        assert data["policies"] == ["secretd"]
    status, _, body = await served.get("/v1/auth/token/lookup-self", tcp=True, token=b"x" * 20)
    assert (status, body) == (403, DENIED)
    # On the socket: the caller's own header comes back, nothing else.
    _, _, body = await served.get("/v1/auth/token/lookup-self")
    assert orjson.loads(body)["data"]["id"] == ""


async def test_renew_self_answers_as_a_non_renewable_token(served: Served) -> None:
    for method in ("PUT", "POST"):
        for body in (b"", b'{"increment":3600}'):  # Vault's Go client sends an increment
            status, _, answer = await served.call(
                method, "/v1/auth/token/renew-self", tcp=True, token=TOKEN, body=body
            )
            assert (status, answer) == (400, b'{"errors":["lease is not renewable"]}')
    assert (await served.call("PUT", "/v1/auth/token/renew-self", tcp=True))[:3:2] == (
        403,
        DENIED,
    )
