"""/secretsmanager/get and /ping on the real API app, over a real Unix socket and
the guarded loopback TCP socket, reading through the in-memory cache fake."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import orjson
import pytest

from secretd.api.aws_compat import LOCAL_ARN_PREFIX, epoch_millis
from secretd.api.ports import ApiDeps
from secretd.api.reads import ReadService
from secretd.errors import BackendTimeout, BackendUnavailable
from secretd.events import Hub
from secretd.model import SecretName
from tests.fakes.api_deps import (
    CountingLimiter,
    CountingMetrics,
    ListAudit,
    MemoryCache,
    UidPolicy,
)
from tests.integration.api_harness import FakeServed, serve_fakes

TOKEN = b"compat-token-0123456789"
CANARY = b"canary-value-7f3a9"
NOT_FOUND = (
    b'{"__type":"ResourceNotFoundException", '
    b'"message":"Secrets Manager can\'t find the specified secret."}'
)


# uid 0 may read `app/`, `blob`, `json`; TCP callers only `tcp/`.
POLICY = UidPolicy({0}, ("app/", "blob", "json"), tcp=("tcp/",))


Served = FakeServed


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve_fakes(POLICY, Served, tcp_token=TOKEN) as served:
        yield served


async def test_current_version_in_the_aws_agent_shape(served: Served) -> None:
    vid = served.cache.put("app/db", b'{"password":"s3cret"}')
    status, head, body = await served.get("/secretsmanager/get?secretId=app/db")
    assert status == 200
    assert b"application/json" in head.lower()
    document = orjson.loads(body)
    assert list(document) == [
        "ARN",
        "Name",
        "VersionId",
        "SecretString",
        "VersionStages",
        "CreatedDate",
    ]
    assert document == {
        "ARN": LOCAL_ARN_PREFIX + "app/db",
        "Name": "app/db",
        "VersionId": vid,
        "SecretString": '{"password":"s3cret"}',
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": "1767225600.000",  # the fake's 2026-01-01T00:00:00Z
    }
    assert served.audit.lines[-1]["result"] == "ok"


async def test_binary_values_are_base64_secret_binary(served: Served) -> None:
    served.cache.put("blob", b"\x00\xff\xfe binary")
    status, _, body = await served.get("/secretsmanager/get?secretId=blob")
    document = orjson.loads(body)
    assert status == 200 and "SecretString" not in document
    assert base64.b64decode(document["SecretBinary"]) == b"\x00\xff\xfe binary"


async def test_stages_and_versions(served: Served) -> None:
    first = served.cache.put("app/db", b"one")
    second = served.cache.put("app/db", b"two")
    _, _, body = await served.get("/secretsmanager/get?secretId=app/db&versionStage=AWSPREVIOUS")
    document = orjson.loads(body)
    assert (document["VersionId"], document["VersionStages"]) == (first, ["AWSPREVIOUS"])
    _, _, body = await served.get(f"/secretsmanager/get?secretId=app/db&versionId={first}")
    assert orjson.loads(body)["SecretString"] == "one"
    target = f"/secretsmanager/get?secretId=app/db&versionId={second}&versionStage=AWSCURRENT"
    assert orjson.loads((await served.get(target))[2])["SecretString"] == "two"
    target = f"/secretsmanager/get?secretId=app/db&versionId={first}&versionStage=AWSCURRENT"
    status, _, body = await served.get(target)
    assert status == 400 and orjson.loads(body)["__type"] == "ResourceNotFoundException"


async def test_missing_secret_is_the_aws_not_found_body(served: Served) -> None:
    status, _, body = await served.get("/secretsmanager/get?secretId=app/none")
    assert (status, body) == (400, NOT_FOUND)
    status, _, body = await served.get("/secretsmanager/get?secretId=app/none&versionId=abc")
    assert status == 400
    assert orjson.loads(body)["message"].endswith("for VersionId: abc.")


async def test_denied_before_any_backend_read_and_audited(served: Served) -> None:
    served.cache.put("other/x", CANARY, cached=False)
    reads = served.cache.backend_reads
    for name in ("other/x", "other/absent"):
        status, _, body = await served.get(f"/secretsmanager/get?secretId={name}&refreshNow=true")
        assert status == 400
        assert orjson.loads(body)["__type"] == "AccessDeniedException"
    assert served.cache.backend_reads == reads
    assert [line["event"] for line in served.audit.lines] == ["deny", "deny"]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("secretId=app/db&abc=1", b"unknown parameter: abc"),
        ("versionStage=AWSCURRENT", b"missing parameter secretId"),
        ("secretId=", b"missing parameter secretId"),
        ("secretId=app/db&refreshNow=maybe", b"invalid refreshNow value"),
        ("secretId=app/db&secretId=app/x", b"duplicate parameter: secretId"),
        ("secretId=app/db&versionStage=a%20b", b"invalid versionStage value"),
    ],
)
async def test_malformed_queries_are_400_in_plain_text(
    served: Served, query: str, reason: bytes
) -> None:
    status, _, body = await served.get(f"/secretsmanager/get?{query}")
    assert (status, body) == (400, reason)


async def test_invalid_names_are_invalid_parameter(served: Served) -> None:
    for bad in ("../etc", "a//b", "x%00y", "/lead"):
        status, _, body = await served.get(f"/secretsmanager/get?secretId={bad}")
        assert status == 400
        assert orjson.loads(body)["__type"] == "InvalidParameterException"


async def test_refresh_now_goes_to_the_backend_and_is_limited(served: Served) -> None:
    served.cache.put("app/db", b"x")
    reads, taken = served.cache.backend_reads, served.limiter.taken
    for flag in ("true", "1", "TRUE"):
        assert (await served.get(f"/secretsmanager/get?secretId=app/db&refreshNow={flag}"))[
            0
        ] == 200
    assert served.cache.backend_reads == reads + 3
    assert served.limiter.taken == taken + 3
    await served.get("/secretsmanager/get?secretId=app/db&refreshNow=0")
    assert served.cache.backend_reads == reads + 3  # a cached read
    served.limiter.budget = served.limiter.taken
    status, _, body = await served.get("/secretsmanager/get?secretId=app/db&refreshNow=true")
    assert status == 429 and orjson.loads(body)["__type"] == "ThrottlingException"


async def test_backend_failures_map_like_the_aws_agent(served: Served) -> None:
    served.cache.put("app/slow", b"x")
    served.cache.failures[SecretName("app/slow")] = BackendTimeout("aws: no answer in time")
    status, _, body = await served.get("/secretsmanager/get?secretId=app/slow")
    assert (status, orjson.loads(body)) == (504, {"__type": "TimeoutError", "message": "Timeout"})
    served.cache.failures[SecretName("app/slow")] = BackendUnavailable("aws down")
    status, _, body = await served.get("/secretsmanager/get?secretId=app/slow")
    assert (status, orjson.loads(body)["__type"]) == (502, "ConnectionError")
    assert served.audit.lines[-1]["result"] == "backend_unavailable"


async def test_stale_answers_say_so_in_a_header(served: Served) -> None:
    served.cache.put("app/db", b"x")
    served.cache.stale.add(SecretName("app/db"))
    status, head, _ = await served.get("/secretsmanager/get?secretId=app/db")
    assert status == 200 and b"x-secretd-stale: true" in head.lower()
    assert served.audit.lines[-1]["result"] == "stale"


async def test_local_arn_is_accepted_as_secret_id(served: Served) -> None:
    served.cache.put("app/db", b"x")
    status, _, body = await served.get(f"/secretsmanager/get?secretId={LOCAL_ARN_PREFIX}app/db")
    assert status == 200 and orjson.loads(body)["Name"] == "app/db"


async def test_only_get_is_allowed(served: Served) -> None:
    request = (
        b"POST /secretsmanager/get?secretId=app/db HTTP/1.1\r\n"
        b"Host: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert (await served.raw(request))[0] == 405


async def test_ping_is_healthy_on_both_transports(served: Served) -> None:
    for tcp in (False, True):
        status, _, body = await served.get("/ping", tcp=tcp)
        assert (status, body) == (200, b"healthy")


async def test_tcp_needs_the_token_and_tcp_rules(served: Served) -> None:
    served.cache.put("tcp/api", b"over-tcp")
    served.cache.put("app/db", b"x")
    aws_token = b"X-Aws-Parameters-Secrets-Token: " + TOKEN + b"\r\n"
    status, _, body = await served.get("/secretsmanager/get?secretId=tcp/api", tcp=True)
    assert (status, body) == (403, b"Bad Token")  # as the AWS agent answers it
    status, _, body = await served.get(
        "/secretsmanager/get?secretId=tcp/api", tcp=True, headers=aws_token
    )
    assert (status, orjson.loads(body)["SecretString"]) == (200, "over-tcp")
    status, _, body = await served.get(
        "/secretsmanager/get?secretId=app/db", tcp=True, headers=aws_token
    )
    assert (status, orjson.loads(body)["__type"]) == (400, "AccessDeniedException")
    forwarded = aws_token + b"X-Forwarded-For: 10.1.1.1\r\n"
    status, _, body = await served.get(
        "/secretsmanager/get?secretId=tcp/api", tcp=True, headers=forwarded
    )
    assert (status, body) == (400, b"Forwarded")


async def test_values_never_reach_audit_or_metrics(served: Served) -> None:
    served.cache.put("app/db", CANARY)
    await served.get("/secretsmanager/get?secretId=app/db")
    await served.get("/secretsmanager/get?secretId=app/db&versionStage=AWSPENDING")
    everything = repr(served.audit.lines).encode() + served.metrics.exposition()
    assert CANARY not in everything


@pytest.mark.parametrize(
    ("iso", "expected"),
    [
        ("2019-09-26T21:53:09.046+00:00", "1569534789.046"),
        ("2019-09-26T21:53:09.046999+00:00", "1569534789.046"),
        ("1970-01-01T00:00:00+00:00", "0.000"),
        ("2019-09-26T23:53:09.5+02:00", "1569534789.500"),
    ],
)
def test_created_date_has_three_decimals(iso: str, expected: str) -> None:
    from datetime import datetime

    assert epoch_millis(datetime.fromisoformat(iso)) == expected


async def test_a_caller_without_identity_is_refused_the_aws_way() -> None:
    from aiohttp.test_utils import make_mocked_request

    from secretd.api.aws_compat import AwsCompatRoutes

    hub = Hub()
    cache = MemoryCache(hub)
    cache.put("app/db", CANARY)
    deps = ApiDeps.fixed(
        cache=cache,
        hub=hub,
        policy=POLICY,
        audit=ListAudit(),
        metrics=CountingMetrics(),
        limiter=CountingLimiter(),
        identify=lambda request: None,
    )
    routes = AwsCompatRoutes(deps, ReadService(deps))
    response = await routes.get_secret_value(
        make_mocked_request("GET", "/secretsmanager/get?secretId=app/db")
    )
    assert response.status == 400
    assert isinstance(response.body, bytes)
    assert orjson.loads(response.body)["__type"] == "AccessDeniedException"
    assert cache.backend_reads == 0
