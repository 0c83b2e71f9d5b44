"""Where the agent's idle memory and the CLI's start-up go: imports, step by step.

    .venv/bin/python -m tests.bench.bench_imports

Each step imports more of what the agent with a file store (or `secretd get`)
imports, in a fresh interpreter, and prints the RSS and the time it added.
A profile, not a pass/fail: docs/performance.md reads the memory floor off it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.bench.figures import record

# The agent with a file store and audit, in import order; each step's modules
# come on top of the previous steps'.
AGENT_STEPS = [
    ("asyncio (and ssl)", "import asyncio, ssl"),
    ("uvloop", "import uvloop"),
    ("aiohttp (client and server; two TLS contexts at import)", "import aiohttp.web"),
    ("structlog, orjson, prometheus_client", "import structlog, orjson, prometheus_client"),
    ("pydantic and the config models", "import secretd.config.load"),
    ("secretd's agent modules", "import secretd.cli.agent_cmds, secretd.app"),
    ("the file store: cryptography", "import secretd.store.store"),
    ("the file watcher: watchfiles (anyio)", "import watchfiles"),
]
# `secretd get`: no asyncio, pydantic or config models (the blocking client;
# tests/integration/test_cli_habits.py holds the import set).
GET_STEPS = [
    ("the CLI entry point", "import secretd.cli.main"),
    ("httpx and the SDK", "import secretd_client"),
    ("the client commands (and the duration parser)", "import secretd.cli.client_cmds"),
]

PROBE = """
import time, json, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
steps = json.loads(sys.argv[1])
out = [{"step": "python", "rss_mib": rss(), "ms": 0.0}]
for label, code in steps:
    before, started = rss(), time.perf_counter()
    exec(code)
    out.append({"step": label, "rss_mib": rss() - before,
                "ms": (time.perf_counter() - started) * 1000})
print(json.dumps(out))
"""


def probe(steps: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The best (least) of three fresh interpreters, step by step."""
    runs = []
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", PROBE, json.dumps(steps)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        runs.append(json.loads(done.stdout))
    return [
        {
            "step": runs[0][i]["step"],
            "rss_mib": min(r[i]["rss_mib"] for r in runs),
            "ms": min(r[i]["ms"] for r in runs),
        }
        for i in range(len(runs[0]))
    ]


def show(title: str, steps: list[dict[str, Any]]) -> None:
    print(title)
    total = 0.0
    for step in steps:
        total += step["rss_mib"]
        print(f"  +{step['rss_mib']:5.1f} MiB = {total:5.1f}  {step['ms']:6.0f} ms  {step['step']}")


def main() -> None:
    agent, get = probe(AGENT_STEPS), probe(GET_STEPS)
    show("the agent's imports (file store):", agent)
    show("`secretd get`'s imports:", get)
    record("imports", {"agent": agent, "get": get})


if __name__ == "__main__":
    main()
