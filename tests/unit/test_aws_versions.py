"""The ListSecrets strategy of the AWS backend against an in-memory account that
answers ListSecrets and DescribeSecret with AWS's paging and filter rules."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from secretd.backends.aws_versions import MAX_FILTER_PAGES, PAGE_SIZE, VersionLister
from secretd.errors import NotFound
from secretd.model import SecretName


class MemoryAccount:
    """Secrets Manager's listing calls over a dict of name -> current version id."""

    def __init__(self, names: list[str]) -> None:
        self.versions = {name: f"v-{name}" for name in names}
        self.deleted: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.filter_sizes: list[int] = []

    async def __call__(
        self, op: str, where: str, *, version_asked: bool = False, **params: Any
    ) -> dict[str, Any]:
        self.calls[op] += 1
        if op == "describe_secret":
            name = params["SecretId"]
            if name not in self.versions:
                raise NotFound(f"{where}: no such secret")
            return self._entry(name)
        assert op == "list_secrets" and params["MaxResults"] == PAGE_SIZE
        names = [n for n in self.versions if n not in self.deleted]
        if "Filters" in params:
            (only,) = params["Filters"]
            assert only["Key"] == "name" and 1 <= len(only["Values"]) <= 10
            self.filter_sizes.append(len(only["Values"]))
            names = [n for n in names if n.startswith(tuple(only["Values"]))]
        start = int(params.get("NextToken", "0"))
        page = names[start : start + PAGE_SIZE]
        answer: dict[str, Any] = {"SecretList": [self._entry(n) for n in page]}
        if start + PAGE_SIZE < len(names):
            answer["NextToken"] = str(start + PAGE_SIZE)
        return answer

    def _entry(self, name: str) -> dict[str, Any]:
        return {
            "Name": name,
            "ARN": f"arn:{name}",
            "SecretVersionsToStages": {self.versions[name]: ["AWSCURRENT"], "old": ["AWSPREVIOUS"]},
        }


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lister(account: MemoryAccount, clock: Clock, max_age: float = 60.0) -> VersionLister:
    arns: dict[SecretName, str] = {}
    return VersionLister(
        account, backend="aws", remember_arn=arns.__setitem__, max_age=max_age, monotonic=clock
    )


def names(prefix: str, count: int) -> list[SecretName]:
    return [SecretName(f"{prefix}/{i:04d}") for i in range(count)]


async def test_a_small_account_is_listed_whole_and_remembered() -> None:
    declared = names("app", 300)
    account = MemoryAccount([*declared, "other/x"])
    clock = Clock()
    versions = lister(account, clock)
    answer = await versions.current_versions([*declared, SecretName("app/absent")])
    assert answer == {n: f"v-{n}" for n in declared}
    assert account.calls == {"list_secrets": 4}  # 301 secrets, 100 a page
    clock.now += 30
    await versions.current_versions(declared[:5])
    assert account.calls == {"list_secrets": 4}
    clock.now += 31
    account.versions[declared[0]] = "rotated"
    assert (await versions.current_versions(declared[:1]))[declared[0]] == "rotated"
    assert account.calls == {"list_secrets": 8}


async def test_deleted_secrets_disappear_from_answers() -> None:
    declared = names("app", 5)
    account = MemoryAccount(declared)
    account.deleted.add(declared[0])
    answer = await lister(account, Clock(), max_age=0).current_versions(declared)
    assert set(answer) == set(declared[1:])


async def test_a_large_account_is_filtered_once_the_check_period_is_known() -> None:
    declared = names("app", 100)
    account = MemoryAccount([*names("zzz", 5000), *declared])  # ours on the last pages
    clock = Clock()
    versions = lister(account, clock)
    await versions.current_versions(declared)  # learns nothing about the period yet
    for _ in range(3):  # the cache checks every name each 300 s
        clock.now += 300
        account.calls.clear()
        account.filter_sizes.clear()
        await versions.current_versions(declared)
    # 100 names: 10 filters beat 51 pages of the whole account.
    assert account.calls == {"list_secrets": 10}
    assert account.filter_sizes == [10] * 10


async def test_filters_are_topped_up_with_names_due_next() -> None:
    declared = names("app", 40)
    account = MemoryAccount([*names("zzz", 5000), *declared])
    clock = Clock()
    versions = lister(account, clock)
    # The cache checks one name every 7.5 s, each name every 300 s.
    for step in range(200):
        clock.now += 7.5
        await versions.current_versions([declared[step % 40]])
    account.calls.clear()
    for step in range(200, 240):
        clock.now += 7.5
        await versions.current_versions([declared[step % 40]])
    # Without topping up: 40 calls. Each call now carries the names due next.
    assert account.calls["list_secrets"] <= 10
    assert account.calls["describe_secret"] == 0


async def test_a_filter_drowning_in_prefix_matches_falls_back_to_describe() -> None:
    # "db" is a prefix of 1,200 other names, all listed before it.
    crowd = [f"db{i:05d}" for i in range(PAGE_SIZE * (MAX_FILTER_PAGES + 2))]
    account = MemoryAccount([*crowd, "db"])
    versions = lister(account, Clock(), max_age=0)
    answer = await versions.current_versions([SecretName("db"), SecretName("nothere")])
    assert answer == {"db": "v-db"}
    # One page of the whole account (the budget for two names), then the
    # filter's MAX_FILTER_PAGES, then DescribeSecret for both names.
    assert account.calls == {"list_secrets": 1 + MAX_FILTER_PAGES, "describe_secret": 2}


@pytest.mark.parametrize(
    "entry",
    [
        {"Name": "app/0000", "SecretVersionsToStages": {"v": ["AWSPENDING"]}},
        {"Name": "app/0000", "DeletedDate": 1.0, "SecretVersionsToStages": {"v": ["AWSCURRENT"]}},
        {"Name": "not a name", "SecretVersionsToStages": {"v": ["AWSCURRENT"]}},
    ],
)
async def test_entries_without_a_usable_current_version_count_as_absent(
    entry: dict[str, Any],
) -> None:
    async def call(
        op: str, where: str, *, version_asked: bool = False, **params: Any
    ) -> dict[str, Any]:
        return {"SecretList": [entry]}

    versions = VersionLister(call, backend="aws", remember_arn=lambda n, a: None)
    assert await versions.current_versions([SecretName("app/0000")]) == {}
