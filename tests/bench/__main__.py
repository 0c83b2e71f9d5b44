"""Run every benchmark in turn and print their figures: `make bench`.

    .venv/bin/python -m tests.bench            # all of them
    .venv/bin/python -m tests.bench api render # only these (bench_<name>.py)

Benchmarks print numbers and assert nothing; they are never part of CI's
pass/fail path. Each runs in its own process so one's state cannot skew another.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    failed = []
    for name in names:
        print(f"\n=== bench_{name} ===", flush=True)
        result = subprocess.run([sys.executable, "-m", f"tests.bench.bench_{name}"], check=False)
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
