"""A fleet restarted at once: peak AWS Secrets Manager calls per second, with and
without `[cache] startup_spread` (docs/fleet.md).

    .venv/bin/python -m tests.bench.bench_fleet [--agents 10000] [--secrets 10]
        [--interval 5m] [--spread 5m] [--restart-over 0s] [--minutes 12]

No network and no real time: one event loop whose clock jumps to its next timer
(`VirtualLoop`), so the agents' real schedules run in seconds. Each agent is the
real code - its own `SecretCache` and `CacheCore` (jittered checks, the
start-up spread), `Refresher.for_interval`, and `AwsBackend` (loads batched into
BatchGetSecretValue, version checks through the ListSecrets `VersionLister`) -
against one in-process account (`FleetAccount`) that answers GetSecretValue,
BatchGetSecretValue, ListSecrets and DescribeSecret after 20 ms and counts every
call per virtual second. The account enforces no quota: the figures are the
calls the fleet *offers*; AWS would throttle what is above its quotas and the
agents would retry with backoff.

For each scenario it prints the peak calls per second of each operation during
the start-up (the first loads, which readiness waits for: the spread never moves
them) and after it (the checks, which the spread moves), against the quotas
documented for Secrets Manager. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import selectors
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from secretd.backends.aws import AwsBackend
from secretd.backends.base import Backend
from secretd.backends.router import Router
from secretd.cache.observer import NullObserver
from secretd.cache.secret_cache import build_cache
from secretd.config import CacheSection
from secretd.config.types import parse_duration
from secretd.events import Hub
from secretd.logs import configure_logging
from secretd.model import SecretName
from secretd.refresh.refresher import Refresher

REGION = "eu-west-1"
ACCOUNT = "123456789012"
LATENCY = 0.02  # seconds each call takes
START_UP = 10  # seconds counted as the start-up (the first loads) when the fleet starts at once
QUOTAS = {  # documented per account and region, requests per second
    "GetSecretValue": 10_000,
    "DescribeSecret": 40_000,
    "BatchGetSecretValue": 100,
    "ListSecrets": 100,
}
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class _JumpingSelector(selectors.DefaultSelector):
    """Never waits: a wait for `timeout` moves the loop's virtual clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualLoop | None = None

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise RuntimeError("the simulation has nothing left scheduled (a deadlock)")
        if timeout > 0 and self.loop is not None:
            self.loop.virtual_now += timeout
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time, for code without I/O."""

    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self.virtual_now = 0.0

    def time(self) -> float:
        return self.virtual_now


class LoopClock:
    """secretd's `Clock` on the running loop's (virtual) time."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.monotonic())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


@dataclass
class FleetAccount:
    """One AWS account's secrets and every call made to it, per virtual second."""

    names: list[str]
    calls: defaultdict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))

    def entry(self, name: str) -> dict[str, Any]:
        return {
            "ARN": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf",
            "Name": name,
            "VersionId": f"v1-{name.replace('/', '-')}",
            "SecretString": f"value of {name}",
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": EPOCH,
        }

    def listing(self, name: str) -> dict[str, Any]:
        entry = self.entry(name)
        return {
            "ARN": entry["ARN"],
            "Name": name,
            "SecretVersionsToStages": {entry["VersionId"]: ["AWSCURRENT"]},
        }

    async def called(self, op: str) -> None:
        self.calls[op][int(asyncio.get_running_loop().time())] += 1
        await asyncio.sleep(LATENCY)


class FleetClient:
    """The part of an aiobotocore Secrets Manager client `AwsBackend` uses."""

    def __init__(self, account: FleetAccount) -> None:
        self._account = account
        events = type("Events", (), {"register": lambda *_a, **_k: None})()
        self.meta = type("Meta", (), {"region_name": REGION, "events": events})()

    async def get_secret_value(self, SecretId: str, **_: Any) -> dict[str, Any]:
        await self._account.called("GetSecretValue")
        return self._account.entry(SecretId)

    async def batch_get_secret_value(self, SecretIdList: list[str], **_: Any) -> dict[str, Any]:
        await self._account.called("BatchGetSecretValue")
        return {"SecretValues": [self._account.entry(n) for n in SecretIdList], "Errors": []}

    async def list_secrets(self, **params: Any) -> dict[str, Any]:
        await self._account.called("ListSecrets")
        filters = params.get("Filters")
        wanted = set(filters[0]["Values"]) if filters else None
        names = [n for n in self._account.names if wanted is None or n in wanted]
        return {"SecretList": [self._account.listing(n) for n in names[:100]]}

    async def describe_secret(self, SecretId: str, **_: Any) -> dict[str, Any]:
        await self._account.called("DescribeSecret")
        return self._account.listing(SecretId)


