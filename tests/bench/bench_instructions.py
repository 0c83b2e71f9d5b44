"""Instructions per cached read: secretd next to the bare aiohttp handler.

    .venv/bin/python -m tests.bench.bench_instructions [--concurrency 16]

Each server runs under valgrind's cachegrind (user-space instructions
counted, no cache simulation) and serves two runs of the load generator,
2,000 and 12,000 requests; the difference divided by 10,000 is the cost of
one request, with start-up and shutdown cancelled out. Unlike requests a
second, this does not move with whatever else the machine is doing (the
kernel's share - the socket and the audit log's write(2) - is not counted).
Skipped when valgrind is not installed. Figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.figures import record
from tests.bench.pinned import load_run
from tests.e2e.agent_proc import BIN, Store, config_text

ALLOW = '[[allow]]\nsecrets = ["**"]\nuids = [0]\n'
PATH = "/v1/secrets/app/bench"
SMALL, LARGE = 2_000, 12_000
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def server_argv(kind: str, work: Path) -> tuple[list[str], Path]:
    """The command line of `kind` ("secretd" or "aiohttp") and its socket."""
    if kind == "aiohttp":
        body = work / "body.json"
        body.write_bytes(b'{"name":"app/bench","value":"' + b"x" * 200 + b'"}')
        sock = work / "bare.sock"
        argv = [sys.executable, "-m", "tests.bench.refservers", "aiohttp", str(sock), str(body)]
        return argv, sock
    store = Store.create(work)
    store.put("app/bench", b'{"user": "bench", "password": "' + b"x" * 64 + b'"}')
    config = work / "bench.toml"
    config.write_text(config_text(work, store, allow=ALLOW, cache='idle_evict = "1h"\n'))
    config.chmod(0o600)
    return [str(BIN), "agent", "-c", str(config)], work / "s.sock"


def instructions(kind: str, requests: int, concurrency: int) -> int:
    """Instructions a whole run of `kind` took, serving `requests` reads."""
    work = Path(tempfile.mkdtemp(prefix="sdi", dir="/tmp"))
    try:
        argv, sock = server_argv(kind, work)
        report = work / "valgrind.log"
        valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no"]
        valgrind += [f"--cachegrind-out-file={work}/cg.out", f"--log-file={report}"]
        proc = subprocess.Popen(
            [*valgrind, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            _wait_serving(sock, proc)
            load_run(str(sock), PATH, concurrency, requests, 0)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
        found = _REFS.search(report.read_text())
        if found is None:
            raise RuntimeError(f"no instruction count for {kind}")
        return int(found.group(1).replace(",", ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _wait_serving(sock: Path, proc: subprocess.Popen[bytes]) -> None:
    """Until one read is answered 200 (a slow start under valgrind: up to 5 minutes)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if sock.exists():
            try:
                load_run(str(sock), PATH, 1, 1, 0)
                return
            except subprocess.CalledProcessError:
                pass
        time.sleep(0.5)
    raise RuntimeError("the server did not start under valgrind")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: skipped")
        return 0
    per_request = {}
    for kind in ("secretd", "aiohttp"):
        small = instructions(kind, SMALL, args.concurrency)
        large = instructions(kind, LARGE, args.concurrency)
        per_request[kind] = (large - small) / (LARGE - SMALL)
    print(f"user-space instructions per cached read at concurrency {args.concurrency}:")
    for kind, count in per_request.items():
        print(f"  {kind:8s} {count:9,.0f}")
    ratio = per_request["aiohttp"] / per_request["secretd"]
    print(f"  bare aiohttp / secretd: {ratio:.2f}")
    record("instructions", {"per_read": per_request, "concurrency": args.concurrency})
    return 0


if __name__ == "__main__":
    sys.exit(main())
