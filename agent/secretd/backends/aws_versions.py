"""Cheap change detection for AWS Secrets Manager: current version ids in bulk.

ListSecrets answers up to 100 secrets per call, each with its
SecretVersionsToStages, and leaves out secrets scheduled for deletion. Two ways
to cover N declared names with it:

- the whole account, 100 secrets a page: ceil(secrets in account / 100) calls;
- a `name` filter of up to 10 names (a prefix match; exact names are picked
  out of the answer): ceil(N / 10) calls, more when a name is the prefix of
  many others.

The lister remembers how many pages the whole account took and uses whichever
is cheaper. While that is unknown it tries the whole account within the budget
the filtered way would cost, stopping as soon as every wanted name was seen,
and falls back to filters for the rest. A filter whose answer runs past
MAX_FILTER_PAGES pages falls back to one DescribeSecret per missing name.

For 1,000 declared names in an account of 1,000 secrets that is 10 calls per
refresh instead of 1,000 DescribeSecret calls. ListSecrets is eventually
consistent on AWS: a rotation may show up one refresh late.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from secretd.backends.aws_answers import current_version_of
from secretd.errors import BackendNotFound
from secretd.model import SecretName

PAGE_SIZE = 100
FILTER_VALUES = 10
MAX_FILTER_PAGES = 10
MAX_ACCOUNT_PAGES = 10_000


class AwsCall(Protocol):
    """One Secrets Manager operation, with timeouts, throttling and error mapping done."""

    async def __call__(
        self, op: str, where: str, *, version_asked: bool = False, **params: Any
    ) -> dict[str, Any]: ...


class VersionLister:
    """Current version ids for many names in as few ListSecrets calls as it can."""

    def __init__(
        self, call: AwsCall, *, backend: str, remember_arn: Callable[[SecretName, str], None]
    ) -> None:
        self._call = call
        self._backend = backend
        self._remember_arn = remember_arn
        self._account_pages: int | None = None  # pages the whole account took; None: unknown

    async def current_versions(self, names: Iterable[SecretName]) -> dict[SecretName, str]:
        wanted = set(names)
        if not wanted:
            return {}
        filtered_cost = math.ceil(len(wanted) / FILTER_VALUES)
        found: dict[SecretName, str] = {}
        account_cheaper = self._account_pages is None or self._account_pages <= filtered_cost
        if account_cheaper and await self._list_account(wanted, found, budget=filtered_cost):
            return found
        rest = sorted(wanted.difference(found))
        chunks = [rest[i : i + FILTER_VALUES] for i in range(0, len(rest), FILTER_VALUES)]
        async with asyncio.TaskGroup() as group:
            for chunk in chunks:
                group.create_task(self._list_filtered(chunk, found))
        return found

    async def _list_account(
        self, wanted: set[SecretName], found: dict[SecretName, str], *, budget: int
    ) -> bool:
        """List the whole account within `budget` pages; True when that settled every name."""
        token: str | None = None
        for pages in range(1, max(budget, 1) + 1):
            token = await self._page(None, token, wanted, found)
            if token is None:
                self._account_pages = pages
                return True
            if wanted.issubset(found):
                return True  # the listing's remainder cannot matter; its length stays unknown
        self._account_pages = min(budget + 1, MAX_ACCOUNT_PAGES)
        return False

    async def _list_filtered(
        self, chunk: Sequence[SecretName], found: dict[SecretName, str]
    ) -> None:
        wanted = set(chunk)
        filters = [{"Key": "name", "Values": list(chunk)}]
        token: str | None = None
        for _ in range(MAX_FILTER_PAGES):
            token = await self._page(filters, token, wanted, found)
            if token is None or wanted.issubset(found):
                return
        for name in wanted.difference(found):
            await self._describe(name, found)

    async def _page(
        self,
        filters: list[dict[str, Any]] | None,
        token: str | None,
        wanted: set[SecretName],
        found: dict[SecretName, str],
    ) -> str | None:
        params: dict[str, Any] = {"MaxResults": PAGE_SIZE}
        if filters is not None:
            params["Filters"] = filters
        if token is not None:
            params["NextToken"] = token
        answer = await self._call("list_secrets", f"aws backend {self._backend!r}", **params)
        entries = answer.get("SecretList", [])
        if not isinstance(entries, list):
            entries = []
        for entry in entries:
            self._take(entry, wanted, found)
        next_token = answer.get("NextToken")
        return next_token if isinstance(next_token, str) and next_token else None

    async def _describe(self, name: SecretName, found: dict[SecretName, str]) -> None:
        where = f"aws backend {self._backend!r}: secret {name!r}"
        try:
            answer = await self._call("describe_secret", where, SecretId=name)
        except BackendNotFound:
            return
        self._take(answer, {name}, found)

    def _take(self, entry: object, wanted: set[SecretName], found: dict[SecretName, str]) -> None:
        current = current_version_of(entry, backend=self._backend)
        if current is None:
            return
        name, version_id, arn = current
        if name in wanted:
            found[name] = version_id
            if arn is not None:
                self._remember_arn(name, arn)