async def one_agent(
    account: FleetAccount, settings: CacheSection, names: list[SecretName], seed: int
) -> None:
    """What `secretd agent` does with [[secret]] entries and an `aws` backend:
    load them (readiness waits for that), then the refresh loops."""
    clock = LoopClock()
    backend = AwsBackend(
        "aws",
        client=FleetClient(account),
        timeout=10.0,
        max_concurrency=8,
        max_secret_bytes=65536,
        rng=random.Random(seed),
        clock=clock,
    )
    backends: dict[str, Backend] = {"aws": backend}
    cache = build_cache(
        router=Router(backends, {"aws": ""}),
        hub=Hub(),
        settings=settings,
        max_secret_bytes=65536,
        observer=NullObserver(),
        clock=clock,
        rng=random.Random(seed),
    )
    cache.pin(names)
    await cache.preload(names)
    refresher = Refresher.for_interval(
        cache.refresh_target,
        refresh_interval=settings.refresh_interval,
        watchables={},
        clock=clock,
        rng=random.Random(seed + 1),
        desync=settings.startup_spread > 0,  # as the agent's graph builds it
    )
    await refresher.run(evict_every=60.0)


async def fleet(args: argparse.Namespace, spread: float) -> FleetAccount:
    names = [SecretName(f"app/secret-{i:03d}") for i in range(args.secrets)]
    account = FleetAccount([str(n) for n in names])
    settings = CacheSection(refresh_interval=args.interval, startup_spread=f"{spread}s")
    starts = random.Random(42)
    restart_over = parse_duration(args.restart_over)

    async def start_later(seed: int) -> None:
        await asyncio.sleep(starts.uniform(0, restart_over) if restart_over else 0.0)
        await one_agent(account, settings, names, seed)

    tasks = [asyncio.create_task(start_later(seed)) for seed in range(args.agents)]
    await asyncio.sleep(args.minutes * 60)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return account


def report(title: str, account: FleetAccount, start_up: float) -> None:
    print(f"\n{title}")
    print(f"  {'operation':22} {'calls':>8} {'start-up peak/s':>16} {'later peak/s':>13} quota/s")
    for op in ("BatchGetSecretValue", "GetSecretValue", "ListSecrets", "DescribeSecret"):
        per_second = account.calls.get(op, Counter())
        early = [n for s, n in per_second.items() if s < start_up]
        late = [(n, s) for s, n in per_second.items() if s >= start_up]
        peak_late, at = max(late, default=(0, 0))
        later = f"{peak_late} (t={at}s)" if peak_late else "0"
        print(
            f"  {op:22} {sum(per_second.values()):>8} {max(early, default=0):>16} "
            f"{later:>13} {QUOTAS[op]:,}"
        )


def run(make: Callable[[], Awaitable[FleetAccount]]) -> tuple[FleetAccount, float]:
    loop = VirtualLoop()
    started = time.monotonic()
    try:
        account = loop.run_until_complete(make())
    finally:
        loop.close()
    return account, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--secrets", type=int, default=10, help="declared secrets per agent")
    parser.add_argument("--interval", default="5m", help="refresh_interval")
    parser.add_argument("--spread", default="5m", help="startup_spread of the second run")
    parser.add_argument("--restart-over", default="0s", help="agents start spread over this")
    parser.add_argument("--minutes", type=float, default=12.0, help="virtual time simulated")
    args = parser.parse_args()
    configure_logging("error")
    restart_over = parse_duration(args.restart_over)
    start_up = max(restart_over + LATENCY * 10, START_UP)
    started = f"over {args.restart_over}" if restart_over else "at once"
    print(
        f"{args.agents} agents x {args.secrets} declared secrets, refresh_interval "
        f"{args.interval}, started {started}, {args.minutes:g} virtual minutes; "
        f"start-up = the first {start_up:g}s"
    )
    for spread in (0.0, parse_duration(args.spread)):
        account, took = run(functools.partial(fleet, args, spread))
        report(f"startup_spread = {spread:g}s  ({took:.0f}s to simulate)", account, start_up)


if __name__ == "__main__":
    main()
