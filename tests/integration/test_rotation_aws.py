"""Rotation of AWS Secrets Manager secrets against a real moto_server
(backends/aws_write.py): the rotation token is the ClientRequestToken and the
version id, the pending value carries AWSPENDING, finishing moves AWSCURRENT
(AWSPREVIOUS follows), and every label move is a check-and-set, so two hosts
cannot both rotate."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from secretd.backends.aws import AwsBackend
from secretd.backends.aws_write import AwsStager
from secretd.clock import SystemClock
from secretd.model import SecretName
from secretd.rotation.engine import Rotation
from secretd.rotation.errors import RotationError
from secretd.rotation.journal import Journal
from secretd.rotation.state import StateDir
from secretd.rotation.target import BackendTarget
from secretd_client import AsyncClient
from tests.e2e.agent_proc import running_agent, secretd, short_tmp
from tests.fakes.rotation_target import (
    CountingMetrics,
    FakeService,
    ListAudit,
    RecordingRotator,
    backend_rotation,
    start_blocked,
)
from tests.servers.moto_server import REGION, TEST_ENV, MotoServer, admin, aws_backend, moto

pytestmark = pytest.mark.aws

__all__ = ["admin", "aws_backend", "moto"]


def labels(admin: Any, name: str) -> dict[str, list[str]]:
    stages: dict[str, list[str]] = admin.describe_secret(SecretId=name)["VersionIdsToStages"]
    return {vid: sorted(s) for vid, s in stages.items()}


def current_text(admin: Any, name: str) -> str:
    # Asked by stage: moto answers a stale default after UpdateSecretVersionStage.
    answer = admin.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")
    return str(answer["SecretString"])


def holder(admin: Any, name: str, label: str) -> str | None:
    return next((v for v, s in labels(admin, name).items() if label in s), None)


async def test_awspending_then_awscurrent_with_the_token_as_version(
    aws_backend: AwsBackend, admin: Any, tmp_path: Path
) -> None:
    first = admin.create_secret(Name="rot/a", SecretString="v0")["VersionId"]
    rotator = RecordingRotator(FakeService(b"v0"))
    running, _ = await start_blocked(aws_backend, "rot/a", rotator, tmp_path / "host", at="test")

    pending = holder(admin, "rot/a", "AWSPENDING")
    assert pending is not None and pending != first
    assert holder(admin, "rot/a", "AWSCURRENT") == first  # readers still get v0
    assert (await aws_backend.fetch(SecretName("rot/a"))).version.value.reveal() == b"v0"
    served = await aws_backend.fetch(SecretName("rot/a"), stage="pending")
    assert served.version.value.reveal() == b"v1"

    rotator.unblock.set()
    outcome = await asyncio.wait_for(running, 15)
    assert outcome.version_id == pending
    assert labels(admin, "rot/a")[pending] == ["AWSCURRENT", "AWSPENDING", "SECRETD_STAGED"]
    assert labels(admin, "rot/a")[first] == ["AWSPREVIOUS"]
    assert current_text(admin, "rot/a") == "v1"


async def test_two_hosts_cannot_both_rotate(
    aws_backend: AwsBackend, admin: Any, tmp_path: Path
) -> None:
    admin.create_secret(Name="rot/b", SecretString="v0")
    service = FakeService(b"v0")
    first = RecordingRotator(service, prefix="first-")
    second = RecordingRotator(service, prefix="second-")
    running, _ = await start_blocked(aws_backend, "rot/b", first, tmp_path / "a", at="set")
    host_b, _ = backend_rotation(aws_backend, "rot/b", second, tmp_path / "b")
    outcome_b = await asyncio.wait_for(host_b.run(), 15)
    assert outcome_b.resumed
    assert [value for step, value in second.calls if step == "set"] == [b"first-1"]
    first.unblock.set()
    outcome_a = await asyncio.wait_for(running, 15)
    assert outcome_a.version_id == outcome_b.version_id
    assert len(labels(admin, "rot/b")) == 2  # second-1 was never put
    assert current_text(admin, "rot/b") == "first-1"


class RacedStager(AwsStager):
    """The real stager, with "another host" acting just before our AWSPENDING
    claim: after we described the secret and put our version."""

    def __init__(self, backend: AwsBackend, other_host: Callable[[], None]) -> None:
        super().__init__(backend)
        self._other_host: Callable[[], None] | None = other_host

    async def _move(
        self, name: SecretName, label: str, *, to: str | None, away_from: str | None
    ) -> None:
        if label == "AWSPENDING" and self._other_host is not None:
            other, self._other_host = self._other_host, None
            await asyncio.to_thread(other)
        await super()._move(name, label, to=to, away_from=away_from)


async def test_the_pending_label_is_claimed_by_check_and_set(
    aws_backend: AwsBackend, admin: Any, tmp_path: Path
) -> None:
    """Both hosts saw no rotation and both put a version: only the first move
    of AWSPENDING away from the version holding it succeeds; the loser resumes
    the winner's rotation instead of running its own."""
    first = admin.create_secret(Name="rot/c", SecretString="v0")["VersionId"]
    admin.update_secret_version_stage(
        SecretId="rot/c", VersionStage="AWSPENDING", MoveToVersionId=first
    )
    theirs: list[str] = []

    def other_host() -> None:
        vid = admin.put_secret_value(
            SecretId="rot/c", SecretString="theirs", VersionStages=["OTHER_HOST"]
        )["VersionId"]
        admin.update_secret_version_stage(
            SecretId="rot/c",
            VersionStage="AWSPENDING",
            MoveToVersionId=vid,
            RemoveFromVersionId=first,
        )
        theirs.append(vid)

    rotator = RecordingRotator(FakeService(b"v0"))
    rotation = Rotation(
        SecretName("rot/c"),
        BackendTarget(aws_backend, RacedStager(aws_backend, other_host), SecretName("rot/c")),
        rotator,
        state=StateDir(tmp_path / "host"),
        journal=Journal(ListAudit(), CountingMetrics()),
        clock=SystemClock(),
        timeout=30.0,
    )
    outcome = await rotation.run()
    assert outcome.resumed and outcome.version_id == theirs[0]
    assert [value for step, value in rotator.calls if step == "set"] == [b"theirs"]
    assert current_text(admin, "rot/c") == "theirs"
    ours = [v for v, s in labels(admin, "rot/c").items() if s == ["SECRETD_STAGED"]]
    assert len(ours) == 1  # our version was put, but never pending nor current


