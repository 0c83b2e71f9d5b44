"""Stage names between secretd and AWS Secrets Manager.

secretd says `current`, `previous`, `pending`; AWS says `AWSCURRENT`,
`AWSPREVIOUS`, `AWSPENDING`. Custom labels pass through unchanged both ways,
except an AWS custom label spelled like one of ours (`current`...): passing it
through would give a secret two current versions, so it is dropped.

Pure functions, no botocore: the AWS-compatible endpoint uses them for secrets
of every backend, with or without the `secretd[aws]` extra.
"""

from __future__ import annotations

from collections.abc import Iterable

from secretd.model import CURRENT, PENDING, PREVIOUS

AWS_CURRENT = "AWSCURRENT"
AWS_PREVIOUS = "AWSPREVIOUS"
AWS_PENDING = "AWSPENDING"

_TO_AWS = {CURRENT: AWS_CURRENT, PREVIOUS: AWS_PREVIOUS, PENDING: AWS_PENDING}
_FROM_AWS = {aws: ours for ours, aws in _TO_AWS.items()}
_AWS_ORDER = (AWS_CURRENT, AWS_PENDING, AWS_PREVIOUS)


def to_aws_stage(stage: str) -> str:
    """`current` -> `AWSCURRENT`; an AWS spelling or a custom label is unchanged."""
    return _TO_AWS.get(stage, stage)


def from_aws_stage(label: str) -> str:
    """`AWSCURRENT` -> `current`; a custom label is unchanged."""
    return _FROM_AWS.get(label, label)


def from_aws_labels(labels: Iterable[str]) -> frozenset[str]:
    """AWS staging labels as secretd stages (reserved-name custom labels dropped)."""
    stages: set[str] = set()
    for label in labels:
        if label in _TO_AWS:  # an AWS custom label named "current" etc.
            continue
        stages.add(from_aws_stage(label))
    return frozenset(stages)


def to_aws_labels(stages: Iterable[str]) -> list[str]:
    """secretd stages as AWS labels: the AWS stages first, then custom labels sorted."""
    labels = {to_aws_stage(stage) for stage in stages}
    known = [label for label in _AWS_ORDER if label in labels]
    return known + sorted(labels.difference(_AWS_ORDER))
