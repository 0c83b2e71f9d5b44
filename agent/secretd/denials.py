"""Which denials get their own audit line, and what the rest add up to.

Any local user can ask for names it may not read as fast as the socket
answers (or pose as systemd asking for a credential); one audit line per
denial let it fill the log disk (20,000 denials were 3.1 MB in under two
seconds). `LIMITED` names those denials. So each caller - a uid; all TCP callers
together; the agent itself - has a token bucket: a burst of `DENY_BURST`
individual lines, refilled by one every `DENY_REFILL_SECONDS`. A denial
beyond that is counted into the caller's `Suppressed` record, which the audit
log writes as one summary line (docs/security.md) when the summary interval
ends or the log is closed. The answer (403) and the metrics are never
affected: only the number of audit lines is bounded - per caller, at most
`DENY_BURST` + 1 in the first summary interval, then about
`DENY_SUMMARY_SECONDS / DENY_REFILL_SECONDS` + 1 per interval (11, then 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secretd.clock import Clock
from secretd.model import Caller, rfc3339

DENY_BURST = 10  # individual deny lines a caller may cause at once
DENY_REFILL_SECONDS = 10.0  # then one more per this many seconds
DENY_SUMMARY_SECONDS = 60.0  # how long suppressed denials wait for their summary line
DENY_MAX_CALLERS = 4096  # buckets kept at once (beyond: idle ones dropped, else all reset)
DENY_MAX_NAMES = 32  # distinct names counted per summary


# (event, result) pairs that are denials any local user can cause at will: a
# forbidden read, and a credential request from a peer that is not root.
LIMITED = frozenset({("deny", "deny"), ("credential", "forbidden_peer")})


@dataclass
class Suppressed:
    """One caller's denials of one kind held back since its last summary."""

    event: str
    result: str  # the held lines' result; the summary says f"{result}_suppressed"
    caller: Caller | None  # as the summary shows it: uid and gid, no pid or unit
    first: str  # RFC 3339 of the first and last held back
    last: str
    count: int = 0
    names: set[str] = field(default_factory=set)


class DenyLimiter:
    """Per-caller token buckets deciding which denials get their own audit line."""

    def __init__(
        self,
        clock: Clock,
        *,
        burst: int = DENY_BURST,
        refill_seconds: float = DENY_REFILL_SECONDS,
        max_callers: int = DENY_MAX_CALLERS,
    ) -> None:
        self._clock = clock
        self._burst = burst
        self._refill = refill_seconds
        self._max_callers = max_callers
        self._buckets: dict[tuple[object, ...], tuple[float, float]] = {}  # tokens, at
        self._held: dict[tuple[object, ...], Suppressed] = {}

    def admit(self, event: str, result: str, caller: Caller | None, name: str | None) -> bool:
        """True: write this line (always, for anything but a LIMITED denial).
        False: it was counted into a summary."""
        if (event, result) not in LIMITED:
            return True
        key = (event, *_caller_key(caller))
        held = self._held.get(key)
        if held is None and self._take(key):
            return True
        now = rfc3339(self._clock.now())
        if held is None:
            summary_caller = _summary_caller(caller)
            held = Suppressed(event, result, summary_caller, first=now, last=now)
            self._held[key] = held
        held.count += 1
        held.last = now
        if name is not None and len(held.names) < DENY_MAX_NAMES:
            held.names.add(name)
        return False

    def tracked(self) -> int:
        """How many callers' buckets are remembered (bounded by `max_callers`)."""
        return len(self._buckets)

    def drain(self) -> list[Suppressed]:
        """Every summary held, oldest caller first; the buckets keep their state."""
        held, self._held = list(self._held.values()), {}
        return held

    def _take(self, key: tuple[object, ...]) -> bool:
        now = self._clock.monotonic()
        tokens, at = self._buckets.get(key, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - at) / self._refill)
        if key not in self._buckets and len(self._buckets) >= self._max_callers:
            self._forget_idle(now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def _forget_idle(self, now: float) -> None:
        """Drop callers whose bucket is full again; if none is, start over."""
        full = float(self._burst)
        self._buckets = {
            key: (tokens, at)
            for key, (tokens, at) in self._buckets.items()
            if key in self._held or tokens + (now - at) / self._refill < full
        }
        if len(self._buckets) >= self._max_callers:
            self._buckets.clear()


def _caller_key(caller: Caller | None) -> tuple[object, ...]:
    if caller is None:
        return ("agent",)
    if caller.tcp:
        return ("tcp",)
    return ("uid", caller.uid)


def _summary_caller(caller: Caller | None) -> Caller | None:
    if caller is None or caller.tcp:
        return caller
    return Caller(uid=caller.uid, gid=caller.gid)
