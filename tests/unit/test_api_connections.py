"""Connection admission by peer share (api.connections), without sockets."""

from __future__ import annotations

import socket

from secretd.api.connections import TCP_PEER, ConnectionLimits, ConnectionTracker
from secretd.model import Caller


class Observer:
    def connection_opened(self) -> None: ...

    def connection_closed(self) -> None: ...


def _no_identity(sock: socket.socket) -> Caller:
    raise AssertionError("not asked")


def tracker(max_connections: int, per_uid: int | None = None) -> ConnectionTracker:
    return ConnectionTracker(
        identify=_no_identity,
        observer=Observer(),
        max_connections=max_connections,
        per_uid=per_uid,
        privileged=frozenset({0, 990}),
    )


def admitted(t: ConnectionTracker, peer: int | str, tries: int) -> int:
    return sum(t.admit(peer) for _ in range(tries))


def test_defaults_a_quarter_each_and_a_sixteenth_reserved() -> None:
    limits = ConnectionLimits(1024)
    assert (limits.share, limits.reserve, limits.write_timeout) == (256, 64, 10.0)
    assert ConnectionLimits(1).share == 1 and ConnectionLimits(1).reserve == 0
    assert ConnectionLimits(64, per_uid=5).share == 5


def test_one_uid_gets_its_share_and_others_still_get_in() -> None:
    t = tracker(40)
    assert admitted(t, 1001, 50) == 10
    assert admitted(t, 1002, 1) == 1
    assert t.refused == 40


def test_tcp_is_one_peer() -> None:
    t = tracker(40)
    assert admitted(t, TCP_PEER, 50) == 10
    assert admitted(t, 1001, 1) == 1


def test_privileged_uids_have_no_share_and_keep_the_reserve() -> None:
    t = tracker(32, per_uid=32)
    assert admitted(t, 1001, 40) == 30  # all but the reserve (32 // 16)
    assert admitted(t, 1002, 1) == 0
    assert admitted(t, 0, 1) == 1
    assert admitted(t, 990, 5) == 1  # the agent's own uid: the last slot
    assert admitted(t, 0, 1) == 0


def test_release_frees_the_peer_slot() -> None:
    t = tracker(40)
    assert admitted(t, 1001, 10) == 10
    assert not t.admit(1001)
    t.release(1001)
    assert t.admit(1001)
    assert t.reserved == 10


def test_new_limits_apply_to_new_connections() -> None:
    t = tracker(40)
    assert admitted(t, 1001, 10) == 10
    t.limits = ConnectionLimits(80)
    assert admitted(t, 1001, 20) == 10
