"""API benchmark: prints figures, asserts nothing (not collected by pytest).

    .venv/bin/python -m tests.bench.bench_api [--requests 20000] [--rounds 5] [--secrets 10000]

1. cached-read throughput and p50/p99 over the Unix socket at concurrency 1, 16
   and 64, audit and metrics on, next to two references on the same kind of
   socket serving the same bytes: a bare aiohttp handler (route + fixed body:
   the framework's ceiling) and a raw uvloop protocol (no HTTP parser: the
   floor of the loop and the socket). Servers on CPU 0, the load generator on
   CPU 1, `--requests` per run after a warm-up, best of `--rounds`
   (tests/bench/pinned.py); then the agent's RSS;
2. backend reads caused by 256 concurrent cold requests for one secret (aim: 1);
3. `secretd store put` returning -> a parked long-poll answering, p50/p99;
4. the agent's RSS with N cached 1 KiB secrets.

Run by `make bench`, the figures also go to docs/performance-figures.json
(tests/bench/figures.py).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from tests.bench.figures import record
from tests.bench.pinned import best_rounds, can_pin, pin, rss_mib, start_reference
from tests.e2e.agent_proc import BIN, AgentProcess, Store, config_text

ALLOW = '[[allow]]\nsecrets = ["**"]\nuids = [0]\n'
LIMITS = "backend_rate = 1000000.0\nbackend_burst = 1000000\n"
READ_PATH = "/v1/secrets/app/bench"
READ = f"GET {READ_PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
WARMUP = 2_000
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


async def http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[bytes, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    match = _LENGTH.search(head)
    body = await reader.readexactly(int(match.group(1))) if match else b""
    return head, body


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def wait_for_socket(path: Path, proc: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(20):
        while proc.poll() is None:
            if path.exists():
                try:
                    _, writer = await asyncio.open_unix_connection(str(path))
                    writer.close()
                    return
                except OSError:
                    pass
            await asyncio.sleep(0.05)
    raise RuntimeError("bare server did not start")


async def bench_throughput(
    agent: AgentProcess, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Section 1: the read figures, and the agent's RSS before and after them."""
    assert agent.proc is not None
    reader, writer = await asyncio.open_unix_connection(str(agent.socket))
    _, body = await http_exchange(reader, writer, READ)
    writer.close()
    (work / "body.json").write_bytes(body)
    servers = {"secretd": str(agent.socket)}
    references = {}
    for kind in ("aiohttp", "raw"):
        sock = work / f"{kind}.sock"
        references[kind] = start_reference(kind, sock, work / "body.json")
        servers[kind] = str(sock)
    reads: dict[str, Any] = {}
    try:
        for kind, proc in references.items():
            await wait_for_socket(Path(servers[kind]), proc)
        print(
            f"\n1. cached reads, {len(body)}-byte JSON body, {args.requests} requests a run"
            f" after {WARMUP}, best of {args.rounds} rounds;"
            f" {'servers on CPU 0, load generator on CPU 1' if can_pin() else 'NOT pinned'}"
        )
        print("   conc  server    req/s   p50 ms   p99 ms   vs bare aiohttp")
        for concurrency in (1, 16, 64):
            best = await best_rounds(
                servers,
                READ_PATH,
                concurrency,
                requests=args.requests,
                warmup=WARMUP,
                rounds=args.rounds,
            )
            reads[str(concurrency)] = best
            show_reads(concurrency, best)
    finally:
        for proc in references.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    burst = rss_mib(agent.proc.pid)
    print(f"   agent RSS after the c=64 runs: {burst:.1f} MiB")
    return {"reads": reads, "rss_mib": {"after_burst": burst}}


