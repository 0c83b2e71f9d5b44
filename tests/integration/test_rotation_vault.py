"""Rotation of Vault/OpenBao KV v2 secrets against a real `bao server -dev`
(backends/vault_write.py): the pending value waits at a staging path written
with cas=0, readers of `current` never see it before `finish`, promotion is a
check-and-set on the version it was staged against, and two hosts cannot
both rotate."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from secretd.backends.vault import VaultBackend
from secretd.model import SecretName
from secretd.rotation.errors import RotationError
from tests.fakes.rotation_target import (
    FakeService,
    RecordingRotator,
    backend_rotation,
    start_blocked,
)
from tests.servers.bao_server import BaoServer, bao_server, vault_backend

__all__ = ["bao_server", "vault_backend"]

pytestmark = pytest.mark.vault


def staged(bao_server: BaoServer, path: str) -> dict[str, object] | None:
    answer = bao_server.api("GET", f"secret/data/secretd-pending/{path}", ok=(200, 404))
    data = answer.get("data")
    return data["data"] if isinstance(data, dict) else None


def versions(bao_server: BaoServer, path: str) -> dict[str, object]:
    meta = bao_server.api("GET", f"secret/metadata/{path}")["data"]
    return {"current": meta["current_version"], "count": len(meta["versions"])}


async def test_readers_see_pending_only_after_finish_and_previous_follows(
    bao_server: BaoServer, vault_backend: VaultBackend, tmp_path: Path
) -> None:
    bao_server.kv_put("rot/a", {"key": "v0"})
    rotator = RecordingRotator(FakeService(), as_json=True)
    running, audit = await start_blocked(
        vault_backend, "rot/a", rotator, tmp_path / "host", at="test"
    )

    current = await vault_backend.fetch(SecretName("rot/a"))
    assert (current.version.version_id, json.loads(current.version.value.reveal())) == (
        "1",
        {"key": "v0"},
    )
    held = staged(bao_server, "rot/a")
    assert held is not None and held["value"] == {"key": "v1"} and held["base"] == "1"

    rotator.unblock.set()
    outcome = await asyncio.wait_for(running, 15)
    assert outcome.version_id == "2"
    current = await vault_backend.fetch(SecretName("rot/a"))
    previous = await vault_backend.fetch(SecretName("rot/a"), stage="previous")
    assert json.loads(current.version.value.reveal()) == {"key": "v1"}
    assert previous.version.version_id == "1"
    assert staged(bao_server, "rot/a") is None  # the staging path is gone
    assert [line["version_id"] for line in audit.lines][-1] == held["token"]


async def test_two_hosts_cannot_both_rotate(
    bao_server: BaoServer, vault_backend: VaultBackend, tmp_path: Path
) -> None:
    bao_server.kv_put("rot/b", {"key": "v0"})
    service = FakeService()
    first = RecordingRotator(service, prefix="first-", as_json=True)
    second = RecordingRotator(service, prefix="second-", as_json=True)
    running, _ = await start_blocked(vault_backend, "rot/b", first, tmp_path / "a", at="set")
    host_b, _ = backend_rotation(vault_backend, "rot/b", second, tmp_path / "b")
    # Host B starts while A's value is staged: its own value is never staged;
    # it finds A's and finishes that rotation instead.
    outcome_b = await asyncio.wait_for(host_b.run(), 15)
    assert outcome_b.resumed
    assert [(step, value) for step, value in second.calls if step != "create"] == [
        ("set", b'{"key":"first-1"}'),
        ("test", b'{"key":"first-1"}'),
    ]
    first.unblock.set()
    outcome_a = await asyncio.wait_for(running, 15)
    assert outcome_a.version_id == outcome_b.version_id == "2"
    assert versions(bao_server, "rot/b") == {"current": 2, "count": 2}  # one rotation, not two
    current = await vault_backend.fetch(SecretName("rot/b"))
    assert json.loads(current.version.value.reveal()) == {"key": "first-1"}
    assert staged(bao_server, "rot/b") is None


async def test_a_write_during_the_rotation_wins_over_finish(
    bao_server: BaoServer, vault_backend: VaultBackend, tmp_path: Path
) -> None:
    bao_server.kv_put("rot/c", {"key": "v0"})
    rotator = RecordingRotator(FakeService(), as_json=True)
    running, _ = await start_blocked(vault_backend, "rot/c", rotator, tmp_path / "host", at="test")
    bao_server.kv_put("rot/c", {"key": "from-the-operator"})
    rotator.unblock.set()
    with pytest.raises(RotationError, match=r"at step finish: .*was written"):
        await asyncio.wait_for(running, 15)
    current = await vault_backend.fetch(SecretName("rot/c"))
    assert json.loads(current.version.value.reveal()) == {"key": "from-the-operator"}
    assert versions(bao_server, "rot/c") == {"current": 2, "count": 2}


async def test_a_value_that_is_no_kv_map_is_refused(
    bao_server: BaoServer, vault_backend: VaultBackend, tmp_path: Path
) -> None:
    bao_server.kv_put("rot/d", {"key": "v0"})
    rotation, _ = backend_rotation(
        vault_backend, "rot/d", RecordingRotator(FakeService()), tmp_path / "host"
    )
    with pytest.raises(RotationError, match="a KV value is a JSON object"):
        await rotation.run()
    assert versions(bao_server, "rot/d") == {"current": 1, "count": 1}
    assert staged(bao_server, "rot/d") is None
