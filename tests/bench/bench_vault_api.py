"""Vault clients served by secretd's Vault-compatible API vs by `bao agent`, one run.

    .venv/bin/python -m tests.bench.bench_vault_api [--seconds 3] [--cli-runs 40]

One `bao server -dev` holds 100 KV v2 secrets. The same client code reads the
same paths (`secret/data/bench/sN`) through:

- secretd: a `vault` backend with mount "" (secretd name = KV path), `[vault_api]`,
  the Unix socket and the loopback TCP listener (its token as the Vault token);
  reads are served from its cache;
- bao agent: `api_proxy` with the auto-auth (root) token and `cache {}`, a Unix
  and a TCP listener; OpenBao Agent does not cache KV reads, so each reaches
  the server.

Prints, side by side: `bao kv get -field=password` (a process per read, 4 at a
time, over the Unix sockets), hvac `read_secret_version` over TCP at 1 and 8
threads, and raw HTTP GETs over the Unix sockets at 16 connections: req/s and
p50/p99. Not collected by pytest; figures, never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hvac

from tests.bench.bench_vault import (
    READY_WITHIN,
    ReadFigures,
    agent_section,
    bao_agent,
    bao_agent_config,
    bao_bench,
    health_ok,
    read_load,
    secretd_agent,
    seed,
    vault_section,
    wait_for,
)
from tests.e2e.vault_api_clients import bao_env
from tests.servers.bao_server import BaoServer, bao_binary, write_private
from tests.servers.moto_server import free_port

NAMES = [f"bench/s{i}" for i in range(100)]
TCP_TOKEN = "bench-tcp-token-0123456789abcdef"


def secretd_config(work: Path, server: BaoServer, port: int) -> Path:
    tcp_token = write_private(work / "tcp.token", TCP_TOKEN)
    decls = "".join(f'[[secret]]\nname = "{n}"\n' for n in NAMES)
    text = f"""
{agent_section(work)}
[tcp]
listen = "127.0.0.1:{port}"
token_file = "{tcp_token}"

[vault_api]

[limits]
max_connections = 4096
backend_rate = 100000.0
backend_burst = 100000

{vault_section(work, server, mount="")}
{decls}
[[allow]]
secrets = ["bench/**"]
uids = [{os.getuid()}]
tcp = true
"""
    return write_private(work / "secretd.toml", text)


def bao_proxy_config(work: Path, server: BaoServer, port: int) -> Path:
    """bao agent proxying with its own token (forced), on work/bao.sock and `port`."""
    tcp = f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = true\n}}\n'
    return bao_agent_config(work, server, use_token='"force"', more=tcp)


def cli_reads(address: str, home: Path, runs: int, token: str | None) -> ReadFigures:
    """`runs` `bao kv get -field=password` processes, 4 at a time."""
    binary = bao_binary()
    assert binary is not None
    env = bao_env(address, home, token)
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal failures
        started = time.perf_counter()
        done = subprocess.run(
            [binary, "kv", "get", "-field=password", f"secret/{NAMES[i % len(NAMES)]}"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        with lock:
            if done.returncode == 0 and done.stdout.startswith(b"pw-"):
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1

    began = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(runs)))
    if failures:
        print(f"    ({failures} failed runs left out)")
    return ReadFigures(len(latencies), time.perf_counter() - began, latencies)


def hvac_reads(url: str, token: str, threads: int, seconds: float) -> ReadFigures:
    """`threads` hvac clients calling read_secret_version back to back for `seconds`."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker(offset: int) -> None:
        kv = hvac.Client(url=url, token=token).secrets.kv.v2
        i = offset
        mine = []
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            kv.read_secret_version(
                path=NAMES[i % len(NAMES)], mount_point="secret", raise_on_deleted_version=True
            )
            mine.append(time.perf_counter() - started)
            i += 1
        with lock:
            latencies.extend(mine)

    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return ReadFigures(len(latencies), time.perf_counter() - began, latencies)


def run_all(
    label: str, unix: Path, url: str, token: str, home: Path, seconds: float, runs: int
) -> None:
    # No CLI token: secretd's socket knows its peer, bao agent forces its own token.
    print(cli_reads(f"unix://{unix}", home, runs, None).line(f"{label} bao kv get x4"))
    for threads in (1, 8):
        print(hvac_reads(url, token, threads, seconds).line(f"{label} hvac tcp t={threads}"))
    paths = [f"/v1/secret/data/{n}" for n in NAMES]
    figures = asyncio.run(read_load(unix, paths, 16, seconds, {"X-Vault-Request": "true"}))
    print(figures.line(f"{label} http unix c=16"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per hvac/http run")
    parser.add_argument("--cli-runs", type=int, default=40, help="bao kv get processes")
    args = parser.parse_args()
    with bao_bench("bva") as (work, server):
        seed(server, NAMES)
        print(f"bao server {server.address}; {len(NAMES)} secrets; {os.cpu_count()} CPUs")
        sd_port, ba_port = free_port(), free_port()
        with secretd_agent(secretd_config(work, server, sd_port), work / "secretd.log"):
            wait_for(lambda: health_ok(work / "sd.sock"), READY_WITHIN, "secretd ready")
            url = f"http://127.0.0.1:{sd_port}"
            run_all("secretd", work / "sd.sock", url, TCP_TOKEN, work, args.seconds, args.cli_runs)
        with bao_agent(bao_proxy_config(work, server, ba_port), work / "bao-agent.log"):
            wait_for(lambda: (work / "bao.sock").exists(), READY_WITHIN, "bao agent socket")
            url = f"http://127.0.0.1:{ba_port}"
            run_all("bao agent", work / "bao.sock", url, "", work, args.seconds, args.cli_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
