"""Every route of docs/api.md and parameter against the real `secretd agent` on its Unix socket."""

from __future__ import annotations

import asyncio
import base64

import orjson

from tests.e2e.agent_proc import Store
from tests.e2e.conftest import StartAgent

DB = b'{"user": "app", "password": "e2e-pw-1", "port": 5432}'


async def test_read_field_raw_and_binary(store: Store, start_agent: StartAgent) -> None:
    vid = store.put("app/db", DB)
    blob = bytes(range(256))
    store.put("app/blob", blob)
    agent = await start_agent(declared=("app/db",))
    async with agent.session() as http:
        resp = await http.get("/v1/secrets/app/db")
        assert resp.status == 200
        body = await resp.json()
        assert list(body) == ["name", "version_id", "stages", "created_at", "value", "stale"]
        assert (body["name"], body["version_id"], body["stages"]) == ("app/db", vid, ["current"])
        assert body["value"] == DB.decode() and body["stale"] is False
        assert body["created_at"].endswith("Z")
        field = await http.get("/v1/secrets/app/db", params={"field": "password", "format": "raw"})
        assert field.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert await field.read() == b"e2e-pw-1"
        port = await (await http.get("/v1/secrets/app/db", params={"field": "port"})).json()
        assert port["value"] == "5432"
        binary = await (await http.get("/v1/secrets/app/blob")).json()
        assert base64.b64decode(binary["value_b64"]) == blob and "value" not in binary
        raw = await http.get("/v1/secrets/app/blob", params={"format": "raw"})
        assert raw.headers["Content-Type"] == "application/octet-stream"
        assert await raw.read() == blob


async def test_stage_version_and_not_found(store: Store, start_agent: StartAgent) -> None:
    first = store.put("app/k", b"one")
    second = store.put("app/k", b"two")
    agent = await start_agent()
    async with agent.session() as http:
        prev = await (await http.get("/v1/secrets/app/k", params={"stage": "previous"})).json()
        assert (prev["version_id"], prev["value"], prev["stages"]) == (first, "one", ["previous"])
        by_id = await (await http.get("/v1/secrets/app/k", params={"version": first})).json()
        assert by_id["value"] == "one"
        cur = await (await http.get("/v1/secrets/app/k", params={"version": second})).json()
        assert cur["value"] == "two"
        for params in ({"version": "0" * 32}, {"stage": "pending"}):
            gone = await http.get("/v1/secrets/app/k", params=params)
            assert gone.status == 404, params
            assert (await gone.json())["error"]["code"] == "not_found"
        missing = await http.get("/v1/secrets/app/missing")
        assert missing.status == 404


async def test_refresh_and_strictness(store: Store, start_agent: StartAgent) -> None:
    store.put("app/k", b"v1")
    agent = await start_agent()
    async with agent.session() as http:
        assert (await http.get("/v1/secrets/app/k", params={"refresh": "true"})).status == 200
        for query in ("stgae=previous", "refresh=1", "stage=a&stage=b", "wait=1s", "format=xml"):
            resp = await http.get(f"/v1/secrets/app/k?{query}")
            assert resp.status == 400, query
            assert (await resp.json())["error"]["code"] == "invalid_request"
        bad_name = await http.get("/v1/secrets/app//k")
        assert (await bad_name.json())["error"]["code"] == "invalid_name"
        post = await http.post("/v1/secrets/app/k")
        assert post.status == 405
        assert (await post.json())["error"]["code"] == "method_not_allowed"


