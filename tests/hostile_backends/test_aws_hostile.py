"""The AWS backend against a fake Secrets Manager endpoint (tests/fakes/hostile_aws.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from secretd.backends.aws import THROTTLE_ATTEMPTS, AwsBackend, open_backend
from secretd.config.schema import AwsBackendConfig
from secretd.errors import BackendError
from secretd.model import SecretName
from tests.fakes.hostile_aws import REDIRECTED, REGION, HostileAws
from tests.hostile_backends.cases import MAX_SECRET_BYTES, HostileBackendCases, HostileRig, Storm
from tests.servers.moto_server import TEST_ENV

OLD = "canary-aws-old-91c0"
GOOD = "canary-aws-good-3d7e"
STORM_READS = 3


class AwsRig:
    name = SecretName("app/db")
    good = GOOD.encode()
    canaries = (OLD, GOOD, REDIRECTED)
    timeout = 2.0

    def __init__(self, fake: HostileAws, backend: AwsBackend) -> None:
        self.fake = fake
        self.backend = backend

    def supports(self, case: str) -> bool:
        return True

    async def misbehave(self, case: str) -> None:
        self.fake.misbehave(case, only=self.name)

    async def behave(self) -> None:
        self.fake.misbehave(None)

    async def storm(self) -> Storm:
        """Every call throttled: each read gives up after THROTTLE_ATTEMPTS."""
        self.fake.misbehave("storm")
        before = sum(self.fake.hits.values())
        error = None
        for _ in range(STORM_READS):
            with pytest.raises(BackendError) as caught:
                await self.backend.fetch(self.name)
            error = caught.value
        work = sum(self.fake.hits.values()) - before
        # A refused batch is followed by one direct read: at most two calls' retries a read.
        return Storm(work, STORM_READS * 2 * THROTTLE_ATTEMPTS, error)


class TestAwsHostile(HostileBackendCases):
    @pytest.fixture
    async def rig(self, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[HostileRig]:
        for key, value in TEST_ENV.items():
            monkeypatch.setenv(key, value)
        async with HostileAws() as fake:
            fake.put(str(AwsRig.name), OLD)
            fake.put(str(AwsRig.name), GOOD)
            raw = {"type": "aws", "region": REGION, "endpoint_url": fake.url, "timeout": "2s"}
            config = AwsBackendConfig.model_validate(raw)
            backend = await open_backend("aws", config, max_secret_bytes=MAX_SECRET_BYTES)
            try:
                yield AwsRig(fake, backend)
            finally:
                await backend.aclose()


async def test_a_redirect_is_not_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real Secrets Manager never redirects: a 307 is refused where it stands,
    and the signed request is not sent on to where it points."""
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    async with HostileAws() as fake:
        fake.put(str(AwsRig.name), GOOD)
        raw = {"type": "aws", "region": REGION, "endpoint_url": fake.url, "timeout": "2s"}
        config = AwsBackendConfig.model_validate(raw)
        backend = await open_backend("aws", config, max_secret_bytes=MAX_SECRET_BYTES)
        try:
            fake.misbehave("redirect", only=AwsRig.name)
            with pytest.raises(BackendError) as caught:
                await backend.fetch(AwsRig.name)
            assert "redirect" in str(caught.value)
            assert REDIRECTED not in str(caught.value)
            assert fake.hits["elsewhere"] == 0
        finally:
            await backend.aclose()
