"""AWS API calls in one simulated hour: 1,000 declared secrets, refresh_interval 5m.

    .venv/bin/python -m tests.bench.bench_aws_calls [--secrets 1000] [--rotations 10] [--extra 0]

Prints figures, asserts nothing (not collected by pytest). Every call counted is
a real HTTP request to a real moto_server on 127.0.0.1 (AwsBackend.api_calls,
retries included); only time is simulated (tests/fakes/fake_clock.py).

The AWS Secrets Manager Agent's model is one DescribeSecret per secret each
time its TTL expires: 1,000 secrets x 12 expiries an hour = 12,000 calls.
Aim: <= 1,200.

1. engine: the real SecretCache and Refresher (per-secret jittered checks,
   small batches) over the AWS backend, secrets pinned as [[secret]] are;
   `rotations` secrets rotate at random moments, and the bench checks the
   cache ended on every rotated secret's new version.
   `--extra N` adds N secrets nobody declared to the account (a large
   account: ListSecrets filters by name instead of listing everything).
2. backend alone: BatchGetSecretValue to load, then one current_versions of
   every name each 5 minutes, fetch_many for whatever moved - the floor a
   fully batched engine would reach.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections import Counter
from typing import Any

from secretd.backends.aws import AwsBackend, open_backend
from secretd.config import CacheSection
from secretd.config.schema import AwsBackendConfig
from secretd.logs import configure_logging
from secretd.model import SecretName
from tests.bench.figures import record
from tests.fakes.cache_rig import cache_over, refresh_loops
from tests.fakes.fake_clock import FakeClock
from tests.servers.moto_server import REGION, TEST_ENV, MotoServer

HOUR = 3600.0
INTERVAL = 300.0
AWS_AGENT_MODEL_PER_SECRET = HOUR / INTERVAL  # one DescribeSecret per TTL expiry


async def open_aws(moto: MotoServer, clock: FakeClock) -> AwsBackend:
    config = AwsBackendConfig(type="aws", region=REGION, endpoint_url=moto.url, timeout="30s")
    return await open_backend("aws", config, max_secret_bytes=65536, clock=clock)


def seed(admin: Any, count: int, extra: int) -> list[SecretName]:
    for i in range(extra):
        admin.create_secret(Name=f"other/{i:05d}", SecretString="not declared")
    names = [SecretName(f"app/{i:04d}") for i in range(count)]
    for name in names:
        admin.create_secret(Name=name, SecretString=f"value-of-{name}")
    return names


async def wait_parked(clock: FakeClock, count: int, limit: float = 120.0) -> None:
    """Real-time wait (bounded) until `count` tasks sleep on the fake clock again."""
    deadline = time.monotonic() + limit
    while clock.sleepers < count:
        if time.monotonic() > deadline:
            raise RuntimeError("the engine did not go back to sleep")
        await asyncio.sleep(0.001)


async def engine_hour(moto: MotoServer, names: list[SecretName], rotations: int) -> None:
    admin = moto.admin_client()
    clock = FakeClock()
    backend = await open_aws(moto, clock)
    cache = cache_over(backend, CacheSection(refresh_interval="5m"), seed=7, clock=clock)
    rng = random.Random(11)
    schedule = sorted(
        (rng.uniform(60, HOUR - 2 * INTERVAL), rng.choice(names)) for _ in range(rotations)
    )
    expected: dict[SecretName, str] = {}
    cache.pin(names)
    start = clock.monotonic()
    runner = asyncio.create_task(refresh_loops(cache, cache.core.settings, clock))
    passes = 0
    try:
        while clock.monotonic() < start + HOUR:
            await wait_parked(clock, 2)  # the poll loop and the evict loop
            while schedule and start + schedule[0][0] <= clock.monotonic():
                _, name = schedule.pop(0)
                answer = await asyncio.to_thread(
                    admin.put_secret_value, SecretId=name, SecretString=f"rotated-{time.time()}"
                )
                expected[name] = answer["VersionId"]
            target = min(clock.next_deadline() or start + HOUR, start + HOUR)
            if schedule:
                target = min(target, start + schedule[0][0])
            clock.advance(max(target - clock.monotonic(), 0.0))
            passes += 1
        await wait_parked(clock, 2)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    seen = {info.name: info.version_id for info in cache.snapshot()}
    caught = sum(1 for name, vid in expected.items() if seen.get(name) == vid)
    report("engine (SecretCache + Refresher)", backend.api_calls, len(names), passes)
    model = int(len(names) * AWS_AGENT_MODEL_PER_SECRET)
    record("aws_calls", {"engine": sum(backend.api_calls.values()), "model": model})
    print(f"  rotations seen by the cache: {caught}/{len(expected)}")
    await cache.aclose()


async def backend_hour(moto: MotoServer, names: list[SecretName], rotations: int) -> None:
    admin = moto.admin_client()
    clock = FakeClock()
    backend = await open_aws(moto, clock)
    rng = random.Random(13)
    loaded = await backend.fetch_many(names)
    versions = {n: r.version.version_id for n, r in loaded.items() if not isinstance(r, Exception)}
    rotated = rng.sample(names, rotations)
    moved_total = 0
    for tick in range(1, int(HOUR / INTERVAL) + 1):
        clock.advance(INTERVAL)
        if tick <= len(rotated):
            name = rotated[tick - 1]
            await asyncio.to_thread(admin.put_secret_value, SecretId=name, SecretString="r")
        current = await backend.current_versions(names)
        moved = [n for n in names if current.get(n) != versions.get(n)]
        for name, result in (await backend.fetch_many(moved)).items():
            if not isinstance(result, Exception):
                versions[name] = result.version.version_id
        moved_total += len(moved)
    report("backend alone (fully batched)", backend.api_calls, len(names), int(HOUR / INTERVAL))
    print(f"  versions that moved and were fetched: {moved_total}")
    await backend.aclose()


def report(title: str, calls: Counter[str], secrets: int, passes: int) -> None:
    total = sum(calls.values())
    model = int(secrets * AWS_AGENT_MODEL_PER_SECRET)
    print(f"{title}: {total} AWS calls in one hour for {secrets} secrets ({passes} passes)")
    for op, count in sorted(calls.items()):
        print(f"  {op:22} {count}")
    print(f"  AWS agent model: {model}  ->  {total / model:.1%} of it (aim <= 10%)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets", type=int, default=1000)
    parser.add_argument("--rotations", type=int, default=10)
    parser.add_argument("--extra", type=int, default=0, help="undeclared secrets in the account")
    args = parser.parse_args()
    configure_logging("error")
    os.environ.update(TEST_ENV)
    with MotoServer() as moto:
        names = await asyncio.to_thread(seed, moto.admin_client(), args.secrets, args.extra)
        print(f"account: {args.secrets + args.extra} secrets, {args.secrets} declared")
        await engine_hour(moto, names, args.rotations)
        await backend_hour(moto, names, args.rotations)


if __name__ == "__main__":
    asyncio.run(main())
