"""Access-path benchmark: prints figures, asserts nothing (not collected by pytest).

    .venv/bin/python -m tests.bench.bench_access

The per-request and per-connection costs the security plumbing adds:

1. `Policy.allows` with 1, 50 and 500 rules (the matching rule last): for a
   caller seen before, and for a new connection (its rules picked afresh).
2. `peer_caller` on a connected Unix socket (SO_PEERCRED, SO_PEERGROUPS,
   SO_PEERPIDFD, two /proc reads): paid once per connection.
3. `AuditLog.record` to a file (one write(2) per line) and `Metrics.read`.
"""

from __future__ import annotations

import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from secretd.access.identity import peer_caller
from secretd.access.policy import Policy
from secretd.audit import AuditLog
from secretd.config.schema import AllowRule
from secretd.metrics import Metrics
from secretd.model import Caller, SecretName

ROUNDS = 7


def per_call_us(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """Median and best microseconds per call over ROUNDS rounds of `calls` calls."""
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(rounds), min(rounds)


def policy_figures() -> None:
    caller = Caller(uid=1001, gid=1001, pid=1, unit="app.service")
    name = SecretName("team/app/db/password")
    for count in (1, 50, 500):
        others = [
            AllowRule(
                secrets=(f"other{i}/*", f"x{i}/**"), uids=(5000 + i,), units=(f"s{i}.service",)
            )
            for i in range(count - 1)
        ]
        policy = Policy([*others, AllowRule(secrets=("team/**",), units=("app.service",))])
        assert policy.allows(caller, name)
        median, best = per_call_us(lambda p=policy: p.allows(caller, name), 20_000)
        print(f"Policy.allows, {count:>3} rules, known caller: {median:8.2f} us (best {best:.2f})")
        pids = iter(range(2, 10**9))  # a new connection each time: rules picked afresh

        def first(p: Policy = policy, fresh: Iterator[int] = pids) -> bool:
            return p.allows(Caller(uid=1001, gid=1001, pid=next(fresh), unit="app.service"), name)

        median, best = per_call_us(first, 20_000 // count + 50)
        print(f"Policy.allows, {count:>3} rules, new caller:   {median:8.2f} us (best {best:.2f})")


def identity_figures() -> None:
    left, right = socket.socketpair()
    with left, right:
        median, best = per_call_us(lambda: peer_caller(left), 2_000)
    print(f"peer_caller per connection:             {median:8.2f} us (best {best:.2f})")


def audit_and_metrics_figures() -> None:
    with tempfile.TemporaryDirectory(prefix="sdb-") as directory:
        audit = AuditLog.open(str(Path(directory) / "audit.jsonl"))
        caller = Caller(uid=1001, gid=1001, pid=4242, unit="app.service")
        median, best = per_call_us(
            lambda: audit.record(
                "read", secret="db/app", version_id="v1", caller=caller, result="ok"
            ),
            5_000,
        )
        audit.close()
    print(f"AuditLog.record (file):                 {median:8.2f} us (best {best:.2f})")
    metrics = Metrics()
    median, best = per_call_us(lambda: metrics.read("ok"), 20_000)
    print(f"Metrics.read:                           {median:8.2f} us (best {best:.2f})")


def main() -> None:
    policy_figures()
    identity_figures()
    audit_and_metrics_figures()


if __name__ == "__main__":
    main()
