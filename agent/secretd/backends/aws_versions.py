"""Cheap change detection for AWS Secrets Manager: current version ids in bulk.

ListSecrets answers up to 100 secrets per call, each with its
SecretVersionsToStages, and leaves out secrets scheduled for deletion. Two ways
to cover the names secretd follows with it:

- the whole account, 100 secrets a page: ceil(secrets in account / 100) calls;
- a `name` filter of up to 10 names (a prefix match; exact names are picked
  out of the answer): ceil(names / 10) calls, more when a name is the prefix of
  many others.

Every answer is remembered per name with the time it was seen, and a check
whose names were all seen within `max_age` (config `versions_max_age`) costs
no call at all. So however the cache spreads its checks over the refresh
interval (per-secret jitter makes many small batches), one listing answers
every followed name for `max_age` seconds: with 1,000 secrets in the account
that is 10 calls a minute at most, instead of one DescribeSecret per secret
per refresh.

The lister remembers how many pages the whole account took and lists it
whole when that is no dearer than filtering, compared over the same time: a
listing serves every followed name for `max_age`, while filters are paid each
time a name falls due (the cache's check period, learnt from the gaps between
checks of a name) - and at least the filters the names asked right now need
(the cache checks one agent's AWS secrets together, so they fall due at
once). While the account's size is unknown it tries within that budget,
stopping as soon as every followed name was seen. Otherwise it filters the
names that need an answer, topping the last filter up with the followed names
seen longest ago. A filter whose answer runs past MAX_FILTER_PAGES falls back
to DescribeSecret for the names still missing.

ListSecrets is eventually consistent on AWS: a rotation may show up one
listing late; the cache never moves a version backwards.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from secretd.backends.aws_answers import current_version_of
from secretd.errors import NotFound
from secretd.model import SecretName

PAGE_SIZE = 100
FILTER_VALUES = 10
MAX_FILTER_PAGES = 10
MAX_ACCOUNT_PAGES = 10_000
MAX_FOLLOWED = 100_000
FORGET_AFTER = 3600.0
MIN_PERIOD = 1.0  # names nobody asked about for this long are no longer followed


class AwsCall(Protocol):
    """One Secrets Manager operation, with timeouts, throttling and error mapping done."""

    async def __call__(
        self, op: str, where: str, *, version_asked: bool = False, **params: Any
    ) -> dict[str, Any]: ...


class VersionLister:
    """Current version ids for many names in as few ListSecrets calls as it can."""

    def __init__(
        self,
        call: AwsCall,
        *,
        backend: str,
        remember_arn: Callable[[SecretName, str], None],
        max_age: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._call = call
        self._backend = backend
        self._remember_arn = remember_arn
        self._max_age = max_age
        self._monotonic = monotonic
        self._account_pages: int | None = None  # pages the whole account took; None: unknown
        # name -> (when seen, current version id or None for "absent"), and when last asked.
        self._seen: dict[SecretName, tuple[float, str | None]] = {}
        self._asked: dict[SecretName, float] = {}
        self._listing = asyncio.Lock()
        self._period: float | None = None  # seconds between checks of one name, learnt

    async def current_versions(self, names: Iterable[SecretName]) -> dict[SecretName, str]:
        now = self._monotonic()
        wanted = set(names)
        for name in wanted:
            self._learn_period(now - self._asked.get(name, now))
            self._asked[name] = now
        self._forget(now)
        if any(not self._fresh(name, now) for name in wanted):
            async with self._listing:  # concurrent checks wait for one listing, not start two
                now = self._monotonic()
                stale = {name for name in wanted if not self._fresh(name, now)}
                if stale:
                    await self._refresh(stale, now)
        answer: dict[SecretName, str] = {}
        for name in wanted:
            version_id = self._seen.get(name, (0.0, None))[1]
            if version_id is not None:
                answer[name] = version_id
        return answer

    def note(self, name: SecretName, version_id: str | None) -> None:
        """Remember what a direct read just saw as `name`'s current version.

        The name is followed from now on: whoever read it (the cache loading a
        declared secret) will check it, and the next listing should cover it.
        """
        now = self._monotonic()
        self._asked.setdefault(name, now)
        self._seen[name] = (now, version_id)

    def _learn_period(self, gap: float) -> None:
        """Follow how often the cache checks a name (a moving average of the gaps)."""
        if gap < MIN_PERIOD:
            return
        self._period = gap if self._period is None else self._period + (gap - self._period) / 16

    def _listing_share(self) -> float:
        """max_age over the check period: the share of checks one listing can answer."""
        if self._period is None:
            return 1.0
        return min(1.0, max(self._max_age, MIN_PERIOD) / self._period)

    def _fresh(self, name: SecretName, now: float) -> bool:
        seen = self._seen.get(name)
        return seen is not None and now - seen[0] <= self._max_age

    def _forget(self, now: float) -> None:
        if len(self._asked) <= MAX_FOLLOWED and len(self._seen) <= MAX_FOLLOWED:
            old = [n for n, at in self._asked.items() if now - at > FORGET_AFTER]
        else:
            old = list(self._asked)  # over the cap: start afresh, answers come back
        for name in old:
            self._asked.pop(name, None)
            self._seen.pop(name, None)

    async def _refresh(self, stale: set[SecretName], now: float) -> None:
        followed = set(self._asked)
        # Filtering costs a call per 10 names each time they fall due; a whole
        # listing serves every name for max_age. Compare them over the same time -
        # and never below what filtering the names asked now costs (the cache
        # checks an agent's secrets together: then they all fall due at once).
        filtered_cost = max(
            math.ceil(len(followed) / FILTER_VALUES * self._listing_share()),
            math.ceil(len(stale) / FILTER_VALUES),
        )
        known = self._account_pages
        if (known is None or known <= filtered_cost) and await self._list_account(
            followed, now, budget=filtered_cost
        ):
            return
        rest = sorted(name for name in stale if not self._fresh_since(name, now))
        rest += self._top_up(len(rest), exclude=set(rest), now=now)
        chunks = [rest[i : i + FILTER_VALUES] for i in range(0, len(rest), FILTER_VALUES)]
        async with asyncio.TaskGroup() as group:
            for chunk in chunks:
                group.create_task(self._list_filtered(chunk, now))

    def _fresh_since(self, name: SecretName, now: float) -> bool:
        seen = self._seen.get(name)
        return seen is not None and seen[0] >= now

    def _top_up(self, count: int, *, exclude: set[SecretName], now: float) -> list[SecretName]:
        """Followed names the cache will check within max_age and that would be
        stale by then, soonest first, to fill the last filter to FILTER_VALUES
        (its price is the same with 1 name or 10)."""
        room = -count % FILTER_VALUES
        if not room:
            return []
        period = self._period or self._max_age
        horizon = now + self._max_age

        def due(name: SecretName) -> float:
            return self._asked[name] + period

        useful = (
            name
            for name in self._asked
            if name not in exclude
            and due(name) <= horizon
            and self._seen.get(name, (0.0, None))[0] + self._max_age < due(name)
        )
        return heapq.nsmallest(room, useful, key=due)

    async def _list_account(self, followed: set[SecretName], now: float, *, budget: int) -> bool:
        """List the whole account within `budget` pages; True when that settled every name."""
        found: set[SecretName] = set()
        token: str | None = None
        for pages in range(1, max(budget, 1) + 1):
            token = await self._page(None, token, followed, found, now)
            if token is None:
                self._account_pages = pages
                for name in followed - found:
                    self._seen[name] = (now, None)
                return True
            if followed <= found:
                return True  # the remainder cannot matter; the account's size stays unknown
        # Larger than the budget: guess twice as large, so growing budgets retry
        # the whole listing a logarithmic number of times, not once per name.
        self._account_pages = min(2 * budget + 1, MAX_ACCOUNT_PAGES)
        return False

    async def _list_filtered(self, chunk: Sequence[SecretName], now: float) -> None:
        wanted = set(chunk)
        found: set[SecretName] = set()
        filters = [{"Key": "name", "Values": list(chunk)}]
        token: str | None = None
        for _ in range(MAX_FILTER_PAGES):
            token = await self._page(filters, token, wanted, found, now)
            if token is None:
                for name in wanted - found:
                    self._seen[name] = (now, None)
                return
            if wanted <= found:
                return
        for name in wanted - found:
            await self._describe(name, now)

    async def _page(
        self,
        filters: list[dict[str, Any]] | None,
        token: str | None,
        wanted: set[SecretName],
        found: set[SecretName],
        now: float,
    ) -> str | None:
        params: dict[str, Any] = {"MaxResults": PAGE_SIZE}
        if filters is not None:
            params["Filters"] = filters
        if token is not None:
            params["NextToken"] = token
        answer = await self._call("list_secrets", f"aws backend {self._backend!r}", **params)
        entries = answer.get("SecretList", [])
        for entry in entries if isinstance(entries, list) else []:
            name = self._take(entry, wanted, now)
            if name is not None and name in wanted:
                found.add(name)
        next_token = answer.get("NextToken")
        return next_token if isinstance(next_token, str) and next_token else None

    async def _describe(self, name: SecretName, now: float) -> None:
        where = f"aws backend {self._backend!r}: secret {name!r}"
        try:
            answer = await self._call("describe_secret", where, SecretId=name)
        except NotFound:
            self._seen[name] = (now, None)
            return
        if self._take(answer, {name}, now) is None:
            self._seen[name] = (now, None)  # deleted, or no current version

    def _take(self, entry: object, wanted: set[SecretName], now: float) -> SecretName | None:
        current = current_version_of(entry, backend=self._backend)
        if current is None:
            return None
        name, version_id, arn = current
        if name not in wanted and name not in self._asked:
            return None  # nobody follows it; any followed name is worth remembering
        self._seen[name] = (now, version_id)
        if arn is not None:
            self._remember_arn(name, arn)
        return name
