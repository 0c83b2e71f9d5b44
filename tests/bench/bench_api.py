"""API benchmark: prints figures, asserts nothing (not collected by pytest).

    .venv/bin/python -m tests.bench.bench_api [--seconds 3] [--secrets 10000] [--rotations 30]

1. cached-read throughput and p50/p99 over the Unix socket at concurrency 1, 16
   and 64: the real agent next to a bare aiohttp handler on uvloop returning the
   same bytes on the same kind of socket (the framework's ceiling);
2. backend reads caused by 256 concurrent cold requests for one secret (aim: 1);
3. `secretd store put` returning -> a parked long-poll answering, p50/p99;
4. the agent's RSS idle and with N cached 1 KB secrets.

The client speaks raw HTTP/1.1 keep-alive (one connection per worker) so its
own cost stays small and identical for both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from tests.e2e.agent_proc import BIN, AgentProcess, Store, config_text

ALLOW = '[[allow]]\nsecrets = ["**"]\nuids = [0]\n'
LIMITS = "backend_rate = 1000000.0\nbackend_burst = 1000000\n"
READ = b"GET /v1/secrets/app/bench HTTP/1.1\r\nHost: x\r\n\r\n"
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)

BARE_SERVER = """
import sys, uvloop, asyncio
from aiohttp import web
path, body = sys.argv[1], open(sys.argv[2], "rb").read()
async def handler(request):
    return web.Response(body=body, content_type="application/json",
                        headers={"Cache-Control": "no-store"})
async def main():
    app = web.Application()
    app.router.add_get("/v1/secrets/{name:.+}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, path, backlog=1024).start()
    await asyncio.Event().wait()
uvloop.run(main())
"""


async def http_exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[bytes, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    match = _LENGTH.search(head)
    body = await reader.readexactly(int(match.group(1))) if match else b""
    return head, body


async def load(path: str, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    """Requests per second and every latency, `concurrency` keep-alive workers."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await http_exchange(reader, writer, READ)
                latencies.append(time.perf_counter() - started)
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - began), latencies


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


async def bench_throughput(agent: AgentProcess, work: Path, seconds: float) -> None:
    reader, writer = await asyncio.open_unix_connection(str(agent.socket))
    _, body = await http_exchange(reader, writer, READ)
    writer.close()
    (work / "body.json").write_bytes(body)
    bare_sock = work / "bare.sock"
    bare = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER, str(bare_sock), str(work / "body.json")]
    )
    try:
        await wait_for_socket(bare_sock, bare)
        print(f"\n1. cached reads, {len(body)}-byte JSON body, {seconds:.0f} s per run")
        print("   conc   agent req/s   p50 ms   p99 ms |  bare req/s   p50 ms   p99 ms | ratio")
        for concurrency in (1, 16, 64):
            a_rps, a_lat = await load(str(agent.socket), concurrency, seconds)
            b_rps, b_lat = await load(str(bare_sock), concurrency, seconds)
            print(
                f"   {concurrency:4d} {a_rps:12.0f} {pct(a_lat, 0.5):8.2f} {pct(a_lat, 0.99):8.2f}"
                f" | {b_rps:10.0f} {pct(b_lat, 0.5):8.2f} {pct(b_lat, 0.99):8.2f}"
                f" | {a_rps / b_rps:5.2f}"
            )
    finally:
        bare.send_signal(signal.SIGTERM)
        bare.wait(10)


async def fetch_count(agent: AgentProcess) -> float:
    reader, writer = await asyncio.open_unix_connection(str(agent.socket))
    _, body = await http_exchange(reader, writer, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    writer.close()
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("secretd_backend_calls_total{") and 'op="fetch"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def bench_cold(agent: AgentProcess) -> None:
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


def api_put(store: Store, name: str, value: bytes) -> str:
    """The same write `secretd store put` does, without the CLI's interpreter start-up."""
    from secretd.model import SecretName
    from secretd.store.store import FileStore

    files = FileStore(store.root)
    return files.put(SecretName(name), value, files.keyring(store.key))


async def bench_propagation(
    agent: AgentProcess, store: Store, rotations: int, *, via_cli: bool
) -> None:
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


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fill_store(store: Store, count: int) -> None:
    from secretd.model import SecretName
    from secretd.store.store import FileStore

    files = FileStore(store.root)
    keyring = files.keyring(store.key)
    value = os.urandom(512).hex().encode()  # 1 KiB of text
    for i in range(count):
        files.put(SecretName(f"bulk/s{i:05d}"), value, keyring)


async def bench_rss(work: Path, count: int) -> None:
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
        print(f"   idle:                      {rss_kib(agent.proc.pid) / 1024:7.1f} MiB")
        names = [f"bulk/s{i:05d}" for i in range(count)]

        async def reader_task(chunk: list[str]) -> None:
            reader, writer = await asyncio.open_unix_connection(str(agent.socket))
            for name in chunk:
                await http_exchange(
                    reader, writer, f"GET /v1/secrets/{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                )
            writer.close()

        await asyncio.gather(*(reader_task(names[i::32]) for i in range(32)))
        print(f"   with {count} cached 1 KiB:   {rss_kib(agent.proc.pid) / 1024:7.1f} MiB")
    finally:
        agent.stop()
        subprocess.run(["rm", "-rf", str(directory)], check=False)


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
    await agent.wait_ready()
    return agent


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="sdb", dir="/tmp"))
    print(f"secretd API bench: {BIN}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    store = Store.create(work)
    store.put("app/bench", b'{"user": "bench", "password": "' + b"x" * 64 + b'"}')
    store.put("app/cold", b"cold")
    agent = await start(work, store, cache='idle_evict = "1h"\n', audit=not args.no_audit)
    print(f"audit log: {'off' if args.no_audit else 'on (every read is one JSON line)'}")
    try:
        await bench_throughput(agent, work, args.seconds)
        await bench_cold(agent)
        await bench_propagation(agent, store, args.rotations, via_cli=True)
        await bench_propagation(agent, store, args.rotations, via_cli=False)
    finally:
        agent.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    if args.secrets:
        await bench_rss(work, args.secrets)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--secrets", type=int, default=10000)
    parser.add_argument("--rotations", type=int, default=30)
    parser.add_argument("--no-audit", action="store_true", help="run the agent without audit_log")
    uvloop.run(main(parser.parse_args()))
