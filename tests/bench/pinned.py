"""Read throughput measured as docs/performance.md describes: every server
pinned to CPU 0, the load generator (tests/bench/loadgen.py, its own process)
to CPU 1, keep-alive connections, a fixed number of requests per run after a
warm-up, the servers' runs alternating round by round, and for each server
its best round (the machine is shared: a quiet moment is the fair figure,
and each server gets the same chances at one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SERVER_CPU = 0
CLIENT_CPU = 1
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pinned(argv: list[str], cpu: int) -> list[str]:
    """`argv` run on `cpu` only (unchanged when this machine cannot pin)."""
    return ["taskset", "-c", str(cpu), *argv] if can_pin() else argv


def pin(pid: int, cpu: int = SERVER_CPU) -> None:
    """Move every thread of `pid` to `cpu`; threads it starts later inherit it."""
    if not can_pin():
        return
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task), {cpu})


def start_reference(kind: str, sock: Path, body: Path) -> subprocess.Popen[bytes]:
    """A reference server of tests/bench/refservers.py, pinned to SERVER_CPU."""
    argv = [sys.executable, "-m", "tests.bench.refservers", kind, str(sock), str(body)]
    return subprocess.Popen(pinned(argv, SERVER_CPU), cwd=ROOT)


def load_run(sock: str, path: str, concurrency: int, requests: int, warmup: int) -> dict[str, Any]:
    """One run of the load generator, pinned to CLIENT_CPU: its JSON figures."""
    argv = [sys.executable, "-m", "tests.bench.loadgen", sock, path]
    argv += ["--concurrency", str(concurrency), "--requests", str(requests)]
    argv += ["--warmup", str(warmup)]
    done = subprocess.run(
        pinned(argv, CLIENT_CPU), cwd=ROOT, capture_output=True, check=True, timeout=600
    )
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


async def best_rounds(
    servers: Mapping[str, str],
    path: str,
    concurrency: int,
    *,
    requests: int,
    warmup: int,
    rounds: int,
) -> dict[str, dict[str, Any]]:
    """Per server (name -> socket), the round with the most requests a second,
    with `median_rps` of all its rounds beside it."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for _ in range(rounds):
        for name, sock in servers.items():
            got = await asyncio.to_thread(load_run, sock, path, concurrency, requests, warmup)
            runs[name].append(got)
    best = {}
    for name, done in runs.items():
        best[name] = {
            **max(done, key=lambda got: float(got["rps"])),
            "median_rps": statistics.median(got["rps"] for got in done),
        }
    return best


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
