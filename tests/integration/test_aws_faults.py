"""Throttling, outages and hostile answers between the AWS backend and a real
moto_server, injected by the fault proxy (tests/fakes/fault_proxy.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest
import structlog

from secretd.backends.aws import THROTTLE_ATTEMPTS, AwsBackend, open_backend
from secretd.config.schema import AwsBackendConfig
from secretd.errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadBackendAnswer,
    NotFound,
)
from secretd.model import Fetched, SecretName
from tests.fakes.fake_clock import FakeClock
from tests.fakes.fault_proxy import Fault, FaultProxy
from tests.servers.moto_server import REGION, MotoServer, admin, moto

pytestmark = pytest.mark.aws

__all__ = ["admin", "moto"]  # shared fixtures

THROTTLED = b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
CANARY = "canary-aws-5e1d"


@pytest.fixture
async def proxy(moto: MotoServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", moto.port) as running:
        yield running


@asynccontextmanager
async def behind(proxy: FaultProxy, *, timeout: str) -> AsyncIterator[AwsBackend]:
    """An AWS backend whose endpoint is `proxy`."""
    config = AwsBackendConfig(type="aws", region=REGION, endpoint_url=proxy.url, timeout=timeout)
    async with aclosing(await open_backend("aws", config, max_secret_bytes=4096)) as backend:
        yield backend


@pytest.fixture
async def backend(proxy: FaultProxy, admin: Any) -> AsyncIterator[AwsBackend]:
    # Generous: a loaded machine must not turn a slow answer into a timeout here.
    async with behind(proxy, timeout="10s") as opened:
        yield opened


@pytest.fixture
async def hasty(proxy: FaultProxy, admin: Any) -> AsyncIterator[AwsBackend]:
    """A backend with a short timeout, for a server that never answers."""
    async with behind(proxy, timeout="2s") as opened:
        yield opened


def N(name: str) -> SecretName:
    return SecretName(name)


def rewrite_json(change: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    def rewrite(body: bytes) -> bytes:
        document = json.loads(body)
        change(document)
        return json.dumps(document).encode()

    return rewrite


@pytest.mark.parametrize(
    ("status", "body"),
    [(400, THROTTLED), (429, b"{}"), (400, b'{"__type":"TooManyRequestsException"}')],
    ids=["throttling-400", "plain-429", "too-many-requests"],
)
async def test_throttling_is_retried_with_nothing_lost(
    backend: AwsBackend, admin: Any, proxy: FaultProxy, status: int, body: bytes
) -> None:
    admin.create_secret(Name="db/app", SecretString=CANARY)
    proxy.add(Fault.canned(status, body, content_type="application/x-amz-json-1.1", times=3))
    fetched = await backend.fetch(N("db/app"))
    assert fetched.version.value.reveal() == CANARY.encode()
    assert backend.api_calls["GetSecretValue"] == 4
    assert proxy.count(action="canned") == 3


async def test_endless_throttling_gives_up_bounded(
    backend: AwsBackend, admin: Any, proxy: FaultProxy
) -> None:
    admin.create_secret(Name="db/app", SecretString="v")
    proxy.add(Fault.canned(400, THROTTLED, content_type="application/x-amz-json-1.1"))
    async with asyncio.timeout(10):
        with pytest.raises((BackendUnavailable, BackendTimeout)) as caught:
            await backend.fetch(N("db/app"))
    assert "db/app" in str(caught.value)
    assert 1 < backend.api_calls["GetSecretValue"] <= THROTTLE_ATTEMPTS


async def test_batches_and_listings_survive_throttling(
    backend: AwsBackend, admin: Any, proxy: FaultProxy
) -> None:
    names = [N(f"svc/{i:02d}") for i in range(45)]
    for name in names:
        admin.create_secret(Name=name, SecretString=f"{CANARY}-{name}")
    proxy.add(Fault.canned(429, b"{}", times=4))
    results = await backend.fetch_many(names)
    assert all(isinstance(results[name], Fetched) for name in names)
    proxy.add(Fault.canned(400, THROTTLED, content_type="application/x-amz-json-1.1", times=2))
    versions = await backend.current_versions(names)
    assert set(versions) == set(names)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.reset(), BackendUnavailable),
        (Fault.canned(500, b'{"__type":"InternalServiceError"}'), BackendUnavailable),
        (Fault.canned(503, b"<html>down</html>", content_type="text/html"), BackendUnavailable),
        (Fault.blackhole(), BackendTimeout),
    ],
    ids=["reset", "500", "503-html", "blackhole"],
)
async def test_outages_are_backend_errors_then_recover(
    hasty: AwsBackend, admin: Any, proxy: FaultProxy, fault: Fault, expected: type[Exception]
) -> None:
    admin.create_secret(Name="db/app", SecretString=CANARY)
    proxy.add(fault)
    async with asyncio.timeout(20):
        with pytest.raises(expected) as caught:
            await hasty.fetch(N("db/app"))
        assert CANARY not in str(caught.value)
        with pytest.raises(BackendError):
            await hasty.current_versions([N("db/app")])
        outcome = (await hasty.fetch_many([N("db/app")]))[N("db/app")]
        assert isinstance(outcome, BackendError) and not isinstance(outcome, NotFound)
    proxy.clear()
    assert (await hasty.fetch(N("db/app"))).version.value.reveal() == CANARY.encode()


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(Name="db/other"),
        lambda d: d.update(VersionId=""),
        lambda d: d.update(VersionStages=["AWSPREVIOUS"]),
        lambda d: d.update(VersionStages="AWSCURRENT"),
        lambda d: d.update(SecretBinary="AAAA"),
        lambda d: d.pop("SecretString"),
        lambda d: d.update(SecretString=None, CreatedDate="yesterday"),
        lambda d: d.pop("CreatedDate"),
    ],
    ids=[
        "other-name",
        "empty-version",
        "wrong-stage",
        "stages-not-list",
        "both-values",
        "no-value",
        "bad-date",
        "no-date",
    ],
)
async def test_hostile_answers_are_refused(
    backend: AwsBackend, admin: Any, proxy: FaultProxy, change: Callable[[dict[str, Any]], None]
) -> None:
    admin.create_secret(Name="db/app", SecretString=CANARY)
    proxy.add(Fault.transform(rewrite_json(change)))
    with pytest.raises(BackendError) as caught:
        await backend.fetch(N("db/app"))
    assert isinstance(caught.value, BadBackendAnswer | BackendUnavailable)
    assert CANARY not in str(caught.value)


async def test_an_answer_for_another_version_is_refused(
    backend: AwsBackend, admin: Any, proxy: FaultProxy
) -> None:
    old = admin.create_secret(Name="db/app", SecretString="one")["VersionId"]
    new = admin.put_secret_value(SecretId="db/app", SecretString="two")["VersionId"]
    proxy.add(Fault.transform(rewrite_json(lambda d: d.update(VersionId=new))))
    with pytest.raises(BadBackendAnswer, match="another version"):
        await backend.fetch(N("db/app"), version_id=old)


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>502</html>", b'{"Name": ', b"[1, 2, 3]", b"null"],
    ids=["empty", "html", "truncated-json", "list", "null"],
)
async def test_garbage_200_answers_are_refused(
    backend: AwsBackend, admin: Any, proxy: FaultProxy, body: bytes
) -> None:
    proxy.add(Fault.canned(200, body, content_type="application/x-amz-json-1.1"))
    with pytest.raises(BackendError):
        await backend.fetch(N("db/app"))
    proxy.clear()
    proxy.add(Fault.canned(200, body, content_type="application/x-amz-json-1.1"))
    outcome = (await backend.fetch_many([N("db/app")]))[N("db/app")]
    assert isinstance(outcome, BackendError)


async def test_truncated_answers_are_refused(
    backend: AwsBackend, admin: Any, proxy: FaultProxy
) -> None:
    admin.create_secret(Name="db/app", SecretString=CANARY * 20)
    proxy.add(Fault.truncate())
    with pytest.raises(BackendError) as caught:
        await backend.fetch(N("db/app"))
    assert CANARY not in str(caught.value)


async def test_a_batch_answer_naming_strangers_loses_nobody(
    backend: AwsBackend, admin: Any, proxy: FaultProxy
) -> None:
    for name in ("a", "b"):
        admin.create_secret(Name=name, SecretString=f"value-{name}")

    def swap(document: dict[str, Any]) -> None:
        for item in document.get("SecretValues", []):
            item["Name"] = "stranger"

    proxy.add(Fault.transform(rewrite_json(swap), times=1))
    results = await backend.fetch_many([N("a"), N("b")])
    # The batch left both out; each then got one direct read.
    assert {
        name: r.version.value.reveal() for name, r in results.items() if isinstance(r, Fetched)
    } == {
        "a": b"value-a",
        "b": b"value-b",
    }


async def test_no_value_reaches_a_log_line_on_any_path(
    backend: AwsBackend, admin: Any, proxy: FaultProxy
) -> None:
    admin.create_secret(Name="db/app", SecretString=CANARY)
    admin.create_secret(Name="db/big", SecretString=CANARY * 500)
    with structlog.testing.capture_logs() as logs:
        proxy.add(Fault.canned(429, b"{}", times=2))
        await backend.fetch(N("db/app"))
        await backend.fetch_many([N("db/app"), N("db/big"), N("db/none")])
        proxy.add(Fault.transform(rewrite_json(lambda d: d.update(Name="x")), times=1))
        with pytest.raises(BadBackendAnswer):
            await backend.fetch(N("db/app"), stage="current")
        proxy.add(Fault.canned(400, b'{"__type":"AccessDeniedException"}', times=1))
        await backend.fetch_many([N("db/app"), N("db/none")])  # batch refused: one by one
        await backend.current_versions([N("db/app")])
    assert logs, "expected throttling and batch-refusal log lines"
    assert CANARY not in repr(logs)


async def test_a_refused_batch_api_falls_back_then_is_tried_again(
    moto: MotoServer, admin: Any, proxy: FaultProxy
) -> None:
    clock = FakeClock()
    config = AwsBackendConfig(type="aws", region=REGION, endpoint_url=proxy.url)
    opened = await open_backend("aws", config, max_secret_bytes=4096, clock=clock)
    try:
        for name in ("a", "b"):
            admin.create_secret(Name=name, SecretString=name)
        denied = b'{"__type":"AccessDeniedException","message":"no batch for you"}'
        proxy.add(Fault.canned(400, denied, content_type="application/x-amz-json-1.1", times=1))
        first = await opened.fetch_many([N("a"), N("b")])
        assert all(isinstance(r, Fetched) for r in first.values())
        assert opened.api_calls == {"BatchGetSecretValue": 1, "GetSecretValue": 2}
        clock.advance(1800)
        await opened.fetch_many([N("a"), N("b")])
        assert opened.api_calls["BatchGetSecretValue"] == 1  # still reading one by one
        clock.advance(1800)
        await opened.fetch_many([N("a"), N("b")])
        assert opened.api_calls["BatchGetSecretValue"] == 2  # tried again after an hour
    finally:
        await opened.aclose()
