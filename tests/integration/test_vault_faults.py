"""Faults a real server will not produce, injected by the fault proxy placed in
front of a real `bao server -dev`: latency, truncation, reset, blackhole,
throttling, error pages and hostile bodies. After each fault the backend
reads correctly again: nothing it learnt from a bad answer sticks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from secretd.backends.vault import VaultBackend, open_backend
from secretd.errors import BackendTimeout, BackendUnavailable, BadBackendAnswer
from secretd.model import SecretName
from tests.fakes.fault_proxy import Fault, FaultProxy, hostile_bodies
from tests.servers.bao_server import BaoServer, bao_server, vault_config

__all__ = ["bao_server"]

pytestmark = pytest.mark.vault

NAME = SecretName("faults/db")
MAX_SECRET = 4096


@pytest.fixture(scope="module")
def seeded(bao_server: BaoServer) -> BaoServer:
    bao_server.kv_put("faults/db", {"password": "old"})
    bao_server.kv_put("faults/db", {"password": "good"})
    return bao_server


@pytest.fixture
async def proxy(seeded: BaoServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", seeded.port) as fault_proxy:
        yield fault_proxy


async def open_via(
    proxy: FaultProxy, server: BaoServer, tmp_path: Path, **extra: object
) -> VaultBackend:
    """A backend through the proxy, logged in and warmed up, with `proxy.seen` emptied
    so that tests count only their own requests."""
    config = vault_config(server, tmp_path, address=proxy.url, **extra)
    vault = await open_backend("v", config, max_secret_bytes=MAX_SECRET)
    await vault.fetch(NAME)
    proxy.seen.clear()
    return vault


@pytest.fixture
async def backend(
    proxy: FaultProxy, seeded: BaoServer, tmp_path: Path
) -> AsyncIterator[VaultBackend]:
    vault = await open_via(proxy, seeded, tmp_path, timeout="1s")
    try:
        yield vault
    finally:
        await vault.aclose()


async def assert_reads_good(backend: VaultBackend, proxy: FaultProxy) -> None:
    proxy.clear()
    got = await backend.fetch(NAME)
    assert json.loads(got.version.value.reveal()) == {"password": "good"}
    assert got.version.version_id == "2"


async def test_a_clean_proxy_passes_reads_through(backend: VaultBackend, proxy: FaultProxy) -> None:
    await assert_reads_good(backend, proxy)
    assert proxy.count("/v1/secret/data/faults/db", "forward") == 1


async def test_latency_beyond_the_timeout_is_a_timeout(
    backend: VaultBackend, proxy: FaultProxy
) -> None:
    proxy.add(Fault.latency(30.0, match="/secret/"))
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        await backend.fetch(NAME)
    assert time.monotonic() - started < 15  # bounded by the 1 s timeout, not the 30 s fault
    await assert_reads_good(backend, proxy)


async def test_latency_within_the_timeout_is_fine(backend: VaultBackend, proxy: FaultProxy) -> None:
    proxy.add(Fault.latency(0.2, match="/secret/"))
    got = await backend.fetch(NAME)
    assert got.version.version_id == "2"


async def test_blackhole_is_a_timeout(backend: VaultBackend, proxy: FaultProxy) -> None:
    proxy.add(Fault.blackhole(match="/secret/"))
    with pytest.raises(BackendTimeout):
        await backend.fetch(NAME)
    await assert_reads_good(backend, proxy)


@pytest.mark.parametrize("fault", [Fault.truncate, Fault.reset])
async def test_truncation_and_reset_are_unavailable(
    backend: VaultBackend, proxy: FaultProxy, fault: type[Fault]
) -> None:
    proxy.add(fault(match="/secret/data/"))  # type: ignore[operator]
    with pytest.raises(BackendUnavailable):
        await backend.fetch(NAME)
    await assert_reads_good(backend, proxy)


async def test_429_retry_after_is_honoured(
    proxy: FaultProxy, seeded: BaoServer, tmp_path: Path
) -> None:
    vault = await open_via(proxy, seeded, tmp_path, timeout="5s")
    proxy.add(Fault.canned(429, b'{"errors":["slow down"]}', headers={"Retry-After": "1"}, times=1))
    try:
        got = await vault.fetch(NAME)
    finally:
        await vault.aclose()
    assert got.version.version_id == "2"
    throttled = [s for s in proxy.seen if s.action == "canned"]
    assert len(throttled) == 1
    retried = [s for s in proxy.seen if s.target == throttled[0].target and s.action == "forward"]
    assert len(retried) == 1
    assert retried[0].at - throttled[0].at >= 0.95


async def test_retry_after_beyond_the_deadline_fails_fast_and_holds_back_others(
    backend: VaultBackend, proxy: FaultProxy
) -> None:
    hold = Fault.canned(503, b"{}", headers={"Retry-After": "20"}, times=1, match="/metadata/")
    proxy.add(hold)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await backend.fetch(NAME)
    asked = len(proxy.seen)
    with pytest.raises(BackendUnavailable, match="Retry-After"):
        await backend.fetch(NAME)
    assert time.monotonic() - started < 10  # nowhere near the 20 s Retry-After
    assert len(proxy.seen) == asked  # the second read never reached the server


async def test_500_html_pages_are_retried_a_bounded_number_of_times(
    backend: VaultBackend, proxy: FaultProxy
) -> None:
    page = hostile_bodies()["html"]
    proxy.add(Fault.canned(500, page, content_type="text/html", match="/metadata/"))
    with pytest.raises(BackendUnavailable, match="500"):
        await backend.fetch(NAME)
    assert 2 <= proxy.count("/metadata/") <= 4
    await assert_reads_good(backend, proxy)


HOSTILE_REASONS = {
    "malformed": "not valid JSON",
    "html": "without a JSON body",
    "nan": "not valid JSON",
    "huge_number": "not valid JSON",  # 1e400 overflows a double: orjson refuses it
    "deep": "not valid JSON",  # 5000 levels: orjson's own 1024 limit refuses it
    "duplicate_keys": "duplicate key",
    "not_object": "not a JSON object",
    "huge": "cap",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_REASONS))
@pytest.mark.parametrize("endpoint", ["/metadata/", "/data/"])
async def test_hostile_200_bodies_are_bad_answers(
    backend: VaultBackend, proxy: FaultProxy, kind: str, endpoint: str
) -> None:
    content_type = "text/html" if kind == "html" else "application/json"
    body = hostile_bodies(256 * 1024)[kind]  # over the 80 KiB cap of a 4 KiB limit
    proxy.add(Fault.canned(200, body, content_type=content_type, match=endpoint))
    with pytest.raises(BadBackendAnswer, match=HOSTILE_REASONS[kind]) as caught:
        await backend.fetch(NAME)
    assert "good" not in str(caught.value)
    await assert_reads_good(backend, proxy)


# Real answers with one defect spliced in: everything else about them is right, so
# only the check aimed at that defect can refuse them.
SPLICES = [
    ("/metadata/", b'"current_version":2', b'"current_version":2,"current_version":1', "duplicate"),
    ("/data/", b'"password":"good"', b'"password":"good","password":"evil"', "duplicate"),
    ("/metadata/", b'"current_version":2', b'"current_version":NaN', "not valid JSON"),
    ("/data/", b'"password":"good"', b'"password":Infinity', "not valid JSON"),
    ("/metadata/", b'"current_version":2', b'"current_version":2' + b"0" * 60, "too long"),
    ("/data/", b'"password":"good"', b'"password":18446744073709551616', "64-bit"),
    ("/data/", b'"password":"good"', b'"password":1e999', "not valid JSON"),
    ("/data/", b'"password":"good"', b'"p":' + b"[" * 40 + b"]" * 40, "deeper"),
    ("/metadata/", b'"current_version":2', b'"current_version":"2"', "version number"),
    ("/metadata/", b'"destroyed":false', b'"destroyed":"no"', "boolean"),
    ("/data/", b'"version":2', b'"version":true', "version number"),
    ("/data/", b'"data":{"password"', b'"data":["password"', "not valid JSON"),
]


@pytest.mark.parametrize(("endpoint", "old", "new", "reason"), SPLICES)
async def test_a_single_defect_in_a_real_answer_is_refused(
    backend: VaultBackend, proxy: FaultProxy, endpoint: str, old: bytes, new: bytes, reason: str
) -> None:
    def splice(body: bytes) -> bytes:
        assert old in body, body[:200]
        return body.replace(old, new, 1)

    proxy.add(Fault.transform(splice, match=endpoint))
    with pytest.raises(BadBackendAnswer, match=reason):
        await backend.fetch(NAME)
    await assert_reads_good(backend, proxy)


async def test_an_oversized_body_is_cut_off_not_buffered(
    backend: VaultBackend, proxy: FaultProxy
) -> None:
    proxy.add(Fault.canned(200, hostile_bodies(32 * 1024 * 1024)["huge"], match="/data/"))
    with pytest.raises(BadBackendAnswer, match="cap"):
        await backend.fetch(NAME)


def swap(old: bytes, new: bytes) -> Fault:
    return Fault.transform(lambda body: body.replace(old, new), match="/data/")


async def test_an_answer_for_another_version_is_a_bad_answer(
    backend: VaultBackend, proxy: FaultProxy
) -> None:
    proxy.add(swap(b'"version":2', b'"version":1'))
    with pytest.raises(BadBackendAnswer, match="version"):
        await backend.fetch(NAME)
    await assert_reads_good(backend, proxy)


async def test_an_answer_from_another_secret_is_caught_by_created_time(
    backend: VaultBackend, proxy: FaultProxy, seeded: BaoServer
) -> None:
    seeded.kv_put("faults/other", {"password": "other"})
    seeded.kv_put("faults/other", {"password": "other"})
    other = seeded.api("GET", "secret/data/faults/other")
    body = json.dumps(other).encode()
    proxy.add(Fault.canned(200, body, match="/data/faults/db"))
    with pytest.raises(BadBackendAnswer, match="created_time"):
        await backend.fetch(NAME)


async def test_a_redirect_is_not_followed(backend: VaultBackend, proxy: FaultProxy) -> None:
    elsewhere = {"Location": "http://127.0.0.1:9/v1/secret"}
    proxy.add(Fault.canned(307, b"", headers=elsewhere, times=1, match="/metadata/"))
    with pytest.raises(BackendUnavailable, match="redirect"):
        await backend.fetch(NAME)
    assert proxy.count("/metadata/") == 1


async def test_a_compressed_answer_is_refused(backend: VaultBackend, proxy: FaultProxy) -> None:
    proxy.add(Fault.canned(200, b"\x1f\x8b\x08\x00", headers={"Content-Encoding": "gzip"}))
    with pytest.raises(BadBackendAnswer, match="Content-Encoding"):
        await backend.fetch(NAME)


async def test_a_dead_address_is_unavailable(seeded: BaoServer, tmp_path: Path) -> None:
    dead = FaultProxy("127.0.0.1", seeded.port)
    await dead.start()
    address = dead.url
    await dead.stop()
    config = vault_config(seeded, tmp_path, address=address, timeout="2s")
    vault = await open_backend("v", config, max_secret_bytes=MAX_SECRET)
    try:
        with pytest.raises(BackendUnavailable, match="connect"):
            await vault.fetch(NAME)
    finally:
        await vault.aclose()


async def test_concurrency_is_capped_per_backend(
    proxy: FaultProxy, seeded: BaoServer, tmp_path: Path
) -> None:
    proxy.add(Fault.latency(0.3, match="/metadata/"))
    vault = await open_via(proxy, seeded, tmp_path, max_concurrency=2, timeout="10s")
    try:
        names = [NAME] * 6
        await asyncio.gather(*(vault.current_versions([n]) for n in names))
    finally:
        await vault.aclose()
    starts = sorted(s.at for s in proxy.seen if "/metadata/" in s.target)
    assert len(starts) == 6
    # with two slots, the third request can only start once a 0.3 s one has finished
    assert starts[2] - starts[0] >= 0.25
    assert starts[4] - starts[2] >= 0.25


async def test_a_failing_version_check_raises_the_backend_error_itself(
    backend: VaultBackend, proxy: FaultProxy, seeded: BaoServer
) -> None:
    seeded.kv_put("faults/other", {"password": "x"})
    names = [NAME, SecretName("faults/other"), SecretName("faults/none")]
    assert set(await backend.current_versions(names)) == {NAME, SecretName("faults/other")}
    proxy.add(Fault.reset(match="/metadata/faults/other"))
    with pytest.raises(BackendUnavailable):
        await backend.current_versions(names)