async def bench_idle(store: Store, work: Path, agents: int = 3) -> dict[str, Any]:
    """RSS of fresh agents (this file store, audit on), each 2 s after READY=1:
    the median of `agents` (one start's heap can hold a few MiB more garbage)."""
    runs = []
    for i in range(agents):
        directory = work / f"idle{i}"
        directory.mkdir()
        config = directory / "idle.toml"
        config.write_text(config_text(directory, store, allow=ALLOW, limits=LIMITS))
        config.chmod(0o600)
        agent = AgentProcess(directory, config)
        agent.start()
        try:
            await agent.wait_ready()
            await asyncio.sleep(2.0)
            assert agent.proc is not None
            runs.append(rss_mib(agent.proc.pid))
        finally:
            agent.stop()
    idle = statistics.median(runs)
    shown = ", ".join(f"{r:.1f}" for r in runs)
    print(f"\n0. RSS of {agents} fresh agents, idle: median {idle:.1f} MiB ({shown})")
    return {"idle": idle, "idle_runs": runs}


def show_reads(concurrency: int, best: dict[str, dict[str, Any]]) -> None:
    bare = best["aiohttp"]
    for name, got in best.items():
        print(
            f"   {concurrency:4d}  {name:8s} {got['rps']:7.0f} {got['p50_ms']:8.3f}"
            f" {got['p99_ms']:8.3f}   {got['rps'] / bare['rps']:5.2f}"
            f"   (median of rounds {got['median_rps']:7.0f}:"
            f" {got['median_rps'] / bare['median_rps']:5.2f})"
        )


async def fetch_count(agent: AgentProcess) -> float:
    reader, writer = await asyncio.open_unix_connection(str(agent.socket))
    _, body = await http_exchange(reader, writer, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    writer.close()
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("secretd_backend_calls_total{") and 'op="fetch"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def bench_cold(agent: AgentProcess) -> dict[str, Any]:
    before = await fetch_count(agent)
    request = b"GET /v1/secrets/app/cold HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

    async def one() -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(agent.socket))
        head, _ = await http_exchange(reader, writer, request)
        writer.close()
        return head[:12]

    heads = await asyncio.gather(*(one() for _ in range(256)))
    after = await fetch_count(agent)
    ok = sum(1 for h in heads if h == b"HTTP/1.1 200")
    print(
        f"\n2. 256 concurrent cold requests for one secret: {ok} answered 200, "
        f"{after - before:.0f} backend read(s) (aim: 1)"
    )
    return {"cold_ok": ok, "cold_backend_reads": after - before}


def api_put(store: Store, name: str, value: bytes) -> str:
    """The same write `secretd store put` does, without the CLI's interpreter start-up."""
    from secretd.model import SecretName
    from secretd.store.store import FileStore

    files = FileStore(store.root)
    return files.put(SecretName(name), value, files.keyring(store.key))


async def bench_propagation(
    agent: AgentProcess, store: Store, rotations: int, *, via_cli: bool
) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(agent.socket))
    _, body = await http_exchange(reader, writer, READ)
    index = re.search(rb'"version_id":"([^"]+)"', body)
    assert index is not None
    current = index.group(1).decode()
    after_return: list[float] = []
    after_start: list[float] = []  # includes the CLI's own start-up (~0.3-1 s of Python)
    for i in range(rotations):
        poll = f"GET /v1/secrets/app/bench?wait=30s&index={current} HTTP/1.1\r\nHost: x\r\n\r\n"
        answered: asyncio.Task[tuple[bytes, bytes]] = asyncio.create_task(
            http_exchange(reader, writer, poll.encode())
        )
        await asyncio.sleep(0.05)  # parked
        done_at = asyncio.get_running_loop().create_future()
        answered.add_done_callback(
            lambda _t, f=done_at: f.done() or f.set_result(time.perf_counter())
        )
        put_started = time.perf_counter()
        put = store.put if via_cli else functools.partial(api_put, store)
        await asyncio.to_thread(put, "app/bench", f"rotation-{i}".encode() * 50)
        returned = time.perf_counter()
        _, new_body = await asyncio.wait_for(answered, 30)
        after_return.append(await done_at - returned)
        after_start.append(await done_at - put_started)
        found = re.search(rb'"version_id":"([^"]+)"', new_body)
        assert found is not None
        current = found.group(1).decode()
    writer.close()
    how = "`secretd store put` (CLI)" if via_cli else "FileStore.put (in-process)"
    print(
        f"\n3. {how} -> long-poll answer over {rotations} rotations "
        "(negative: answered before the put returned)"
    )
    print(
        f"   after put returned: p50 {pct(after_return, 0.5):.1f} ms, "
        f"p99 {pct(after_return, 0.99):.1f} ms, max {max(after_return) * 1000:.1f} ms "
        "(aim p99 <= 100 ms)"
    )
    print(
        f"   after put started:  p50 {pct(after_start, 0.5):.1f} ms, "
        f"p99 {pct(after_start, 0.99):.1f} ms"
    )
    if via_cli:
        return {}
    return {"long_poll_ms": {"p50": pct(after_return, 0.5), "p99": pct(after_return, 0.99)}}


