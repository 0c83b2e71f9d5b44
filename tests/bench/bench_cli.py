"""CLI start-up: `secretd get NAME` against a running agent, as a process, start to exit.

    .venv/bin/python -m tests.bench.bench_cli [--runs 30]

Next to the interpreter's own floor (`python -c pass`) in the same run, and
`secretd --version` (the CLI's entry point, no command). Prints p50 and best
of `--runs`; figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.figures import record
from tests.e2e.agent_proc import BIN, Store, config_text, running_agent

ALLOW = '[[allow]]\nsecrets = ["**"]\nuids = [0]\n'


def timed(argv: list[str], runs: int) -> list[float]:
    """Milliseconds from spawn to exit of `argv`, `runs` times (it must succeed)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
        times.append((time.perf_counter() - started) * 1000)
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(times), "best": min(times)}


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="sdc", dir="/tmp"))
    try:
        store = Store.create(work)
        store.put("app/cli", b"cli-value")
        async with running_agent(work, config_text(work, store, allow=ALLOW)) as agent:
            get = [str(BIN), "get", "app/cli", "--socket", str(agent.socket)]
            found = {
                "get_ms": summary(timed(get, args.runs)),
                "version_ms": summary(timed([str(BIN), "--version"], args.runs)),
                "python_ms": summary(timed([sys.executable, "-c", "pass"], args.runs)),
            }
            agent.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"process start to exit, {args.runs} runs each: p50 / best")
    for key, label in (
        ("get_ms", "secretd get NAME"),
        ("version_ms", "secretd --version"),
        ("python_ms", "python -c pass"),
    ):
        print(f"  {label:20s} {found[key]['p50']:6.0f} / {found[key]['best']:4.0f} ms")
    record("cli", found)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    asyncio.run(main(parser.parse_args()))
