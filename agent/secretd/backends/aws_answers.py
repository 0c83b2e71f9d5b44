"""Checks and converts AWS Secrets Manager answers into secretd's model.

An answer is untrusted input: every field is type-checked, the secret's Name
and VersionId must be the ones asked for, the requested stage must be on the
version, and the value must fit `limits.max_secret_bytes`. Anything else is a
BadBackendAnswer naming the secret, never echoing a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from secretd.aws_stages import AWS_CURRENT, from_aws_labels, to_aws_stage
from secretd.errors import BadBackendAnswer, InvalidName
from secretd.model import Fetched, SecretName, SecretValue, Version

MAX_VERSION_ID = 256
MAX_LABEL = 256
MAX_LABELS = 64


@dataclass(frozen=True, slots=True)
class Asked:
    """What a read asked AWS for, to check its answer against."""

    name: SecretName
    version_id: str | None = None
    stage: str | None = None

    @property
    def label(self) -> str:
        """The AWS staging label the answer must carry when no version id was given."""
        return to_aws_stage(self.stage) if self.stage is not None else AWS_CURRENT


def parse_secret_value(
    answer: object, asked: Asked, *, backend: str, max_secret_bytes: int
) -> tuple[Fetched, str | None]:
    """A GetSecretValue (or BatchGetSecretValue item) answer -> (Fetched, ARN)."""
    where = f"aws backend {backend!r}: secret {asked.name!r}"
    if not isinstance(answer, Mapping):
        raise BadBackendAnswer(f"{where}: the answer is not an object")
    if not isinstance(answer.get("Name"), str):
        raise BadBackendAnswer(f"{where}: the answer has no Name (truncated or malformed)")
    if answer.get("Name") != asked.name:
        raise BadBackendAnswer(f"{where}: the answer is for another secret")
    version_id = check_version_id(answer.get("VersionId"), where)
    if asked.version_id is not None and version_id != asked.version_id:
        raise BadBackendAnswer(f"{where}: the answer is for another version")
    labels = check_labels(answer.get("VersionStages", []), where)
    if asked.version_id is None and asked.label not in labels:
        raise BadBackendAnswer(f"{where}: the answer lacks stage {asked.label}")
    value = _value(answer, where, max_secret_bytes)
    version = Version(
        version_id=version_id,
        stages=from_aws_labels(labels),
        created_at=_created(answer.get("CreatedDate"), where),
        value=value,
    )
    arn = answer.get("ARN")
    return Fetched(name=asked.name, version=version), arn if isinstance(arn, str) else None


def check_version_id(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not 1 <= len(raw) <= MAX_VERSION_ID or not raw.isprintable():
        raise BadBackendAnswer(f"{where}: the answer has no usable VersionId")
    return raw


def check_labels(raw: object, where: str) -> list[str]:
    if not isinstance(raw, list) or len(raw) > MAX_LABELS:
        raise BadBackendAnswer(f"{where}: VersionStages is not a list of labels")
    for label in raw:
        if not isinstance(label, str) or not 1 <= len(label) <= MAX_LABEL:
            raise BadBackendAnswer(f"{where}: VersionStages holds a malformed label")
    return list(raw)


def _value(answer: Mapping[str, Any], where: str, max_secret_bytes: int) -> SecretValue:
    text, blob = answer.get("SecretString"), answer.get("SecretBinary")
    if text is not None and blob is not None:
        raise BadBackendAnswer(f"{where}: the answer has both SecretString and SecretBinary")
    if isinstance(text, str):
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escaped in the JSON
            raise BadBackendAnswer(f"{where}: SecretString is not valid Unicode") from None
    elif isinstance(blob, bytes | bytearray):
        data = bytes(blob)
    else:
        raise BadBackendAnswer(f"{where}: the answer has no SecretString or SecretBinary")
    if len(data) > max_secret_bytes:
        raise BadBackendAnswer(
            f"{where}: the value is {len(data)} bytes, over limits.max_secret_bytes "
            f"({max_secret_bytes})"
        )
    return SecretValue(data)


def _created(raw: object, where: str) -> datetime:
    if isinstance(raw, datetime):
        return raw.astimezone(UTC) if raw.tzinfo is not None else raw.replace(tzinfo=UTC)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        try:
            return datetime.fromtimestamp(raw, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    raise BadBackendAnswer(f"{where}: the answer has no usable CreatedDate")


def current_version_of(entry: object, *, backend: str) -> tuple[SecretName, str, str | None] | None:
    """A ListSecrets / DescribeSecret entry -> (name, current version id, ARN).

    None for an entry to ignore: deleted or scheduled for deletion, no current
    version, or a name secretd could not serve anyway.
    """
    if not isinstance(entry, Mapping):
        raise BadBackendAnswer(f"aws backend {backend!r}: a listing entry is not an object")
    name = entry.get("Name")
    try:
        secret = SecretName(name) if isinstance(name, str) else None
    except InvalidName:
        secret = None
    if secret is None or entry.get("DeletedDate") is not None:
        return None
    where = f"aws backend {backend!r}: secret {secret!r}"
    stages = entry.get("SecretVersionsToStages", entry.get("VersionIdsToStages"))
    if not isinstance(stages, Mapping):
        return None
    arn = entry.get("ARN")
    for version_id, labels in stages.items():
        if AWS_CURRENT in check_labels(labels, where):
            return (
                secret,
                check_version_id(version_id, where),
                arn if isinstance(arn, str) else None,
            )
    return None
