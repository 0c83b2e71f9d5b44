"""The HTTP API's routes and parameters over a real Unix socket (in-process server, fake cache)."""

from __future__ import annotations

import asyncio
import base64
import random
import urllib.parse

import orjson
import pytest

from secretd.errors import BackendTimeout, BackendUnavailable
from secretd.model import SecretName, name_problem
from tests.integration.api_harness import serve_api
from tests.integration.hostile_requests import close_get, status_of

JSON_VALUE = b'{"user": "app", "password": "s3cret-pw", "port": 5432}'


async def test_read_current_shape() -> None:
    async with serve_api() as srv, srv.session() as http:
        vid = srv.cache.put("app/db", JSON_VALUE)
        resp = await http.get("/v1/secrets/app/db")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers["Cache-Control"] == "no-store"
        body = await resp.json()
        assert body == {
            "name": "app/db",
            "version_id": vid,
            "stages": ["current"],
            "created_at": "2026-01-01T00:00:00.000Z",
            "value": JSON_VALUE.decode(),
            "stale": False,
        }
        assert list(body) == ["name", "version_id", "stages", "created_at", "value", "stale"]
        assert srv.audit.lines[-1] == {
            "event": "read",
            "secret": "app/db",
            "version_id": vid,
            "result": "ok",
        }


async def test_binary_value_is_base64_and_raw_is_octet_stream() -> None:
    blob = bytes(range(256))
    async with serve_api() as srv, srv.session() as http:
        srv.cache.put("blob", blob)
        body = await (await http.get("/v1/secrets/blob")).json()
        assert "value" not in body
        assert base64.b64decode(body["value_b64"]) == blob
        raw = await http.get("/v1/secrets/blob", params={"format": "raw"})
        assert raw.headers["Content-Type"] == "application/octet-stream"
        assert await raw.read() == blob


async def test_raw_text_and_field() -> None:
    async with serve_api() as srv, srv.session() as http:
        vid = srv.cache.put("app/db", JSON_VALUE)
        raw = await http.get("/v1/secrets/app/db", params={"format": "raw"})
        assert raw.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert raw.headers["X-Secretd-Version-Id"] == vid
        assert await raw.read() == JSON_VALUE
        field = await http.get("/v1/secrets/app/db", params={"field": "password"})
        assert (await field.json())["value"] == "s3cret-pw"
        port = await http.get("/v1/secrets/app/db", params={"field": "port", "format": "raw"})
        assert await port.read() == b"5432"
        missing = await http.get("/v1/secrets/app/db", params={"field": "nope"})
        assert missing.status == 400
        assert (await missing.json())["error"]["code"] == "invalid_request"
        assert b"s3cret" not in await missing.read()


async def test_field_of_a_non_object_is_400() -> None:
    async with serve_api() as srv, srv.session() as http:
        srv.cache.put("app/plain", b"just text")
        resp = await http.get("/v1/secrets/app/plain", params={"field": "x"})
        assert resp.status == 400
        assert b"just text" not in await resp.read()


async def test_stage_and_version() -> None:
    async with serve_api() as srv, srv.session() as http:
        old = srv.cache.put("app/k", b"one")
        new = srv.cache.put("app/k", b"two")
        prev = await (await http.get("/v1/secrets/app/k", params={"stage": "previous"})).json()
        assert (prev["version_id"], prev["value"], prev["stages"]) == (old, "one", ["previous"])
        cur = await (await http.get("/v1/secrets/app/k", params={"version": new})).json()
        assert cur["value"] == "two"
        gone = await http.get("/v1/secrets/app/k", params={"version": "v999"})
        assert gone.status == 404
        assert (await gone.json())["error"]["code"] == "not_found"
        pending = await http.get("/v1/secrets/app/k", params={"stage": "pending"})
        assert pending.status == 404


async def test_refresh_reaches_backend_and_is_limited() -> None:
    async with serve_api() as srv, srv.session() as http:
        srv.cache.put("app/k", b"v")
        before = srv.cache.backend_reads
        for _ in range(5):
            assert (await http.get("/v1/secrets/app/k")).status == 200
        assert srv.cache.backend_reads == before
        assert srv.limiter.taken == 0  # cached reads are never limited
        assert (await http.get("/v1/secrets/app/k", params={"refresh": "true"})).status == 200
        assert srv.cache.backend_reads == before + 1
        assert srv.limiter.taken == 1
        srv.limiter.budget = 1
        limited = await http.get("/v1/secrets/app/k", params={"refresh": "true"})
        assert limited.status == 429
        assert (await limited.json())["error"]["code"] == "rate_limited"
        assert (await http.get("/v1/secrets/app/k")).status == 200  # cached: still served
        miss = await http.get("/v1/secrets/app/unknown")
        assert miss.status == 429  # a miss would reach the backend


