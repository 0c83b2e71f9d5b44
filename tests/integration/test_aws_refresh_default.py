"""An AWS backend reuses a bulk listing for version checks no longer than the
cache's refresh_interval unless told otherwise (docs/aws.md): with
`refresh_interval = "2s"` a rotation shows at the next check, not a minute
later. A real moto server, the backend opened from a parsed config, a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from secretd.backends.aws import open_backend
from secretd.config import AwsBackendConfig
from secretd.config.load import parse_config
from secretd.model import SecretName
from tests.fakes.fake_clock import FakeClock
from tests.servers.moto_server import REGION, MotoServer, admin, moto

pytestmark = pytest.mark.aws

__all__ = ["admin", "moto"]  # shared fixtures


def aws_config(url: str, cache: str = "", backend: str = "") -> AwsBackendConfig:
    config = parse_config(
        f"[cache]\n{cache}\n"
        f'[backends.aws]\ntype = "aws"\nregion = "{REGION}"\nendpoint_url = "{url}"\n{backend}'
    )
    section = config.backends["aws"]
    assert isinstance(section, AwsBackendConfig)
    return section


def test_the_default_follows_refresh_interval(moto: MotoServer) -> None:
    assert aws_config(moto.url, 'refresh_interval = "2s"').versions_max_age == 2.0
    assert aws_config(moto.url).versions_max_age == 300.0  # the refresh_interval default
    explicit = aws_config(moto.url, 'refresh_interval = "2s"', 'versions_max_age = "1m"\n')
    assert explicit.versions_max_age == 60.0


async def test_a_rotation_shows_at_the_first_check_after_refresh_interval(
    moto: MotoServer, admin: Any
) -> None:
    clock = FakeClock()
    section = aws_config(moto.url, 'refresh_interval = "2s"')
    backend = await open_backend("aws", section, max_secret_bytes=4096, clock=clock)
    try:
        old = admin.create_secret(Name="rot/app", SecretString="v1")["VersionId"]
        name = SecretName("rot/app")
        assert (await backend.current_versions([name]))[name] == old
        new = admin.put_secret_value(SecretId="rot/app", SecretString="v2")["VersionId"]
        clock.advance(2.5)  # one refresh interval later, not sixty seconds
        assert (await backend.current_versions([name]))[name] == new
    finally:
        await backend.aclose()