async def test_rotation_reaches_a_long_poll(store: Store, start_agent: StartAgent) -> None:
    first = store.put("app/rot", b"before")
    agent = await start_agent(declared=("app/rot",))
    async with agent.session() as http:
        poll = asyncio.create_task(
            http.get("/v1/secrets/app/rot", params={"wait": "30s", "index": first})
        )
        await asyncio.sleep(0.2)
        assert not poll.done()  # parked: the version has not moved
        second = await asyncio.to_thread(store.put, "app/rot", b"after")
        async with asyncio.timeout(10):  # bound only; the latency figure is in the bench
            resp = await poll
        body = await resp.json()
        assert (body["version_id"], body["value"]) == (second, "after")
        now = await (await http.get("/v1/secrets/app/rot")).json()
        assert now["version_id"] == second
        prev = await (await http.get("/v1/secrets/app/rot", params={"stage": "previous"})).json()
        assert prev["version_id"] == first


async def test_long_poll_times_out_with_the_same_body(
    store: Store, start_agent: StartAgent
) -> None:
    vid = store.put("app/k", b"steady")
    agent = await start_agent()
    async with agent.session() as http:
        resp = await http.get("/v1/secrets/app/k", params={"wait": "300ms", "index": vid})
        assert resp.status == 200
        body = await resp.json()
        assert (body["version_id"], body["value"]) == (vid, "steady")


async def test_list_health_metrics(store: Store, start_agent: StartAgent) -> None:
    vid = store.put("app/a", b"value-a")
    store.put("app/b", b"value-b")
    store.put("other/c", b"value-c")  # no rule covers it: never listed
    agent = await start_agent(declared=("app/a",))
    async with agent.session() as http:
        raw = await (await http.get("/v1/secrets", params={"prefix": "app/"})).read()
        assert b"value-" not in raw
        listed = orjson.loads(raw)["secrets"]
        assert [s["name"] for s in listed] == ["app/a", "app/b"]
        assert listed[0]["version_id"] == vid and listed[0]["age_seconds"] >= 0
        health = await http.get("/v1/health")
        assert health.status == 200
        doc = await health.json()
        assert doc["status"] == "ok"
        assert doc["backends"]["local"]["ok"] is True
        assert doc["cache"]["entries"] >= 1
        metrics = await http.get("/metrics")
        text = await metrics.text()
        assert metrics.headers["Content-Type"].startswith("text/plain")
        assert "secretd_reads_total" in text and "value-" not in text


async def test_aws_compatible_route(store: Store, start_agent: StartAgent) -> None:
    vid = store.put("app/aws", b"aws-compatible")
    agent = await start_agent()
    async with agent.session() as http:
        resp = await http.get("/secretsmanager/get", params={"secretId": "app/aws"})
        doc = await resp.json(content_type=None)
        assert (doc["Name"], doc["VersionId"], doc["SecretString"]) == (
            "app/aws",
            vid,
            "aws-compatible",
        )
        assert doc["VersionStages"] == ["AWSCURRENT"]
        assert await (await http.get("/ping")).text() == "healthy"


async def test_reads_are_audited(store: Store, start_agent: StartAgent) -> None:
    vid = store.put("app/k", b"audited-value")
    agent = await start_agent()
    async with agent.session() as http:
        assert (await http.get("/v1/secrets/app/k")).status == 200
    lines = [orjson.loads(line) for line in agent.audit_path.read_bytes().splitlines()]
    reads = [line for line in lines if line["event"] == "read"]
    assert reads[-1]["secret"] == "app/k" and reads[-1]["version_id"] == vid
    assert reads[-1]["caller"]["uid"] == 0 and reads[-1]["result"] == "ok"
    assert b"audited-value" not in agent.audit_path.read_bytes()


async def test_a_declared_secret_that_fails_to_load_degrades_health(
    store: Store, start_agent: StartAgent
) -> None:
    store.put("app/here", b"v")
    agent = await start_agent(declared=("app/here", "app/not-in-store"))
    async with agent.session() as http:
        raw = await (await http.get("/v1/health")).read()
        doc = orjson.loads(raw)
        assert doc["status"] == "degraded"
        assert doc["cache"]["declared_unloaded"] == 1
        assert b"not-in-store" not in raw  # health names no secrets
        assert (await http.get("/v1/secrets/app/here")).status == 200
    assert "secret.preload_failed" in agent.log()
