"""The AWS backend against a real moto_server on 127.0.0.1: reads, stages,
binary values, batch loading, change detection, rotation and deletion."""

from __future__ import annotations

import asyncio
import base64
import sys
from typing import Any

import pytest

from secretd.backends.aws import AwsBackend, open_backend
from secretd.backends.router import Router
from secretd.config.schema import AwsBackendConfig
from secretd.errors import BackendAuthError, BadBackendAnswer, ConfigError, NotFound
from secretd.model import Fetched, SecretName
from tests.fakes.fake_clock import FakeClock
from tests.servers.moto_server import REGION, MotoServer, admin, aws_backend, moto

pytestmark = pytest.mark.aws

__all__ = ["admin", "aws_backend", "moto"]  # shared fixtures


def config(url: str, **extra: Any) -> AwsBackendConfig:
    # Listings are not reused here: each check below must see the server's state.
    extra.setdefault("versions_max_age", "0s")
    return AwsBackendConfig(type="aws", region=REGION, endpoint_url=url, **extra)


def N(name: str) -> SecretName:
    return SecretName(name)


async def test_reads_the_current_text_value(aws_backend: AwsBackend, admin: Any) -> None:
    made = admin.create_secret(Name="db/app", SecretString='{"password":"pw"}')
    fetched = await aws_backend.fetch(N("db/app"))
    assert fetched.name == "db/app"
    assert fetched.version.version_id == made["VersionId"]
    assert fetched.version.stages == {"current"}
    assert fetched.version.value.reveal() == b'{"password":"pw"}'
    assert fetched.version.created_at.utcoffset() is not None
    assert aws_backend.arn_for(N("db/app")) == made["ARN"]


async def test_reads_binary_values_as_bytes(aws_backend: AwsBackend, admin: Any) -> None:
    admin.create_secret(Name="tls/key", SecretBinary=b"\x00\xff\x10binary")
    fetched = await aws_backend.fetch(N("tls/key"))
    assert fetched.version.value.reveal() == b"\x00\xff\x10binary"
    assert fetched.version.value.text() is None


async def test_stages_and_versions(aws_backend: AwsBackend, admin: Any) -> None:
    old = admin.create_secret(Name="api/key", SecretString="one")["VersionId"]
    new = admin.put_secret_value(SecretId="api/key", SecretString="two")["VersionId"]
    assert (await aws_backend.fetch(N("api/key"))).version.value.reveal() == b"two"
    previous = await aws_backend.fetch(N("api/key"), stage="previous")
    assert (previous.version.version_id, previous.version.stages) == (old, {"previous"})
    by_id = await aws_backend.fetch(N("api/key"), version_id=new)
    assert by_id.version.stages == {"current"}
    admin.put_secret_value(SecretId="api/key", SecretString="blue", VersionStages=["blue"])
    custom = await aws_backend.fetch(N("api/key"), stage="blue")
    assert (custom.version.value.reveal(), custom.version.stages) == (b"blue", {"blue"})


async def test_rotation_via_pending_then_stage_move(aws_backend: AwsBackend, admin: Any) -> None:
    old = admin.create_secret(Name="db/rot", SecretString="old")["VersionId"]
    token = "0123456789abcdef0123456789abcdef"
    admin.put_secret_value(
        SecretId="db/rot",
        ClientRequestToken=token,
        SecretString="new",
        VersionStages=["AWSPENDING"],
    )
    pending = await aws_backend.fetch(N("db/rot"), stage="pending")
    assert (pending.version.version_id, pending.version.value.reveal()) == (token, b"new")
    assert await aws_backend.current_versions([N("db/rot")]) == {"db/rot": old}
    admin.update_secret_version_stage(
        SecretId="db/rot", VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=old
    )
    assert await aws_backend.current_versions([N("db/rot")]) == {"db/rot": token}
    current = await aws_backend.fetch(N("db/rot"))
    assert current.version.value.reveal() == b"new" and "current" in current.version.stages
    assert (await aws_backend.fetch(N("db/rot"), stage="previous")).version.version_id == old


async def test_missing_secrets_versions_and_stages_are_not_found(
    aws_backend: AwsBackend, admin: Any
) -> None:
    admin.create_secret(Name="x", SecretString="v")
    with pytest.raises(NotFound, match="'nope'"):
        await aws_backend.fetch(N("nope"))
    with pytest.raises(NotFound):
        await aws_backend.fetch(N("x"), version_id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFound):
        await aws_backend.fetch(N("x"), version_id="not-a-uuid")
    with pytest.raises(NotFound):
        await aws_backend.fetch(N("x"), stage="previous")


