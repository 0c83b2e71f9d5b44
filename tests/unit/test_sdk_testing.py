"""Client and AsyncClient against `secretd_client.testing.StaticSecrets`: the
same API shape as the agent, in memory (what apps use in their own tests)."""

from __future__ import annotations

import pytest

import secretd_client as sc
from secretd_client.testing import StaticSecrets

FAST = sc.Backoff(initial=0.001, maximum=0.01)
DB = '{"password": "pw1", "port": 5432, "nested": {"a": [1, "é"]}}'


@pytest.fixture
def secrets() -> StaticSecrets:
    return StaticSecrets({"db/app": DB, "bin/key": b"\x00\xff\x10", "api/token": "tok"})


def test_get_current_field_and_binary(secrets: StaticSecrets) -> None:
    with secrets.client() as client:
        current = client.get("db/app")
        assert current.value == DB
        assert current.version_id == "v1"
        assert current.stages == {"current"}
        assert current.stale is False
        assert client.get("db/app", field="password").value == "pw1"
        assert client.get("db/app", field="port").value == "5432"
        assert client.get("db/app", field="nested").value == '{"a":[1,"é"]}'
        assert client.get("bin/key").value == b"\x00\xff\x10"


def test_stage_and_version_after_rotation(secrets: StaticSecrets) -> None:
    assert secrets.rotate("db/app", "two") == "v2"
    with secrets.client() as client:
        assert client.get("db/app").value == "two"
        previous = client.get("db/app", stage="previous")
        assert (previous.version_id, previous.value) == ("v1", DB)
        assert client.get("db/app", version="v1").stages == {"previous"}
        with pytest.raises(sc.NotFound):
            client.get("db/app", version="v9")
        with pytest.raises(sc.InvalidRequest):
            client.get("db/app", stage="previous", version="v1")


def test_pending_version_does_not_become_current(secrets: StaticSecrets) -> None:
    secrets.rotate("db/app", "next", stage="pending")
    with secrets.client() as client:
        assert client.get("db/app").version_id == "v1"
        assert client.get("db/app", stage="pending").value == "next"


def test_errors_are_typed(secrets: StaticSecrets) -> None:
    secrets.forbid("api/token")
    with secrets.client() as client:
        with pytest.raises(sc.Forbidden) as forbidden:
            client.get("api/token")
        assert forbidden.value.status == 403 and forbidden.value.code == "forbidden"
        with pytest.raises(sc.NotFound):
            client.get("no/such")
        with pytest.raises(sc.InvalidRequest):
            client.get("db/app", field="x")
        with pytest.raises(sc.InvalidName):
            client.get("a/../db/app")
        secrets.fail_next(1, "backend_timeout")
        with pytest.raises(sc.BackendTimeout):
            client.get("db/app")
        secrets.fail_next(1, "rate_limited")
        with pytest.raises(sc.RateLimited):
            client.get("db/app", refresh=True)


def test_list_and_health(secrets: StaticSecrets) -> None:
    secrets.forbid("api/token")
    with secrets.client() as client:
        assert [row.name for row in client.list()] == ["bin/key", "db/app"]
        assert [row.name for row in client.list("db/")] == ["db/app"]
        assert client.health().ok


def test_watch_yields_current_then_each_rotation(secrets: StaticSecrets) -> None:
    with secrets.client() as client:
        watch = client.watch("api/token", wait=5, backoff=FAST)
        assert next(watch).value == "tok"
        secrets.rotate("api/token", "tok2")
        assert next(watch).value == "tok2"
        secrets.rotate("api/token", "tok3")
        assert next(watch).version_id == "v3"


def test_watch_from_index_skips_the_known_version(secrets: StaticSecrets) -> None:
    with secrets.client() as client:
        secrets.rotate("api/token", "tok2")
        assert next(client.watch("api/token", wait=5, index="v1")).value == "tok2"


def test_watch_rides_out_transient_errors(secrets: StaticSecrets) -> None:
    secrets.fail_next(3, "backend_unavailable")
    with secrets.client() as client:
        assert next(client.watch("db/app", wait=5, backoff=FAST)).version_id == "v1"
    assert secrets.requests == 4


def test_watch_ends_on_errors_retrying_cannot_fix(secrets: StaticSecrets) -> None:
    with secrets.client() as client:
        watch = client.watch("db/app", wait=5, backoff=FAST)
        next(watch)
        secrets.forbid("db/app")
        secrets.rotate("db/app", "new")
        with pytest.raises(sc.Forbidden):
            next(watch)
        with pytest.raises(sc.InvalidName):
            client.watch("bad//name")


async def test_async_client_matches(secrets: StaticSecrets) -> None:
    async with secrets.async_client() as client:
        assert (await client.get("db/app", field="password")).value == "pw1"
        assert [row.name for row in await client.list("bin")] == ["bin/key"]
        assert (await client.health()).status == "ok"
        with pytest.raises(sc.NotFound):
            await client.get("nope")
        watch = client.watch("db/app", wait=5, backoff=FAST)
        assert (await anext(watch)).version_id == "v1"
        secrets.rotate("db/app", '{"password": "pw2"}')
        assert (await anext(watch)).version_id == "v2"
        await watch.aclose()