def fill_store(store: Store, count: int) -> None:
    from secretd.model import SecretName
    from secretd.store.store import FileStore

    files = FileStore(store.root)
    keyring = files.keyring(store.key)
    value = os.urandom(512).hex().encode()  # 1 KiB of text
    for i in range(count):
        files.put(SecretName(f"bulk/s{i:05d}"), value, keyring)


async def bench_rss(count: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="sdr", dir="/tmp"))
    store = Store.create(directory)
    started = time.perf_counter()
    await asyncio.to_thread(fill_store, store, count)
    print(
        f"\n4. RSS (store of {count} 1 KiB secrets written in "
        f"{time.perf_counter() - started:.0f} s)"
    )
    agent = await start(directory, store, cache=f"max_entries = {max(count, 10)}\n")
    try:
        assert agent.proc is not None
        print(f"   idle:                      {rss_mib(agent.proc.pid):7.1f} MiB")
        names = [f"bulk/s{i:05d}" for i in range(count)]

        async def reader_task(chunk: list[str]) -> None:
            reader, writer = await asyncio.open_unix_connection(str(agent.socket))
            for name in chunk:
                await http_exchange(
                    reader, writer, f"GET /v1/secrets/{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                )
            writer.close()

        await asyncio.gather(*(reader_task(names[i::32]) for i in range(32)))
        cached = rss_mib(agent.proc.pid)
        print(f"   with {count} cached 1 KiB:   {cached:7.1f} MiB")
    finally:
        agent.stop()
        subprocess.run(["rm", "-rf", str(directory)], check=False)
    return {"cached": cached, "cached_count": count}


async def start(
    directory: Path, store: Store, cache: str = "", *, audit: bool = True
) -> AgentProcess:
    config = directory / "bench.toml"
    config.write_text(
        config_text(directory, store, allow=ALLOW, limits=LIMITS, cache=cache, audit=audit)
    )
    config.chmod(0o600)
    agent = AgentProcess(directory, config)
    agent.start()
    assert agent.proc is not None
    pin(agent.proc.pid)  # before it starts its threads: they inherit the CPU
    await agent.wait_ready()
    pin(agent.proc.pid)
    return agent


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="sdb", dir="/tmp"))
    print(f"secretd API bench: {BIN}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    store = Store.create(work)
    store.put("app/bench", b'{"user": "bench", "password": "' + b"x" * 64 + b'"}')
    store.put("app/cold", b"cold")
    agent = await start(work, store, cache='idle_evict = "1h"\n', audit=not args.no_audit)
    print(f"audit log: {'off' if args.no_audit else 'on (every read is one JSON line)'}")
    found: dict[str, Any] = {"requests_per_run": args.requests, "rounds": args.rounds}
    try:
        idle = await bench_idle(store, work)
        found.update(await bench_throughput(agent, work, args))
        found["rss_mib"].update(idle)
        found.update(await bench_cold(agent))
        await bench_propagation(agent, store, args.rotations, via_cli=True)
        found.update(await bench_propagation(agent, store, args.rotations, via_cli=False))
    finally:
        agent.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    if args.secrets:
        found["rss_mib"].update(await bench_rss(args.secrets))
    if not args.no_audit:
        record("api", found)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="per run, after a warm-up")
    parser.add_argument("--rounds", type=int, default=7, help="runs per server; the best counts")
    parser.add_argument("--secrets", type=int, default=10000)
    parser.add_argument("--rotations", type=int, default=30)
    parser.add_argument("--no-audit", action="store_true", help="run the agent without audit_log")
    uvloop.run(main(parser.parse_args()))
