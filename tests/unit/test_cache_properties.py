"""Property: whatever a hostile or flaky backend does (rotations, roll-backs,
outages, deletions, answers for another secret), in any order, the cache never
serves a version older than one it served before, never serves a value that
was not current at the backend, and announces versions only moving forward."""

from __future__ import annotations

import asyncio

from hypothesis import example, given, settings
from hypothesis import strategies as st

from secretd.errors import BackendUnavailable, BadBackendAnswer, NotFound
from secretd.model import Fetched, SecretName
from tests.fakes.cache_rig import make_rig

DB = SecretName("db/app")
# Moves and checks are listed twice: sequences where a version moves and is then
# rolled back and re-checked are the interesting ones.
OPERATIONS = [
    "put", "put", "rollback", "rollback", "fail", "heal", "tamper", "untamper", "delete",
    "poll", "poll", "watch", "watch", "tick", "read", "refresh", "refresh",
]  # fmt: skip


async def scenario(ops: list[str]) -> None:
    rig = make_rig(refresh_interval="1m", max_stale="10m", negative_ttl="1s")
    backend = rig.backend
    refresher = rig.refresher()
    ever_current: set[bytes] = set()
    alive: list[str] = []  # version ids the backend holds, oldest first
    served: list[int] = []

    def put() -> None:
        version_id = backend.put(DB, f"value-{len(ever_current)}")
        ever_current.add(f"value-{len(ever_current)}".encode())
        alive.append(version_id)

    put()
    async with rig.hub.subscribe() as sub:
        for op in ops:
            if op == "put":
                put()
            elif op == "rollback" and len(alive) > 1:
                backend.promote(DB, alive[-2])  # an older version becomes current again
            elif op == "fail":
                backend.fail = BackendUnavailable("down")
            elif op == "heal":
                backend.fail = None
            elif op == "tamper":
                backend.tamper = lambda f: Fetched(SecretName("db/other"), f.version)
            elif op == "untamper":
                backend.tamper = None
            elif op == "delete":
                backend.delete(DB)
                alive.clear()
            elif op == "poll":
                rig.clock.advance(61)
                await refresher.poll_once()
            elif op == "watch":
                await rig.cache.refresh_target.on_change("memory", "db/app")
            elif op == "tick":
                rig.clock.advance(30)
            elif op in ("read", "refresh"):
                try:
                    got = await rig.cache.read(DB, refresh=op == "refresh")
                except (NotFound, BackendUnavailable, BadBackendAnswer):
                    continue
                assert got.version.value.reveal() in ever_current
                assert not served or int(got.version.version_id) >= served[-1]
                served.append(int(got.version.version_id))
        announced = [int(e.version_id) for e in sub.drain() if e.version_id is not None]
    assert announced == sorted(set(announced))  # strictly forward, each version once


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(OPERATIONS), max_size=40))
@example(["read", "put", "refresh", "rollback", "refresh", "read"])
@example(["put", "poll", "rollback", "watch", "read"])
@example(["put", "watch", "tamper", "put", "watch", "read", "untamper", "poll", "read"])
def test_the_cache_never_serves_backwards_or_unknown_values(ops: list[str]) -> None:
    asyncio.run(scenario(ops))
