"""SDK benchmark: prints figures, asserts nothing (not collected by pytest).

    .venv/bin/python -m tests.bench.bench_sdk [--seconds 2] [--rotations 20]

Against the real agent on its Unix socket, one 1 KiB secret:
1. `Client.get` (blocking, uncached) and `Client(cache=True).get`: reads/s, p50/p99;
2. `AsyncClient.get` at concurrency 16;
3. `secretd store put` returning -> `watch()` yielding the new version, p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import secretd_client as sc
from tests.e2e.agent_proc import AgentProcess, Store, config_text

ALLOW = '[[allow]]\nsecrets = ["**"]\nuids = [0]\n'
NAME = "app/bench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(label: str, latencies: list[float], seconds: float) -> None:
    print(
        f"   {label:<28} {len(latencies) / seconds:9.0f} reads/s  "
        f"p50 {pct(latencies, 0.5):7.3f} ms  p99 {pct(latencies, 0.99):7.3f} ms"
    )


def blocking(read: Callable[[], object], seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        read()
        latencies.append(time.perf_counter() - started)
    return latencies


async def concurrent(socket: Path, concurrency: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with sc.AsyncClient(socket) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await client.get(NAME)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def propagation(agent: AgentProcess, store: Store, rotations: int) -> list[float]:
    delays: list[float] = []
    async with sc.AsyncClient(agent.socket) as client:
        watch = client.watch(NAME, wait=30)
        await anext(watch)
        for i in range(rotations):
            seen = asyncio.ensure_future(anext(watch))
            await asyncio.to_thread(store.put, NAME, f"{i:01024d}".encode())
            returned = time.perf_counter()
            async with asyncio.timeout(30):
                await seen
            delays.append(time.perf_counter() - returned)
        await watch.aclose()
    return delays


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="sdk", dir="/tmp"))
    store = Store.create(work)
    store.put(NAME, b"x" * 1024)
    config = work / "bench.toml"
    config.write_text(config_text(work, store, allow=ALLOW, declared=(NAME,)))
    config.chmod(0o600)
    agent = AgentProcess(work, config)
    agent.start()
    try:
        await agent.wait_ready()
        print(f"1. blocking Client, one 1 KiB secret, {args.seconds:g} s each")
        with sc.Client(agent.socket) as client:
            report("Client.get", blocking(lambda: client.get(NAME), args.seconds), args.seconds)
        with sc.Client(agent.socket, cache=True) as cached:
            cached.get(NAME)
            lat = blocking(lambda: cached.get(NAME), args.seconds)
            report("Client(cache=True).get", lat, args.seconds)
        print("2. AsyncClient.get, 16 concurrent")
        report(
            "AsyncClient.get x16", await concurrent(agent.socket, 16, args.seconds), args.seconds
        )
        delays = await propagation(agent, store, args.rotations)
        print(f"3. store put returned -> watch() yielded, {args.rotations} rotations")
        print(f"   p50 {pct(delays, 0.5):.1f} ms  p99 {pct(delays, 0.99):.1f} ms")
    finally:
        agent.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rotations", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