@pytest.mark.parametrize("force", [False, True])
async def test_deleted_secrets_are_not_found_everywhere(
    aws_backend: AwsBackend, admin: Any, force: bool
) -> None:
    admin.create_secret(Name="gone", SecretString="v")
    admin.create_secret(Name="kept", SecretString="v")
    if force:
        admin.delete_secret(SecretId="gone", ForceDeleteWithoutRecovery=True)
    else:
        admin.delete_secret(SecretId="gone", RecoveryWindowInDays=7)
    with pytest.raises(NotFound):
        await aws_backend.fetch(N("gone"))
    assert set(await aws_backend.current_versions([N("gone"), N("kept")])) == {"kept"}
    results = await aws_backend.fetch_many([N("gone"), N("kept")])
    assert isinstance(results[N("gone")], NotFound)
    assert isinstance(results[N("kept")], Fetched)


async def test_fetch_many_batches_twenty_names_a_call(aws_backend: AwsBackend, admin: Any) -> None:
    names = [N(f"svc/{i:02d}") for i in range(45)]
    for i, name in enumerate(names):
        if i % 2:
            admin.create_secret(Name=name, SecretBinary=bytes([i]) * 3)
        else:
            admin.create_secret(Name=name, SecretString=f"value-{i}")
    aws_backend.api_calls.clear()
    results = await aws_backend.fetch_many([*names, N("svc/missing"), names[0]])
    assert aws_backend.api_calls == {"BatchGetSecretValue": 3}
    assert isinstance(results.pop(N("svc/missing")), NotFound)
    assert len(results) == 45
    for i, name in enumerate(names):
        fetched = results[name]
        assert isinstance(fetched, Fetched) and fetched.name == name
        expected = bytes([i]) * 3 if i % 2 else f"value-{i}".encode()
        assert fetched.version.value.reveal() == expected
        assert fetched.version.stages == {"current"}


async def test_concurrent_current_reads_share_batch_calls(
    aws_backend: AwsBackend, admin: Any
) -> None:
    names = [N(f"c/{i:02d}") for i in range(30)]
    for name in names:
        admin.create_secret(Name=name, SecretString=f"v-{name}")
    aws_backend.api_calls.clear()
    results = await asyncio.gather(
        *(aws_backend.fetch(name) for name in [*names, N("c/none")]), return_exceptions=True
    )
    assert isinstance(results[-1], NotFound)
    assert [r.version.value.reveal() for r in results[:-1]] == [  # type: ignore[union-attr]
        f"v-{name}".encode() for name in names
    ]
    assert aws_backend.api_calls == {"BatchGetSecretValue": 2}  # 31 names: 20 + 11


async def test_a_cancelled_reader_does_not_hurt_the_batch(
    aws_backend: AwsBackend, admin: Any
) -> None:
    for name in ("k/a", "k/b", "k/c"):
        admin.create_secret(Name=name, SecretString=name)
    tasks = [asyncio.ensure_future(aws_backend.fetch(N(n))) for n in ("k/a", "k/b", "k/c")]
    await asyncio.sleep(0)
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert [d.version.value.reveal() for d in (done[0], done[2])] == [b"k/a", b"k/c"]  # type: ignore[union-attr]


async def test_current_versions_lists_small_accounts_in_one_call(
    aws_backend: AwsBackend, admin: Any
) -> None:
    made = {f"n/{i}": admin.create_secret(Name=f"n/{i}", SecretString="v") for i in range(60)}
    aws_backend.api_calls.clear()
    names = [N(f"n/{i}") for i in range(0, 60, 2)] + [N("n/absent")]
    versions = await aws_backend.current_versions(names)
    assert versions == {name: made[name]["VersionId"] for name in names if name != "n/absent"}
    assert aws_backend.api_calls == {"ListSecrets": 1}


async def test_current_versions_switches_to_filters_in_large_accounts(
    aws_backend: AwsBackend, admin: Any
) -> None:
    for i in range(230):
        admin.create_secret(Name=f"bulk/{i:03d}", SecretString="v")
    wanted = [N(f"bulk/{i:03d}") for i in (200, 210, 220, 229)] + [N("bulk/absent")]
    aws_backend.api_calls.clear()
    first = await aws_backend.current_versions(wanted)
    assert set(first) == set(wanted) - {"bulk/absent"}
    assert aws_backend.api_calls["ListSecrets"] == 2  # one account page (budget), then one filter
    aws_backend.api_calls.clear()
    assert await aws_backend.current_versions(wanted) == first
    assert aws_backend.api_calls == {"ListSecrets": 1}  # the account is known to be larger


