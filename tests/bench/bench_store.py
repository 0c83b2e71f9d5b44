"""File store benchmark: prints figures, asserts nothing (not collected by pytest).

    .venv/bin/python -m tests.bench.bench_store

1. put -> changes() propagation: the time from a `FileStore.put` returning
   (record renamed into place and fsynced) to the FileBackend's watcher
   yielding the name, and on to a decrypted fetch of the new version; ~50 puts.
2. The same from the real `secretd store put` printing its version id (which
   it does once the write is durable); fewer runs, each pays a Python start-up.
3. Sequential put and fetch rates for a 1 KiB value.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from secretd.backends.file import FileBackend, open_backend
from secretd.config import FileBackendConfig
from secretd.model import SecretName
from secretd.store.store import FileStore

PUTS = 50
CLI_PUTS = 10
SECRETD = Path(sys.executable).with_name("secretd")


def figures(label: str, samples_ms: list[float]) -> None:
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(
        f"{label:<44} n={len(ordered):<3} p50={statistics.median(ordered):7.2f} ms  "
        f"p99={p99:7.2f} ms  max={ordered[-1]:7.2f} ms"
    )


async def _next_change(changes: asyncio.Queue[tuple[SecretName, float]], name: str) -> float:
    async with asyncio.timeout(10):
        while True:
            seen, when = await changes.get()
            if seen == name:
                return when


async def propagation(
    backend: FileBackend,
    changes: asyncio.Queue[tuple[SecretName, float]],
    write: Callable[[str, bytes], Awaitable[float]],
    runs: int,
) -> tuple[list[float], list[float]]:
    to_watch, to_fetch = [], []
    for i in range(runs):
        name = SecretName(f"bench/prop-{i % 5}")
        value = f"value-{i}".encode()
        done = await write(name, value)
        seen_at = await _next_change(changes, name)
        fetched = await backend.fetch(name)
        fetched_at = time.perf_counter()
        assert fetched.version.value.reveal() == value
        to_watch.append((seen_at - done) * 1000)
        to_fetch.append((fetched_at - done) * 1000)
        await asyncio.sleep(0.02)  # let stray events for this write drain
        while not changes.empty():
            changes.get_nowait()
    return to_watch, to_fetch


async def rates(store: FileStore, backend: FileBackend) -> None:
    keyring = store.keyring(None)
    value = b"k" * 1024
    start = time.perf_counter()
    for i in range(200):
        store.put(SecretName(f"bench/rate-{i % 20}"), value, keyring)
    put_rate = 200 / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(500):
        await backend.fetch(SecretName(f"bench/rate-{i % 20}"))
    fetch_rate = 500 / (time.perf_counter() - start)
    keyring.close()
    print(f"{'put (1 KiB, fsync + rename + dir fsync)':<44} {put_rate:8.0f} /s")
    print(f"{'fetch (read + verify + unwrap + decrypt)':<44} {fetch_rate:8.0f} /s")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="secretd-bench-") as tmp:
        root = Path(tmp) / "store"
        store, key, _created = FileStore.init(root, Path(tmp) / "store.key")
        key.wipe()
        config = FileBackendConfig(type="file", path=root)
        backend = await open_backend("bench", config, max_secret_bytes=65536)
        changes: asyncio.Queue[tuple[SecretName, float]] = asyncio.Queue()

        async def watch() -> None:
            async for name in backend.changes():
                changes.put_nowait((name, time.perf_counter()))

        watcher = asyncio.create_task(watch())
        keyring = store.keyring(None)

        async def put_in_process(name: str, value: bytes) -> float:
            await asyncio.to_thread(store.put, SecretName(name), value, keyring)
            return time.perf_counter()

        exits: list[asyncio.Future[int]] = []

        async def put_with_cli(name: str, value: bytes) -> float:
            # The CLI prints the version id once the write is durable: time that.
            argv = [str(SECRETD), "store", "put", str(root), name]
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(value)
            proc.stdin.close()
            await proc.stdout.readline()
            printed = time.perf_counter()
            exits.append(asyncio.ensure_future(proc.wait()))  # reaped later, off the clock
            return printed

        await put_in_process("bench/warm-up", b"v")
        await asyncio.sleep(0.5)  # the watcher thread starts lazily
        while not changes.empty():
            changes.get_nowait()
        print(f"secretd file store benchmark ({PUTS} puts; {CLI_PUTS} through the CLI)")
        watch_ms, fetch_ms = await propagation(backend, changes, put_in_process, PUTS)
        figures("put returned -> changes() yielded", watch_ms)
        figures("put returned -> new value fetched", fetch_ms)
        watch_ms, fetch_ms = await propagation(backend, changes, put_with_cli, CLI_PUTS)
        figures("`secretd store put` printed -> changes()", watch_ms)
        figures("`secretd store put` printed -> fetched", fetch_ms)
        await asyncio.gather(*exits)
        await rates(store, backend)
        keyring.close()
        await backend.aclose()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
