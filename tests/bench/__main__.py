"""Run every benchmark in turn and print their figures: `make bench`.

    .venv/bin/python -m tests.bench            # all of them; publishes the figures
    .venv/bin/python -m tests.bench api render # only these (bench_<name>.py); prints only

Benchmarks print numbers and assert nothing; they are never part of CI's
pass/fail path. Each runs in its own process so one's state cannot skew another.

Our sources are compiled to bytecode first (outside the tree), as an
installed package has them. A run of all of them is one source of truth: what they record goes to
docs/performance-figures.json, with the date, commit and load average, and
the figures tables of README.md and docs/performance.md are regenerated from
it (tests/bench/figures.py). A partial run publishes nothing.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

from tests.bench.figures import FIGURES, ROOT, RUN_ENV, regenerate

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    every = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    names = argv or every
    publish = not argv
    scratch = Path(tempfile.mkdtemp(prefix="sdbench"))
    run_file = scratch / "run.json"
    env = _compiled_env(scratch / "pycache")
    if publish:
        env[RUN_ENV] = str(run_file)
    failed = []
    loads: dict[str, list[float]] = {}
    for name in names:
        print(f"\n=== bench_{name} ===", flush=True)
        before = os.getloadavg()[0]
        result = subprocess.run(
            [sys.executable, "-m", f"tests.bench.bench_{name}"], check=False, env=env, cwd=ROOT
        )
        loads[name] = [round(before, 2), round(os.getloadavg()[0], 2)]
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed to run: {', '.join(failed)}")
    if publish and not failed:
        _publish(run_file, loads)
    return 1 if failed else 0


def _compiled_env(prefix: Path) -> dict[str, str]:
    """The environment for the benchmarks: our sources compiled to bytecode, as
    an installed package has them (kept under `prefix`, not in the tree).
    Without it, every process started with PYTHONDONTWRITEBYTECODE set
    compiles secretd's modules from source, which is not what an agent's
    start-up or `secretd get` costs once installed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(prefix)
    sources = [str(ROOT / "agent" / "secretd"), str(ROOT / "sdk" / "secretd_client")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *sources], env=env, check=True)
    return env


def _publish(run_file: Path, loads: dict[str, list[float]]) -> None:
    run = json.loads(run_file.read_text()) if run_file.exists() else {}
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    run["run"] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit or "unknown",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "load": loads,
    }
    FIGURES.write_text(json.dumps(run, indent=1, sort_keys=True) + "\n")
    for path in regenerate():
        print(f"regenerated {path.relative_to(ROOT)}")
    print(f"figures published to {FIGURES.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