async def test_concurrent_misses_for_one_name_spend_one_token() -> None:
    """The cache coalesces them into one backend read, so the limit counts one."""
    async with serve_api() as srv, srv.session() as http:
        srv.cache.put("app/cold", b"v", cached=False)
        srv.cache.read_delay = 0.2
        srv.limiter.budget = 1
        answers = await asyncio.gather(*(http.get("/v1/secrets/app/cold") for _ in range(20)))
        assert [a.status for a in answers] == [200] * 20
        assert srv.limiter.taken == 1


async def test_stale_flag_and_backend_errors() -> None:
    async with serve_api() as srv, srv.session() as http:
        srv.cache.put("app/k", b"v")
        srv.cache.stale.add(SecretName("app/k"))
        assert (await (await http.get("/v1/secrets/app/k")).json())["stale"] is True
        raw = await http.get("/v1/secrets/app/k", params={"format": "raw"})
        assert raw.headers["X-Secretd-Stale"] == "true"
        srv.cache.failures[SecretName("app/k")] = BackendUnavailable("backend local: down")
        down = await http.get("/v1/secrets/app/k")
        assert (down.status, (await down.json())["error"]["code"]) == (503, "backend_unavailable")
        srv.cache.failures[SecretName("app/k")] = BackendTimeout("backend local: timed out")
        slow = await http.get("/v1/secrets/app/k")
        assert (slow.status, (await slow.json())["error"]["code"]) == (504, "backend_timeout")
        assert srv.audit.lines[-1]["result"] == "backend_timeout"


async def test_long_poll_answers_on_rotation() -> None:
    async with serve_api() as srv, srv.session() as http:
        first = srv.cache.put("app/k", b"one")
        poll = asyncio.create_task(
            http.get("/v1/secrets/app/k", params={"wait": "30s", "index": first})
        )
        await asyncio.sleep(0.05)
        assert not poll.done()
        second = srv.cache.rotate("app/k", b"two")
        async with asyncio.timeout(5):
            resp = await poll
        body = await resp.json()
        assert (body["version_id"], body["value"]) == (second, "two")


async def test_long_poll_returns_at_once_when_index_differs_and_after_wait() -> None:
    async with serve_api() as srv, srv.session() as http:
        vid = srv.cache.put("app/k", b"one")
        now = await http.get("/v1/secrets/app/k", params={"wait": "30s", "index": "other"})
        assert (await now.json())["version_id"] == vid
        loop = asyncio.get_running_loop()
        started = loop.time()
        same = await http.get("/v1/secrets/app/k", params={"wait": "200ms", "index": vid})
        assert same.status == 200
        assert (await same.json())["version_id"] == vid
        assert loop.time() - started >= 0.19


@pytest.mark.parametrize(
    "query",
    [
        "stgae=previous",
        "stage=previous&stage=current",
        "refresh=yes",
        "format=xml",
        "wait=30s",
        "index=v1",
        "wait=forever&index=v1",
        "stage=current&version=v1",
        "wait=1s&index=v1&stage=previous",
        "field=",
        "version=" + "a" * 600,
        "stage=%00",
    ],
)
async def test_strict_parameters(query: str) -> None:
    async with serve_api() as srv, srv.session() as http:
        srv.cache.put("app/k", b"v")
        resp = await http.get(f"/v1/secrets/app/k?{query}")
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("name", ["app//k", "app/k/", "app/k%00", "app/k%20x", "a" * 513])
async def test_invalid_names(name: str) -> None:
    async with serve_api() as srv, srv.session() as http:
        resp = await http.get(f"/v1/secrets/{name}")
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_name"
        assert srv.cache.backend_reads == 0


async def test_forbidden_is_identical_for_existing_and_missing() -> None:
    async with serve_api(uids={4242}) as srv, srv.session() as http:
        srv.cache.put("app/k", b"v")
        there = await http.get("/v1/secrets/app/k")
        missing = await http.get("/v1/secrets/app/none")
        assert there.status == missing.status == 403
        a, b = await there.json(), await missing.json()
        assert a["error"]["code"] == b["error"]["code"] == "forbidden"
        assert a["error"]["message"].replace("app/k", "X") == b["error"]["message"].replace(
            "app/none", "X"
        )
        assert srv.cache.backend_reads == 0
        assert [line["event"] for line in srv.audit.lines] == ["deny", "deny"]