async def test_a_new_current_during_the_rotation_is_not_overwritten(
    aws_backend: AwsBackend, admin: Any, tmp_path: Path
) -> None:
    admin.create_secret(Name="rot/d", SecretString="v0")
    rotator = RecordingRotator(FakeService(b"v0"))
    running, _ = await start_blocked(aws_backend, "rot/d", rotator, tmp_path / "host", at="test")
    admin.put_secret_value(SecretId="rot/d", SecretString="from-the-operator")
    rotator.unblock.set()
    with pytest.raises(RotationError, match="at step finish"):
        await asyncio.wait_for(running, 15)
    assert current_text(admin, "rot/d") == "from-the-operator"


async def test_the_agent_rotates_an_aws_secret_and_serves_it_at_once(
    moto: MotoServer, admin: Any
) -> None:
    """Through the agent: refresh_interval is an hour, yet the new value is
    served as soon as `secretd rotate` returns."""
    admin.create_secret(Name="svc/hmac", SecretString='{"key": "old", "alg": "sha256"}')
    with short_tmp("sdawr") as directory:
        config = (
            f'[agent]\nsocket = "{directory}/s.sock"\nstate_dir = "{directory}/state"\n\n'
            '[cache]\nrefresh_interval = "1h"\n\n'
            f'[backends.aws]\ntype = "aws"\nregion = "{REGION}"\nendpoint_url = "{moto.url}"\n\n'
            '[[secret]]\nname = "svc/hmac"\n\n'
            '[[allow]]\nsecrets = ["svc/*"]\nuids = [0]\n\n'
            '[[rotation]]\nsecret = "svc/hmac"\nrotator = "random"\nevery = "30d"\nfield = "key"\n'
        )
        async with running_agent(directory, config, env=TEST_ENV) as agent:
            async with AsyncClient(str(agent.socket)) as client:
                before = await client.get("svc/hmac")
                out = await asyncio.to_thread(
                    secretd, "rotate", "svc/hmac", "--socket", str(agent.socket), "--json"
                )
                after = await client.get("svc/hmac")
            agent.stop()
    outcome = json.loads(out)
    assert after.version_id == outcome["version_id"] != before.version_id
    document = json.loads(after.as_text())
    assert document["alg"] == "sha256" and document["key"] != "old"
    assert labels(admin, "svc/hmac")[outcome["version_id"]][:2] == ["AWSCURRENT", "AWSPENDING"]
