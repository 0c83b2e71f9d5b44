"""CLI start-up benchmark: prints figures, asserts nothing (not collected by pytest).

    .venv/bin/python -m tests.bench.bench_cli_start

How long `secretd get NAME` takes from exec to exit against a fake agent on a
real Unix socket (the target is 150 ms on an idle machine), beside a bare
`python -c pass` and `secretd --help`, so the interpreter's own start-up can
be told apart. The import set is asserted by tests/integration/test_cli_imports.py.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fakes.api_server import FakeAgent

RUNS = 20
SECRETD = Path(sys.executable).with_name("secretd")


def timed(argv: list[str]) -> list[float]:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False, timeout=30)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def figures(label: str, samples_ms: list[float]) -> None:
    ordered = sorted(samples_ms)
    print(
        f"{label:<36} n={len(ordered):<3} min={ordered[0]:6.1f} ms  "
        f"p50={statistics.median(ordered):6.1f} ms  max={ordered[-1]:6.1f} ms"
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-cli-", dir="/tmp") as name:
        sock = Path(name) / "a.sock"
        with FakeAgent(sock, {"db/app": "value"}):
            figures("python -c pass", timed([sys.executable, "-c", "pass"]))
            figures("secretd --help", timed([str(SECRETD), "--help"]))
            figures(
                "secretd get db/app", timed([str(SECRETD), "get", "db/app", "--socket", str(sock)])
            )


if __name__ == "__main__":
    main()
