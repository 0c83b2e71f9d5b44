"""Engine benchmark: prints figures, asserts nothing (not collected by pytest).

    .venv/bin/python -m tests.bench.bench_cache

1. Backend reads caused by 256 concurrent cold reads of one secret (aim: 1),
   with a backend that takes 5 ms to answer.
2. In-process cached read throughput and per-read latency (p50/p99), one
   reader and 64 concurrent readers, on the real SystemClock and uvloop.
3. Cache bookkeeping for 10,000 cached 1 KB secrets (tracemalloc).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import tracemalloc

import uvloop

from secretd.cache.secret_cache import SecretCache
from secretd.logs import configure_logging
from secretd.model import SecretName
from tests.fakes.cache_rig import cache_over
from tests.fakes.memory_backend import MemoryBackend

READS = 200_000
CONCURRENCY = 64


def build(backend: MemoryBackend) -> SecretCache:
    return cache_over(backend, seed=1)


async def cold_burst() -> None:
    backend = MemoryBackend()
    backend.put("db/app", "value")
    backend.latency = 0.005
    cache = build(backend)
    name = SecretName("db/app")
    started = time.perf_counter()
    await asyncio.gather(*(cache.read(name) for _ in range(256)))
    elapsed = time.perf_counter() - started
    reads = backend.calls["fetch"]
    print(f"256 concurrent cold reads: {reads} backend read(s), {elapsed * 1e3:.1f} ms")


async def timed_reads(cache: SecretCache, name: SecretName, count: int) -> list[float]:
    samples: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        await cache.read(name)
        samples.append(time.perf_counter() - started)
    return samples


def report(label: str, samples: list[float], wall: float) -> None:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2] * 1e6
    p99 = ordered[int(len(ordered) * 0.99)] * 1e6
    print(
        f"{label}: {len(samples) / wall:,.0f} reads/s, p50 {p50:.1f} us, p99 {p99:.1f} us, "
        f"mean {statistics.fmean(samples) * 1e6:.1f} us"
    )


async def cached_throughput() -> None:
    backend = MemoryBackend()
    backend.put("db/app", "x" * 1024)
    cache = build(backend)
    name = SecretName("db/app")
    await cache.read(name)
    started = time.perf_counter()
    samples = await timed_reads(cache, name, READS)
    report("cached reads, 1 reader", samples, time.perf_counter() - started)
    per_task = READS // CONCURRENCY
    started = time.perf_counter()
    parts = await asyncio.gather(*(timed_reads(cache, name, per_task) for _ in range(CONCURRENCY)))
    merged = [s for part in parts for s in part]
    report(f"cached reads, {CONCURRENCY} readers", merged, time.perf_counter() - started)
    print(f"backend reads during the throughput runs: {backend.calls['fetch']}")


async def memory_for_10k() -> None:
    backend = MemoryBackend()
    names = [SecretName(f"app/s{i}") for i in range(10_000)]
    for name in names:
        backend.put(name, b"k" * 1024)
    cache = build(backend)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    outcome = await cache.preload(names)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    failed = sum(1 for problem in outcome.values() if problem is not None)
    print(
        f"10,000 cached 1 KB secrets: {grown / 1e6:.1f} MB allocated by loading them "
        f"(values and bookkeeping), {failed} failed"
    )


async def main() -> None:
    await cold_burst()
    await cached_throughput()
    await memory_for_10k()


if __name__ == "__main__":
    configure_logging("warning")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
