"""The AWS Secrets Manager write side for rotation (backends/rotatable.py),
the way Secrets Manager's own rotation does it: the rotation token is the
ClientRequestToken (so it becomes the version id), the pending value carries
AWSPENDING, and finishing moves AWSCURRENT.

Every label move is a check-and-set: UpdateSecretVersionStage fails unless
`RemoveFromVersionId` names the version that holds the label now. So:

    idle      AWSPENDING sits on the current version (Secrets Manager reads
              "AWSPENDING on the AWSCURRENT version" as "no rotation under
              way"); a secret that never had it gets it there first
    stage     PutSecretValue(ClientRequestToken=token, VersionStages=
              [SECRETD_STAGED]) - idempotent for one token - then move
              AWSPENDING to it from the version seen holding it. Of two hosts
              only one can make that move; the other resumes the winner's
    promote   move AWSCURRENT to it from the current version staged against
              (AWS puts AWSPREVIOUS on the old one); AWSPENDING stays with it,
              which makes the secret idle again
    drop      move AWSPENDING back to the current version

SECRETD_STAGED only keeps the new version labelled between the two calls of
`stage` (a version without labels may be cleaned up by AWS).

The credentials need secretsmanager:DescribeSecret, GetSecretValue,
PutSecretValue and UpdateSecretVersionStage on the secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from secretd.aws_stages import AWS_CURRENT, AWS_PENDING
from secretd.backends.aws import AwsBackend
from secretd.backends.aws_errors import error_code, map_error
from secretd.backends.rotatable import Pending
from secretd.errors import BadBackendAnswer, Conflict
from secretd.model import SecretName, SecretValue

STAGED_LABEL = "SECRETD_STAGED"
_CAS_CODES = frozenset({"InvalidParameterException", "ResourceExistsException"})


class AwsStager:
    """A `Stager` over one AwsBackend's client."""

    def __init__(self, backend: AwsBackend) -> None:
        # The backend's own client, timeout, concurrency cap and error mapping.
        self._backend = backend

    async def read_pending(self, name: SecretName) -> Pending | None:
        labels = await self._labels(name)
        current, pending = _holder(labels, AWS_CURRENT), _holder(labels, AWS_PENDING)
        if pending is None or pending == current:
            return None
        fetched = await self._backend.fetch(name, version_id=pending)
        return Pending(pending, pending, fetched.version.value, current)

    async def stage_pending(self, name: SecretName, value: SecretValue, token: str) -> Pending:
        labels = await self._labels(name)
        current, holder = _holder(labels, AWS_CURRENT), _holder(labels, AWS_PENDING)
        if holder == token:
            return Pending(token, token, value, current)  # a retry of our own
        if holder is not None and holder != current:
            raise Conflict(f"aws secret {name!r}: another rotation is pending ({holder})")
        if holder is None and current is not None:
            await self._move(name, AWS_PENDING, to=current, away_from=None)
            holder = current
        params: dict[str, Any] = {
            "SecretId": name,
            "ClientRequestToken": token,
            "VersionStages": [STAGED_LABEL],
        }
        text = value.text()
        if text is not None:
            params["SecretString"] = text
        else:
            params["SecretBinary"] = value.reveal()
        await self._cas("put_secret_value", name, **params)
        await self._move(name, AWS_PENDING, to=token, away_from=holder)
        return Pending(token, token, value, current)

    async def promote_pending(self, name: SecretName, pending: Pending) -> str:
        labels = await self._labels(name)
        current = _holder(labels, AWS_CURRENT)
        if current == pending.version_id:
            return current  # promoted already
        if _holder(labels, AWS_PENDING) != pending.version_id or current is None:
            raise Conflict(f"aws secret {name!r}: version {pending.version_id} is not pending")
        if pending.base_version is not None and current != pending.base_version:
            raise Conflict(
                f"aws secret {name!r}: the current version changed since the rotation began"
            )
        await self._move(name, AWS_CURRENT, to=pending.version_id, away_from=current)
        return pending.version_id

    async def drop_pending(self, name: SecretName, pending: Pending) -> None:
        labels = await self._labels(name)
        current = _holder(labels, AWS_CURRENT)
        if _holder(labels, AWS_PENDING) == pending.version_id and current != pending.version_id:
            await self._move(name, AWS_PENDING, to=current, away_from=pending.version_id)

    async def _labels(self, name: SecretName) -> Mapping[str, list[str]]:
        where = f"aws backend {self._backend.name!r}: secret {name!r}"
        answer = await self._backend._call("describe_secret", where, SecretId=name)
        labels = answer.get("VersionIdsToStages", {})
        if not isinstance(labels, dict) or not all(isinstance(v, list) for v in labels.values()):
            raise BadBackendAnswer(f"{where}: DescribeSecret answered no version stages")
        return labels

    async def _move(
        self, name: SecretName, label: str, *, to: str | None, away_from: str | None
    ) -> None:
        params: dict[str, Any] = {"SecretId": name, "VersionStage": label}
        if to is not None:
            params["MoveToVersionId"] = to
        if away_from is not None:
            params["RemoveFromVersionId"] = away_from
        await self._cas("update_secret_version_stage", name, **params)

    async def _cas(self, op: str, name: SecretName, **params: Any) -> dict[str, Any]:
        """One call whose refusal means another writer got there first: Conflict."""
        where = f"aws backend {self._backend.name!r}: secret {name!r}: {op}"
        backend = self._backend
        try:
            async with asyncio.timeout(backend._timeout), backend._slots:
                return await backend._attempts(op, params)
        except Exception as exc:
            found = error_code(exc)
            if found is not None and found[0] in _CAS_CODES:
                raise Conflict(f"{where}: another writer changed the secret ({found[0]})") from None
            raise map_error(exc, where, version_asked=False) from None


def _holder(labels: Mapping[str, list[str]], label: str) -> str | None:
    for version_id, stages in labels.items():
        if label in stages:
            return version_id
    return None
