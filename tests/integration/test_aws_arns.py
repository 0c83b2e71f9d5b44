"""The AWS backend against the fake endpoint (tests/fakes/hostile_aws.py): an
answer's ARN must name our region, our account and the secret asked for; a
truncated answer is reported as truncated, not as "another secret"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from secretd.backends.aws import AwsBackend, open_backend
from secretd.config.schema import AwsBackendConfig
from secretd.errors import BadBackendAnswer
from secretd.model import Fetched, SecretName
from tests.e2e.agent_proc import AgentProcess, running_agent, short_tmp
from tests.fakes.hostile_aws import ACCOUNT, REGION, HostileAws
from tests.servers.moto_server import TEST_ENV

CANARY = "canary-arn-77f1"


@pytest.fixture
async def aws(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[HostileAws]:
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    async with HostileAws() as fake:
        fake.put("app/db", CANARY)
        fake.put("app/other", "other")
        yield fake


async def backend_for(aws: HostileAws, **extra: str) -> AwsBackend:
    raw = {"type": "aws", "region": REGION, "endpoint_url": aws.url, "timeout": "5s", **extra}
    return await open_backend("aws", AwsBackendConfig.model_validate(raw), max_secret_bytes=4096)


@pytest.fixture
async def backend(aws: HostileAws) -> AsyncIterator[AwsBackend]:
    opened = await backend_for(aws)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("wrong_region", "region"),
        ("wrong_arn_name", "another secret"),
    ],
)
async def test_an_arn_for_another_region_or_secret_is_refused(
    aws: HostileAws, backend: AwsBackend, case: str, says: str
) -> None:
    aws.misbehave(case)
    with pytest.raises(BadBackendAnswer, match=says) as caught:
        await backend.fetch(SecretName("app/db"))
    assert CANARY not in str(caught.value)
    assert backend.arn_for(SecretName("app/db")) is None  # never remembered, never echoed
    outcome = (await backend.fetch_many([SecretName("app/db")]))[SecretName("app/db")]
    assert isinstance(outcome, BadBackendAnswer)


async def test_the_account_is_learnt_from_the_first_answer(
    aws: HostileAws, backend: AwsBackend
) -> None:
    first = await backend.fetch(SecretName("app/db"))
    assert isinstance(first, Fetched)
    assert f":{ACCOUNT}:" in (backend.arn_for(SecretName("app/db")) or "")
    aws.misbehave("wrong_account")
    with pytest.raises(BadBackendAnswer, match="account"):
        await backend.fetch(SecretName("app/other"))
    assert backend.arn_for(SecretName("app/other")) is None


async def test_a_configured_account_is_checked_from_the_first_answer(aws: HostileAws) -> None:
    opened = await backend_for(aws, account_id="210987654321")
    try:
        with pytest.raises(BadBackendAnswer, match="account"):
            await opened.fetch(SecretName("app/db"))
    finally:
        await opened.aclose()


async def test_a_truncated_answer_says_so(aws: HostileAws, backend: AwsBackend) -> None:
    aws.misbehave("truncated")
    with pytest.raises(BadBackendAnswer, match="truncated") as caught:
        await backend.fetch(SecretName("app/db"))
    assert "another secret" not in str(caught.value)
    assert CANARY not in str(caught.value)


# -- an ARN passed back to the AWS-compatible endpoint, backend under a mount ----


@pytest.fixture
async def mounted(aws: HostileAws) -> AsyncIterator[AgentProcess]:
    """The real agent: the fake AWS mounted at `aws/`; root may read aws/app/* only."""
    aws.put("private/x", "not for you")
    with short_tmp("sdarn") as directory:
        config = (
            f'[agent]\nsocket = "{directory}/s.sock"\nstate_dir = "{directory}/state"\n'
            'log_format = "json"\n\n'
            f'[backends.aws]\ntype = "aws"\nmount = "aws/"\nregion = "{REGION}"\n'
            f'endpoint_url = "{aws.url}"\n\n'
            '[[allow]]\nsecrets = ["aws/app/*"]\nuids = [0]\n'
        )
        async with running_agent(directory, config, env=TEST_ENV) as agent:
            yield agent


async def aws_get(agent: AgentProcess, secret_id: str) -> tuple[int, dict[str, Any]]:
    async with (
        agent.session() as session,
        session.get("/secretsmanager/get", params={"secretId": secret_id}) as response,
    ):
        return response.status, orjson.loads(await response.read())


async def test_the_arn_it_returns_can_be_passed_back_under_a_mount(
    aws: HostileAws, mounted: AgentProcess
) -> None:
    status, first = await aws_get(mounted, "aws/app/db")
    assert status == 200, first
    assert first["ARN"] == aws.secrets["app/db"].arn and first["Name"] == "aws/app/db"
    status, again = await aws_get(mounted, first["ARN"])
    assert status == 200, again
    assert again == first


async def test_an_arn_is_checked_against_the_rules_for_the_name_it_maps_to(
    aws: HostileAws, mounted: AgentProcess
) -> None:
    status, body = await aws_get(mounted, aws.secrets["private/x"].arn)
    assert (status, body["__type"]) == (400, "AccessDeniedException"), body
    assert "aws/private/x" in body["message"]
    assert aws.hits["GetSecretValue"] == 0  # refused before any backend was asked


@pytest.mark.parametrize("where", ["account", "region"])
async def test_an_arn_of_another_account_or_region_is_not_found(
    aws: HostileAws, mounted: AgentProcess, where: str
) -> None:
    foreign = (
        aws.arn("app/db", account="999999999999")
        if where == "account"
        else aws.arn("app/db", region="eu-north-1")
    )
    await aws_get(mounted, "aws/app/db")  # the account is learnt from this answer
    status, body = await aws_get(mounted, foreign)
    assert (status, body["__type"]) == (400, "ResourceNotFoundException"), body