async def test_one_listing_answers_checks_within_max_age(moto: MotoServer, admin: Any) -> None:
    clock = FakeClock()
    opened = await open_backend(
        "aws", config(moto.url, versions_max_age="60s"), max_secret_bytes=4096, clock=clock
    )
    try:
        old = {f"m/{i}": admin.create_secret(Name=f"m/{i}", SecretString="v") for i in range(30)}
        names = [N(f"m/{i}") for i in range(30)]
        assert set(await opened.current_versions(names)) == set(names)
        opened.api_calls.clear()
        for start in range(0, 30, 3):  # the cache's small, jittered batches
            clock.advance(5)
            await opened.current_versions(names[start : start + 3])
        assert opened.api_calls == {}  # all answered by the first listing
        new = admin.put_secret_value(SecretId="m/7", SecretString="w")["VersionId"]
        assert (await opened.current_versions([N("m/7")]))["m/7"] == old["m/7"]["VersionId"]
        clock.advance(11)  # the listing is now older than 60s
        assert (await opened.current_versions([N("m/7")]))["m/7"] == new
        assert opened.api_calls == {"ListSecrets": 1}
        # A direct read of the current version updates what the next check answers.
        newer = admin.put_secret_value(SecretId="m/8", SecretString="x")["VersionId"]
        await opened.fetch(N("m/8"))
        assert (await opened.current_versions([N("m/8")]))["m/8"] == newer
        assert opened.api_calls == {"ListSecrets": 1, "GetSecretValue": 1}
    finally:
        await opened.aclose()


async def test_concurrent_checks_share_one_listing(moto: MotoServer, admin: Any) -> None:
    opened = await open_backend(
        "aws", config(moto.url, versions_max_age="60s"), max_secret_bytes=4096
    )
    try:
        for i in range(20):
            admin.create_secret(Name=f"q/{i}", SecretString="v")
        halves = [[N(f"q/{i}") for i in range(0, 10)], [N(f"q/{i}") for i in range(10, 20)]]
        answers = await asyncio.gather(*(opened.current_versions(h) for h in halves))
        assert [len(a) for a in answers] == [10, 10]
        assert opened.api_calls["ListSecrets"] == 1
    finally:
        await opened.aclose()


async def test_name_filters_pick_exact_names_among_prefix_matches(
    aws_backend: AwsBackend, admin: Any
) -> None:
    for i in range(30):
        admin.create_secret(Name=f"p/{i}", SecretString="v")
    for i in range(150):
        admin.create_secret(Name=f"p/1{i}x", SecretString="v")  # all match the filter "p/1"
    wanted = [N("p/1"), N("p/2")]
    versions = await aws_backend.current_versions(wanted)
    assert set(versions) == {"p/1", "p/2"}


async def test_values_over_the_size_cap_are_refused(aws_backend: AwsBackend, admin: Any) -> None:
    admin.create_secret(Name="big", SecretString="A" * 5000)
    with pytest.raises(BadBackendAnswer, match="max_secret_bytes") as caught:
        await aws_backend.fetch(N("big"))
    assert "AAAA" not in str(caught.value)
    assert isinstance((await aws_backend.fetch_many([N("big")]))[N("big")], BadBackendAnswer)


async def test_the_arn_comes_with_the_answer_and_maps_back_through_the_router(
    aws_backend: AwsBackend, admin: Any
) -> None:
    made = admin.create_secret(Name="db/app", SecretString="v")
    router = Router({"aws": aws_backend}, {"aws": "aws/"})
    fetched = await aws_backend.fetch(N("db/app"))
    assert fetched.arn == made["ARN"]
    assert router.name_for_arn(made["ARN"]) == "aws/db/app"  # the mount added
    assert router.name_for_arn(made["ARN"].replace(REGION, "us-west-2")) is None


async def test_no_credentials_is_an_auth_error(
    moto: MotoServer, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin.create_secret(Name="db/app", SecretString="v")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    opened = await open_backend("aws", config(moto.url), max_secret_bytes=4096)
    try:
        with pytest.raises(BackendAuthError, match="credentials"):
            await opened.fetch(N("db/app"))
    finally:
        await opened.aclose()


async def test_no_region_is_a_config_error(
    moto: MotoServer, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(ConfigError, match="'aws'"):
        await open_backend(
            "aws",
            AwsBackendConfig(type="aws", endpoint_url=moto.url),
            max_secret_bytes=4096,
        )


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"endpoint_url": "not a url"}, "endpoint"),
        ({"endpoint_url": "ftp://127.0.0.1/"}, "endpoint_url"),
        ({"endpoint_url": "http://"}, "endpoint"),
        ({"profile": "no-such-profile"}, "profile"),
    ],
)
async def test_bad_client_settings_are_config_errors(
    admin: Any, extra: dict[str, str], problem: str
) -> None:
    settings = AwsBackendConfig(type="aws", region=REGION, **extra)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=problem):
        await open_backend("aws", settings, max_secret_bytes=4096)


async def test_a_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if `pip install secretd` without [aws]: the import of aiobotocore fails.
    for module in ("aiobotocore", "aiobotocore.config", "aiobotocore.session"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError, match=r"install secretd\[aws\]"):
        await open_backend("aws", AwsBackendConfig(type="aws"), max_secret_bytes=4096)


async def test_aclose_is_idempotent(moto: MotoServer, admin: Any) -> None:
    opened = await open_backend("aws", config(moto.url), max_secret_bytes=4096)
    await opened.aclose()
    await opened.aclose()


def test_binary_round_trip_helper_matches_aws_base64() -> None:
    # What the compat endpoint sends for a SecretBinary is plain base64 of the bytes.
    assert base64.b64encode(b"\x00\xff").decode() == "AP8="
