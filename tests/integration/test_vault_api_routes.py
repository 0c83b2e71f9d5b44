"""The Vault-compatible KV v2 routes on the real API app over a real Unix socket:
Vault's exact shapes and errors, value and version mapping, access rules,
audit, metrics and per-caller limits (tests/integration/vault_api_harness.py)."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest

from secretd.errors import BackendUnavailable
from tests.integration.api_harness import serve_api
from tests.integration.vault_api_harness import Served, serve_vault_api

T1 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
T2 = datetime(2026, 3, 2, 12, 0, 0, 456789, tzinfo=UTC)
T3 = datetime(2026, 3, 3, 12, 0, 0, tzinfo=UTC)
N1, N2, N3 = (int(t.timestamp() * 1000) for t in (T1, T2, T3))
CANARY = b"canary-vault-7f3a9"
DENIED = b'{"errors":["permission denied"]}'
NOT_FOUND = b'{"errors":[]}'


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve_vault_api(refresh_interval=2.5) as served:
        yield served


def content_type(head: bytes) -> bytes:
    match = re.search(rb"\r\ncontent-type: ([^\r]*)", head, re.IGNORECASE)
    assert match is not None, head
    return match.group(1)


async def test_a_read_is_vaults_kv_v2_document(served: Served) -> None:
    served.add("app/db", [("a1b2", b'{"password":"s3cret","port":5432}', {"current"}, T2)])
    status, head, body = await served.get("/v1/secret/data/app/db")
    assert status == 200
    assert content_type(head) == b"application/json"  # exactly: hvac parses errors only then
    document = orjson.loads(body)
    assert list(document) == [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ]
    uuid.UUID(document.pop("request_id"))
    assert document == {
        "lease_id": "",
        "renewable": False,
        "lease_duration": 3,  # the refresh interval (2.5 s), whole seconds, never 0
        "data": {
            "data": {"password": "s3cret", "port": 5432},
            "metadata": {
                "created_time": "2026-03-02T12:00:00.456789Z",
                "custom_metadata": {"version_id": "a1b2", "stages": "current"},
                "deletion_time": "",
                "destroyed": False,
                "version": N2,
            },
        },
        "wrap_info": None,
        "warnings": None,
        "auth": None,
    }
    assert served.audit.lines == [
        {
            "event": "read",
            "secret": "app/db",
            "version_id": "a1b2",
            "result": "ok",
            "tcp": False,
            "api": "vault",
        }
    ]
    assert served.metrics.reads == ["ok"]


@pytest.mark.parametrize(
    ("value", "data"),
    [
        (b"plain text", {"value": "plain text"}),
        (b"[1, 2]", {"value": "[1, 2]"}),  # JSON, but not an object
        (b'  {"a": {"b": [1]}}', {"a": {"b": [1]}}),
        (b"{not json", {"value": "{not json"}),
        (b"\x00\xff\xfe binary", {"value_b64": base64.b64encode(b"\x00\xff\xfe binary").decode()}),
    ],
)
async def test_values_map_to_kv_data(served: Served, value: bytes, data: object) -> None:
    served.add("app/v", [("x", value, {"current"}, T1)])
    status, _, body = await served.get("/v1/secret/data/app/v")
    assert status == 200
    assert orjson.loads(body)["data"]["data"] == data


async def test_vault_backed_secrets_keep_vaults_version_numbers(served: Served) -> None:
    served.numbered.add("local")
    served.add("app/db", [("1", b"one", {"previous"}, T1), ("2", b"two", {"current"}, T2)])
    _, _, body = await served.get("/v1/secret/data/app/db")
    assert orjson.loads(body)["data"]["metadata"]["version"] == 2
    status, _, body = await served.get("/v1/secret/data/app/db?version=1")
    assert status == 200
    data = orjson.loads(body)["data"]
    assert (data["data"], data["metadata"]["version"]) == ({"value": "one"}, 1)
    assert data["metadata"]["custom_metadata"] == {"version_id": "1", "stages": "previous"}
    assert (await served.get("/v1/secret/data/app/db?version=7"))[:3:2] == (404, NOT_FOUND)


async def test_other_backends_number_versions_by_creation_time(served: Served) -> None:
    served.add(
        "app/db",
        [
            ("old", b"zero", set(), T1),  # no stage: not reachable through the cache
            ("a", b"one", {"previous"}, T2),
            ("b", b"two", {"current"}, T3),
        ],
    )
    _, _, body = await served.get("/v1/secret/data/app/db")
    assert orjson.loads(body)["data"]["metadata"]["version"] == N3
    for query, value in [
        (f"?version={N2}", "one"),
        (f"?version={N3}", "two"),
        ("?version=0", "two"),
    ]:
        status, _, body = await served.get("/v1/secret/data/app/db" + query)
        assert status == 200
        assert orjson.loads(body)["data"]["data"] == {"value": value}
    status, _, body = await served.get(f"/v1/secret/data/app/db?version={N1}")
    assert (status, body) == (404, NOT_FOUND)
    assert served.audit.lines[-1]["result"] == "not_found"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?version=abc", "'version' must be an integer"),
        ("?version=1&version=2", "query parameter 'version' given more than once"),
        ("?stage=previous", "unknown query parameter 'stage'"),
        ("?version=99999999999999999999", "'version' is too large"),
    ],
)
async def test_bad_parameters_are_400(served: Served, query: str, message: str) -> None:
    served.add("app/db", [("a", b"x", {"current"}, T1)])
    status, head, body = await served.get("/v1/secret/data/app/db" + query)
    assert status == 400 and content_type(head) == b"application/json"
    assert orjson.loads(body) == {"errors": [message]}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"X-Vault-Wrap-TTL: 60s", "response wrapping is not supported by secretd"),
        (b"X-Vault-Namespace: team-a/", "namespaces are not supported by secretd"),
    ],
)
async def test_wrapping_and_namespaces_are_refused(
    served: Served, header: bytes, message: str
) -> None:
    served.add("app/db", [("a", CANARY, {"current"}, T1)])
    for target in ("/v1/secret/data/app/db", "/v1/secret/metadata/app/db"):
        status, _, body = await served.get(target, headers=header + b"\r\n")
        assert (status, orjson.loads(body)) == (400, {"errors": [message]})
    assert (await served.get("/v1/secret/data/app/db", headers=b"X-Vault-Namespace: \r\n"))[
        0
    ] == 200


async def test_bad_names_are_400(served: Served) -> None:
    status, _, body = await served.get("/v1/secret/data/app//db")
    assert status == 400
    assert orjson.loads(body)["errors"][0].startswith("invalid secret name")


async def test_denied_reads_are_one_body_audited_and_never_reach_a_backend(
    served: Served,
) -> None:
    served.add("ops/root", [("a", CANARY, {"current"}, T1)], cached=False)
    reads = served.cache.backend_reads
    answers = set()
    for target in ("/v1/secret/data/ops/root", "/v1/secret/data/ops/absent"):
        status, head, body = await served.get(target)
        assert content_type(head) == b"application/json"
        answers.add((status, body))
    assert answers == {(403, DENIED)}
    status, _, body = await served.get("/v1/secret/metadata/ops/root")
    assert (status, body) == (403, DENIED)
    assert served.cache.backend_reads == reads
    assert [(line["event"], line["api"]) for line in served.audit.lines] == [("deny", "vault")] * 3
    assert served.metrics.reads == ["forbidden"] * 3


async def test_a_missing_secret_is_404_with_no_errors(served: Served) -> None:
    status, head, body = await served.get("/v1/secret/data/app/absent")
    assert (status, body) == (404, NOT_FOUND)
    assert content_type(head) == b"application/json"
    assert served.audit.lines[-1] == {
        "event": "read",
        "secret": "app/absent",
        "version_id": None,
        "result": "not_found",
        "tcp": False,
        "api": "vault",
    }


async def test_backend_failures_keep_their_status_in_vaults_shape(served: Served) -> None:
    served.add("app/db", [("a", b"x", {"current"}, T1)], cached=False)
    served.cache.failures["app/db"] = BackendUnavailable("backend 'vault' is unreachable")
    status, _, body = await served.get("/v1/secret/data/app/db")
    assert (status, orjson.loads(body)) == (503, {"errors": ["backend 'vault' is unreachable"]})


async def test_a_stale_value_says_so_in_warnings(served: Served) -> None:
    served.add("app/db", [("a", b"x", {"current"}, T1)])
    served.cache.stale.add("app/db")
    status, head, body = await served.get("/v1/secret/data/app/db")
    assert status == 200 and b"x-secretd-stale: true" in head.lower()
    warnings = orjson.loads(body)["warnings"]
    assert len(warnings) == 1 and "last good value" in warnings[0]
    assert served.audit.lines[-1]["result"] == "stale"


async def test_only_reads_that_reach_a_backend_are_limited(served: Served) -> None:
    served.add("app/db", [("a", b"x", {"previous"}, T1), ("b", b"y", {"current"}, T2)])
    for _ in range(3):
        assert (await served.get("/v1/secret/data/app/db"))[0] == 200
    assert served.limiter.taken == 0  # cached current versions are free
    assert (await served.get(f"/v1/secret/data/app/db?version={N1}"))[0] == 200
    assert served.limiter.taken == 1  # the previous version is a backend read
    served.limiter.budget = 1
    status, _, body = await served.get(f"/v1/secret/data/app/db?version={N1}")
    assert status == 429 and orjson.loads(body) == {"errors": ["too many requests"]}
    assert served.audit.lines[-1]["result"] == "rate_limited"


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH", "OPTIONS"])
async def test_writes_are_405_and_close_the_connection(served: Served, method: str) -> None:
    served.add("app/db", [("a", CANARY, {"current"}, T1)])
    for body in (b"", b'{"data":{"password":"new"}}'):
        status, head, answer = await served.call(
            method, "/v1/secret/data/app/db", headers=b"", body=body
        )
        assert status == 405 and b"connection: close" in head.lower()
        assert orjson.loads(answer) == {"errors": ["secretd's Vault-compatible API is read-only"]}
        assert CANARY not in answer
    assert served.audit.lines == []


@pytest.mark.parametrize(
    "target",
    [
        "/v1/secret",
        "/v1/secret/",
        "/v1/secret/app/db",  # the KV v1 form of a v2 path
        "/v1/secret/data/",
        "/v1/secret/destroy/app/db",
        "/v1/secret/metadata/",
        "/v1/sys/mounts",
        "/v1/sys/internal/ui/mounts",
        "/v1/auth/approle/login",
    ],
)
async def test_unknown_vault_paths_are_vaults_404(served: Served, target: str) -> None:
    status, head, body = await served.get(target)
    assert (status, body) == (404, NOT_FOUND)
    assert content_type(head) == b"application/json"


async def test_secretds_own_routes_keep_their_error_shape(served: Served) -> None:
    served.add("ops/root", [("a", b"x", {"current"}, T1)])
    status, _, body = await served.get("/v1/secrets/ops/root")
    assert status == 403 and orjson.loads(body)["error"]["code"] == "forbidden"
    status, _, body = await served.get("/v1/nothing")
    assert status == 404 and orjson.loads(body)["error"]["code"] == "not_found"
    status, _, body = await served.call("PUT", "/v1/secrets/app/db")
    assert status == 405 and orjson.loads(body)["error"]["code"] == "method_not_allowed"


async def test_metadata_lists_staged_versions_and_never_a_value(served: Served) -> None:
    served.add(
        "app/db",
        [
            ("a", CANARY, {"previous"}, T1),
            ("b", CANARY, {"current"}, T2),
            ("c", CANARY, {"pending"}, T3),
        ],
    )
    status, _, body = await served.get("/v1/secret/metadata/app/db")
    assert status == 200 and CANARY not in body
    data = orjson.loads(body)["data"]
    assert data["current_version"] == N2
    assert data["versions"] == {
        str(N1): {
            "created_time": "2026-03-01T12:00:00.123Z",
            "deletion_time": "",
            "destroyed": False,
        },
        str(N2): {
            "created_time": "2026-03-02T12:00:00.456789Z",
            "deletion_time": "",
            "destroyed": False,
        },
        str(N3): {"created_time": "2026-03-03T12:00:00Z", "deletion_time": "", "destroyed": False},
    }
    assert data["custom_metadata"] == {
        f"version_id:{N1}": "a",
        "stage:previous": str(N1),
        f"version_id:{N2}": "b",
        "stage:current": str(N2),
        f"version_id:{N3}": "c",
        "stage:pending": str(N3),
    }
    assert (data["created_time"], data["updated_time"]) == (
        "2026-03-01T12:00:00.123Z",
        "2026-03-02T12:00:00.456789Z",
    )
    assert served.audit.lines[-1]["op"] == "metadata"


async def test_a_list_shows_only_names_the_caller_may_read(served: Served) -> None:
    for name in ("app/db", "app/api/key", "ops/root"):
        served.add(name, [("a", b"x", {"current"}, T1)])
    status, _, body = await served.get("/v1/secret/metadata?list=true")
    assert status == 200 and orjson.loads(body)["data"] == {"keys": ["app/"]}
    _, _, body = await served.get("/v1/secret/metadata/app/?list=true")
    assert orjson.loads(body)["data"] == {"keys": ["api/", "db"]}
    status, _, body = await served.get("/v1/secret/metadata/ops?list=true")
    assert (status, body) == (404, NOT_FOUND)  # as for a folder that does not exist


async def test_another_mount(served: Served) -> None:
    async with serve_vault_api(mount="kv/team") as other:
        other.add("app/db", [("a", b"x", {"current"}, T1)])
        assert (await other.get("/v1/kv/team/data/app/db"))[0] == 200
        assert (await other.get("/v1/secret/data/app/db"))[0] == 404  # not a Vault path there
        _, _, body = await other.get("/v1/sys/internal/ui/mounts/kv/team/app/db")
        assert orjson.loads(body)["data"]["path"] == "kv/team/"


async def test_without_vault_api_the_paths_are_secretds_own_404() -> None:
    async with serve_api() as plain:
        plain.cache.put("app/db", CANARY)
        for target in ("/v1/secret/data/app/db", "/v1/sys/health", "/v1/auth/token/lookup-self"):
            async with plain.session() as http, http.get(target) as response:
                assert response.status == 404
                assert (await response.json())["error"]["code"] == "not_found"
