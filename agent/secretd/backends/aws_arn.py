"""Secrets Manager ARNs: parsed, checked against the backend, mapped back to names.

    arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX

(XXXXXX: six random characters AWS appends to the name.) An answer's ARN is
untrusted like the rest of it: before it is remembered, and so before the
AWS-compatible endpoint echoes it, `ArnCheck.check` requires the backend's
region, the secret's own name, and the backend's account: the configured
`account_id`, else the account of the first ARN that passed (an endpoint that
starts answering for another account is then caught). `name_of` maps an ARN a
program passes back as `secretId` to the name the backend serves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from secretd.errors import BadBackendAnswer, InvalidName
from secretd.model import SecretName

_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):secretsmanager:(?P<region>[a-z0-9-]+):"
    r"(?P<account>\d{12}):secret:(?P<name>.+)-(?P<suffix>[A-Za-z0-9]{6})"
)
MAX_ARN = 2048


@dataclass(frozen=True, slots=True)
class Arn:
    """The parts of a Secrets Manager secret ARN."""

    partition: str
    region: str
    account: str
    name: str


def parse_arn(text: object) -> Arn | None:
    """The parts of `text`, or None when it is not a Secrets Manager secret ARN."""
    if not isinstance(text, str) or len(text) > MAX_ARN:
        return None
    found = _ARN.fullmatch(text)
    if found is None:
        return None
    return Arn(found["partition"], found["region"], found["account"], found["name"])


class ArnCheck:
    """The region(s) and account one backend's ARNs must carry; see the module docstring.
    `region` may list several regions (a backend with replica regions)."""

    def __init__(self, *, region: str | Sequence[str] | None, account: str | None = None) -> None:
        if isinstance(region, str):
            region = [region]
        self._regions = frozenset(region) if region is not None else None
        self._region = ", ".join(sorted(self._regions)) if self._regions else None
        self._account = account

    @property
    def account(self) -> str | None:
        """The configured or learnt account (None until the first good ARN)."""
        return self._account

    def check(self, arn: object, name: SecretName, where: str) -> str | None:
        """`arn` when it is the ARN of `name` in our region and account (None when
        the answer has none); BadBackendAnswer otherwise."""
        if arn is None:
            return None
        parsed = parse_arn(arn)
        if parsed is None:
            raise BadBackendAnswer(f"{where}: the answer's ARN is not a Secrets Manager ARN")
        if self._regions is not None and parsed.region not in self._regions:
            raise BadBackendAnswer(
                f"{where}: the answer's ARN is in region {parsed.region}, not {self._region}"
            )
        if parsed.name != name:
            raise BadBackendAnswer(f"{where}: the answer's ARN names another secret")
        if self._account is not None and parsed.account != self._account:
            raise BadBackendAnswer(
                f"{where}: the answer's ARN is for account {parsed.account}, not {self._account}"
            )
        self._account = parsed.account
        assert isinstance(arn, str)
        return arn

    def name_of(self, arn: str) -> SecretName | None:
        """The name an ARN in our region and account refers to (None: not ours)."""
        parsed = parse_arn(arn)
        if parsed is None:
            return None
        if self._regions is not None and parsed.region not in self._regions:
            return None
        if self._account is not None and parsed.account != self._account:
            return None
        try:
            return SecretName(parsed.name)
        except InvalidName:
            return None
