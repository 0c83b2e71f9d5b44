"""The `postgresql` rotator driven by the real agent against a real PostgreSQL
(docs/rotation.md): applications that follow the secret never see an
authentication failure, old pooled connections keep working, a refused new
role leaves `current` alone and is reported everywhere, and no generated
password ever reaches the server's log."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from secretd_client import AsyncClient
from tests.e2e.agent_proc import AgentProcess, Store, secretd
from tests.e2e.conftest import StartAgent
from tests.servers.pg_app import (
    AUTH_SQLSTATES,
    AppDatabase,
    rotation_toml,
    seed_store,
    store_values,
)
from tests.servers.postgres_server import PostgresServer, postgres_server

__all__ = ["postgres_server"]

ALLOW = '[[allow]]\nsecrets = ["db/*"]\nuids = [0]\n\n'


@pytest.fixture
async def app(store: Store, postgres_server: PostgresServer) -> AppDatabase:
    """The application's database and two roles, its first credential in the store as db/app."""
    database = await AppDatabase.create(postgres_server)
    seed_store(store.root, database)
    return database


async def _agent(
    workdir: Path, start_agent: StartAgent, app: AppDatabase, **rotation: str
) -> AgentProcess:
    return await start_agent(
        allow=ALLOW + rotation_toml(app, **rotation),
        declared=("db/app",),
    )


async def _rotate(agent: AgentProcess) -> tuple[int, dict[str, Any]]:
    async with agent.session() as http, http.post("/v1/rotation/db/app") as response:
        return response.status, await response.json()


async def _current(client: AsyncClient) -> dict[str, Any]:
    secret = await client.get("db/app")
    document: dict[str, Any] = json.loads(secret.as_text())
    return document


@pytest.mark.timeout(240)
async def test_an_app_that_follows_the_secret_sees_no_auth_failure_in_20_rotations(
    workdir: Path, store: Store, start_agent: StartAgent, app: AppDatabase
) -> None:
    agent = await _agent(workdir, start_agent, app, grace="500ms")
    stop = asyncio.Event()
    done: list[str] = []
    failures: list[str] = []

    async def application(client: AsyncClient) -> None:
        # Re-read before every query (the SDK's cache follows the secret by
        # long-poll) and open a new connection for each one.
        while not stop.is_set():
            credential = await _current(client)
            try:
                await app.query_as(credential)
            except asyncpg.PostgresError as exc:
                if exc.sqlstate not in AUTH_SQLSTATES:
                    raise
                failures.append(f"{credential['username']}: {exc.sqlstate}")
            else:
                done.append(credential["username"])
            await asyncio.sleep(0.005)

    versions = []
    async with AsyncClient(str(agent.socket), cache=True) as client:
        workers = [asyncio.create_task(application(client)) for _ in range(3)]
        for _ in range(20):
            status, outcome = await _rotate(agent)
            assert status == 200, outcome
            assert outcome["steps"] == ["create", "set", "test", "finish"]
            versions.append(outcome["version_id"])
        await asyncio.sleep(0.5)  # let the workers use the last credential too
        stop.set()
        await asyncio.gather(*workers)
        final = await _current(client)

    assert failures == []
    assert len(set(versions)) == 20
    assert set(done) == {app.role_a, app.role_b}  # the users really alternated
    assert len(done) > 100  # and the app kept working all along
    assert await app.logs_in(final)
    history = store_values(store.root, "db/app")
    assert history[-1]["_stages"] == ["current"]
    assert history[-1]["username"] != history[-2]["username"]


@pytest.mark.timeout(120)
async def test_pooled_connections_keep_working_through_a_rotation_interval(
    workdir: Path, store: Store, start_agent: StartAgent, app: AppDatabase
) -> None:
    """The schedule rotates every 6 s. A pool opened with the first credential
    keeps serving - held connections and new logins alike - for the whole
    interval after the first rotation; a held connection outlives both."""
    first = app.credential()
    held = await app.connect(first)
    pool = await asyncpg.create_pool(
        host=first["host"],
        port=first["port"],
        user=first["username"],
        password=first["password"],
        database="postgres",
        ssl=False,
        min_size=2,
        max_size=4,
    )
    try:
        agent = await _agent(workdir, start_agent, app, every="6s", grace="0s")
        async with AsyncClient(str(agent.socket)) as client:
            start = (await client.get("db/app")).version_id
            rotated = await _next_version(client, start, within=30)
            seen_at = time.monotonic()
            queries = 0
            while time.monotonic() - seen_at < 4.0:  # most of the 6 s interval
                await pool.expire_connections()  # force fresh logins with the old credential
                async with pool.acquire() as conn:
                    await conn.execute(f"INSERT INTO {app.table} VALUES (2)")  # noqa: S608
                queries += 1
                await asyncio.sleep(0.05)
            assert queries > 10
            await _next_version(client, rotated, within=30)  # the second rotation
        count = "SELECT count(*) FROM " + app.table  # noqa: S608 - our own table name
        assert await held.fetchval(count) >= queries
    finally:
        await pool.close()
        await held.close()
    history = store_values(store.root, "db/app")
    assert [v["username"] for v in history[-3:]] == [app.role_a, app.role_b, app.role_a]


