"""The AWS backend runs the shared backend contract against a real moto_server.

Values that are UTF-8 are written as SecretString, others as SecretBinary, so
both of AWS's value kinds go through every contract test that applies. A
pending version is PutSecretValue with AWSPENDING; promotion is
UpdateSecretVersionStage (moto's RotateSecret needs Docker); deletion schedules
the secret for deletion with a recovery window, the case that must read as
not found although AWS still holds it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from secretd.config.schema import AwsBackendConfig, BackendConfig
from tests.contract.contract import BackendContract, CapableSeeder, Seeder
from tests.servers.moto_server import REGION, TEST_ENV, MotoServer, moto

pytestmark = pytest.mark.aws

__all__ = ["moto"]  # shared fixtures


class MotoSeeder(CapableSeeder):
    """Writes versions with boto3, as an operator's tooling would."""

    def __init__(self, admin: Any) -> None:
        self._admin = admin
        self._made: set[str] = set()

    async def put(self, name: str, value: bytes, *, pending: bool = False) -> str:
        return await asyncio.to_thread(self._put, name, value, pending)

    def _put(self, name: str, value: bytes, pending: bool) -> str:
        try:
            payload: dict[str, Any] = {"SecretString": value.decode("utf-8")}
        except UnicodeDecodeError:
            payload = {"SecretBinary": value}
        if name not in self._made:
            assert not pending, "the contract stages pending versions on existing secrets"
            self._made.add(name)
            return str(self._admin.create_secret(Name=name, **payload)["VersionId"])
        if pending:
            payload["VersionStages"] = ["AWSPENDING"]
        return str(self._admin.put_secret_value(SecretId=name, **payload)["VersionId"])

    async def promote(self, name: str, version_id: str) -> None:
        await asyncio.to_thread(self._promote, name, version_id)

    def _promote(self, name: str, version_id: str) -> None:
        stages = self._admin.describe_secret(SecretId=name)["VersionIdsToStages"]
        current = next(vid for vid, labels in stages.items() if "AWSCURRENT" in labels)
        self._admin.update_secret_version_stage(
            SecretId=name,
            VersionStage="AWSCURRENT",
            MoveToVersionId=version_id,
            RemoveFromVersionId=current,
        )
        self._admin.update_secret_version_stage(
            SecretId=name, VersionStage="AWSPENDING", RemoveFromVersionId=version_id
        )

    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self._admin.delete_secret, SecretId=name, RecoveryWindowInDays=7)


class TestAwsContract(BackendContract):
    @pytest.fixture
    def admin(self, moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
        for key, value in TEST_ENV.items():
            monkeypatch.setenv(key, value)
        return moto.admin_client()

    @pytest.fixture
    def backend_config(self, moto: MotoServer, admin: Any) -> BackendConfig:
        del admin  # the test credentials are in the environment first
        return AwsBackendConfig(type="aws", region=REGION, endpoint_url=moto.url)

    @pytest.fixture
    def seeder(self, admin: Any) -> Seeder:
        return MotoSeeder(admin)
