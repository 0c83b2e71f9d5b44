"""Secrets Manager ARNs: parsing, the checks an answer's ARN must pass, and mapping back."""

from __future__ import annotations

import pytest

from secretd.backends.aws_arn import ArnCheck, parse_arn
from secretd.errors import BadBackendAnswer
from secretd.model import SecretName

GOOD = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/db-AbC123"


def test_parts_of_an_arn() -> None:
    arn = parse_arn(GOOD)
    assert arn is not None
    assert (arn.partition, arn.region, arn.account, arn.name) == (
        "aws",
        "eu-west-1",
        "123456789012",
        "app/db",
    )
    dashed = parse_arn("arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:a-b-c-xyz789")
    assert dashed is not None and dashed.name == "a-b-c"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "app/db",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:app/db",  # no suffix
        "arn:aws:s3:eu-west-1:123456789012:secret:app/db-AbC123",
        "arn:aws:secretsmanager:eu-west-1:12345:secret:app/db-AbC123",
        GOOD + "x" * 3000,
        None,
    ],
)
def test_not_arns(text: object) -> None:
    assert parse_arn(text) is None


def test_region_name_and_account_are_checked() -> None:
    check = ArnCheck(region="eu-west-1")
    name = SecretName("app/db")
    with pytest.raises(BadBackendAnswer, match="region us-east-1"):
        check.check(GOOD.replace("eu-west-1", "us-east-1"), name, "w")
    with pytest.raises(BadBackendAnswer, match="another secret"):
        check.check(GOOD, SecretName("app/dbx"), "w")
    with pytest.raises(BadBackendAnswer, match="not a Secrets Manager ARN"):
        check.check("arn:nonsense", name, "w")
    assert check.account is None  # nothing learnt from refused answers
    assert check.check(GOOD, name, "w") == GOOD
    assert check.account == "123456789012"
    with pytest.raises(BadBackendAnswer, match="account 999999999999"):
        check.check(GOOD.replace("123456789012", "999999999999"), name, "w")
    assert check.check(None, name, "w") is None  # an answer without ARN: nothing to echo


def test_mapping_an_arn_back_to_a_name() -> None:
    check = ArnCheck(region="eu-west-1", account="123456789012")
    assert check.name_of(GOOD) == "app/db"
    assert check.name_of(GOOD.replace("eu-west-1", "us-east-1")) is None
    assert check.name_of(GOOD.replace("123456789012", "999999999999")) is None
    assert (
        check.name_of("arn:aws:secretsmanager:eu-west-1:123456789012:secret:a/../b-AbC123") is None
    )