async def test_list_filters_by_policy_and_shows_no_values() -> None:
    async with serve_api() as srv, srv.session() as http:
        vid = srv.cache.put("app/a", b"value-a")
        srv.cache.put("app/b", b"value-b", cached=False)
        srv.cache.put("other/c", b"value-c")
        resp = await http.get("/v1/secrets")
        raw = await resp.read()
        assert b"value-" not in raw
        assert orjson.loads(raw) == {
            "secrets": [
                {"name": "app/a", "version_id": vid, "age_seconds": 1.5, "stale": False},
                {"name": "app/b", "version_id": None, "age_seconds": None, "stale": False},
            ]
        }
        only_b = await (await http.get("/v1/secrets", params={"prefix": "app/b"})).json()
        assert [s["name"] for s in only_b["secrets"]] == ["app/b"]
        bad = await http.get("/v1/secrets", params={"prefix": "a b"})
        assert bad.status == 400
        extra = await http.get("/v1/secrets", params={"prefix": "a", "x": "1"})
        assert extra.status == 400


async def test_health_states() -> None:
    async with serve_api() as srv, srv.session() as http:
        srv.state.ready = False
        starting = await http.get("/v1/health")
        assert starting.status == 503
        assert (await starting.json())["status"] == "starting"
        srv.state.ready = True
        srv.cache.put("app/k", b"v")
        ok = await (await http.get("/v1/health")).json()
        assert ok["status"] == "ok"
        assert ok["cache"] == {
            "entries": 1,
            "stale": 0,
            "declared_unloaded": 0,
            "persist_refused": 0,
        }
        assert ok["backends"]["local"]["ok"] is True
        srv.cache.stale.add(SecretName("app/k"))
        degraded = await http.get("/v1/health")
        assert degraded.status == 200
        assert (await degraded.json())["status"] == "degraded"
        srv.cache.stale.clear()
        srv.cache.unloaded[SecretName("app/declared")] = "secret not found"
        unloaded = await http.get("/v1/health")
        raw = await unloaded.read()
        assert orjson.loads(raw)["status"] == "degraded"
        assert orjson.loads(raw)["cache"]["declared_unloaded"] == 1
        assert b"app/declared" not in raw


async def test_metrics_text() -> None:
    async with serve_api() as srv, srv.session() as http:
        resp = await http.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b"secretd_reads_total" in await resp.read()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
async def test_wrong_methods_are_405(method: str) -> None:
    async with serve_api() as srv, srv.session() as http:
        srv.cache.put("app/k", b"v")
        for path in ("/v1/secrets/app/k", "/v1/secrets", "/v1/health", "/metrics"):
            resp = await http.request(method, path)
            assert resp.status == 405, path
            if method != "HEAD":
                assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_unknown_route_is_json_404() -> None:
    async with serve_api() as srv, srv.session() as http:
        resp = await http.get("/v2/anything")
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_a_bug_is_500_without_traceback() -> None:
    async with serve_api() as srv, srv.session() as http:
        srv.cache.put("app/k", b"v")
        srv.cache.failures[SecretName("app/k")] = ZeroDivisionError("s3cret in a message")  # type: ignore[assignment]
        resp = await http.get("/v1/secrets/app/k")
        assert resp.status == 500
        raw = await resp.read()
        assert orjson.loads(raw) == {"error": {"code": "internal", "message": "internal error"}}
        assert b"Traceback" not in raw and b"s3cret" not in raw
        assert (await http.get("/v1/health")).status == 200


async def test_names_over_the_wire_match_the_name_rules() -> None:
    """500 seeded random names, percent-encoded in raw request bytes (an HTTP client
    would normalise dot segments away): 400 invalid_name exactly when the naming
    rules (docs/reference/http-api.md) say the name is invalid; never a 5xx."""
    rng = random.Random(20261128)
    alphabet = "abcXYZ019/_+=.@-" + "/" * 4 + ". %?#\\\x00\x7fé:;,*~'\"<>"
    async with serve_api() as srv:
        for _ in range(500):
            name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
            target = b"/v1/secrets/" + urllib.parse.quote(name, safe="/").encode()
            answer = await srv.raw(close_get(target))
            status = status_of(answer)
            body = orjson.loads(answer.partition(b"\r\n\r\n")[2])
            if name_problem(name) is not None:
                assert (status, body["error"]["code"]) == (400, "invalid_name"), name
            else:
                assert status in (403, 404), (name, status)  # only app/ blob json allowed