async def _next_version(client: AsyncClient, after: str, *, within: float) -> str:
    async with asyncio.timeout(within):
        async for secret in client.watch("db/app", index=after, wait=within):
            if secret.version_id != after:
                return secret.version_id
    raise AssertionError("no rotation")


@pytest.mark.timeout(120)
async def test_a_refused_new_role_leaves_current_untouched_and_is_reported(
    workdir: Path, store: Store, start_agent: StartAgent, app: AppDatabase
) -> None:
    await app.server.execute(f"ALTER ROLE {app.role_b} NOLOGIN")
    agent = await _agent(workdir, start_agent, app)
    async with AsyncClient(str(agent.socket)) as client:
        before = await client.get("db/app")
        status, answer = await _rotate(agent)
        assert status == 502
        assert answer["error"]["code"] == "rotation_test_failed"
        assert "test" in answer["error"]["message"]
        assert app.role_b in answer["error"]["message"]
        after = await client.get("db/app", refresh=True)
        assert after.version_id == before.version_id
        assert await app.logs_in(json.loads(after.as_text()))
        health = await client.health()
        assert health.status == "degraded"
        assert health.raw["rotations"] == {"configured": 1, "failing": 1}
    status_out = secretd("status", "--socket", str(agent.socket), "--json", check=False)
    rows = json.loads(status_out)["rotations"]
    assert rows[0]["name"] == "db/app"
    assert rows[0]["last_result"] == "failed"
    assert "test" in rows[0]["last_error"]
    audit = [json.loads(line) for line in agent.audit_path.read_text().splitlines()]
    failed = [a for a in audit if a["event"] == "rotate" and a["result"] == "failed"]
    assert [a["step"] for a in failed] == ["test"]
    async with agent.session() as http, http.get("/metrics") as response:
        metrics = await response.text()
    assert 'secretd_rotations_total{result="failed"} 1.0' in metrics

    # Once the database takes the role again, the next run resumes the same
    # pending value from `set` and finishes.
    await app.server.execute(f"ALTER ROLE {app.role_b} LOGIN")
    out = secretd("rotate", "db/app", "--socket", str(agent.socket), "--json")
    outcome = json.loads(out)
    assert outcome["resumed"] is True
    assert outcome["steps"] == ["set", "test", "finish"]
    async with AsyncClient(str(agent.socket)) as client:
        assert (await client.health()).status == "ok"
        now = json.loads((await client.get("db/app", refresh=True)).as_text())
    assert now["username"] == app.role_b
    assert await app.logs_in(now)


@pytest.mark.timeout(120)
async def test_no_generated_password_reaches_the_server_log(
    workdir: Path, store: Store, start_agent: StartAgent, app: AppDatabase
) -> None:
    """log_statement = 'all': the ALTER ROLE statements are logged, with the
    SCRAM verifier secretd computed, never the password."""
    agent = await _agent(workdir, start_agent, app)
    for _ in range(3):
        status, outcome = await _rotate(agent)
        assert status == 200, outcome
    passwords = {v["password"] for v in store_values(store.root, "db/app")}
    assert len(passwords) == 4
    log = app.server.log_text()
    assert f'ALTER ROLE "{app.role_b}" PASSWORD \'SCRAM-SHA-256$4096:' in log
    assert f'ALTER ROLE "{app.role_a}" PASSWORD \'SCRAM-SHA-256$4096:' in log
    for password in passwords:
        assert password not in log
    for leak in (agent.log(), agent.audit_path.read_text()):
        for password in passwords:
            assert password not in leak
