"""Replicas of one backend: which endpoint serves, when to move off it, when to come back.

A Vault/OpenBao backend with several `address`es, or an AWS backend with
several `regions`, has one `Replicas`. The backend asks it where to send each
call and reports how the call went; the policy (docs/vault.md, docs/aws.md):

- the **first** endpoint (the primary) serves until a call on it fails with an
  outage - a connection error, a timeout, a 5xx answer; the backend decides
  which failures are outages, and never counts a 4xx answer (permission, not
  found) or throttling as one;
- the serving endpoint is **stuck to**: calls go to it first, then to the
  others in the configured order (`order()`); an outage on the serving one
  moves every later call to the next one (`failed()`: a failover, counted and
  logged as `backend.failed_over`);
- while a replica serves, `run()` probes the primary every `probe_every`; once
  the primary has answered every probe for `failback_after` (one failed probe
  starts that count again) it serves again (`backend.failed_back`).

A backend with replicas exposes them as its `replicas` attribute: health,
`secretd status` and the failover metric read it from there (cache/gateway.py).
All state lives on the event loop; `run()` is the backend's supervised task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from secretd.clock import Clock

log = structlog.get_logger(__name__)

# Probes of the primary per `failback_after`, and their bounds (seconds).
PROBES_PER_FAILBACK = 6
MIN_PROBE_EVERY = 0.2
MAX_PROBE_EVERY = 10.0

Probe = Callable[[int], Awaitable[bool]]


class Replicas:
    """The endpoints of one backend and the one serving now; see the module docstring."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        backend: str,
        failback_after: float,
        clock: Clock,
    ) -> None:
        if not endpoints:
            raise ValueError("a backend needs at least one endpoint")
        self.endpoints = tuple(endpoints)
        self._backend = backend
        self.failback_after = failback_after
        self.probe_every = min(
            max(failback_after / PROBES_PER_FAILBACK, MIN_PROBE_EVERY), MAX_PROBE_EVERY
        )
        self._clock = clock
        self.serving = 0
        self.failovers = 0
        self._off_primary = asyncio.Event()

    @property
    def several(self) -> bool:
        return len(self.endpoints) > 1

    @property
    def endpoint(self) -> str:
        """The endpoint serving now."""
        return self.endpoints[self.serving]

    @property
    def on_primary(self) -> bool:
        return self.serving == 0

    def order(self) -> list[int]:
        """Where to try one call: the serving endpoint, then the others in order."""
        count = len(self.endpoints)
        return [(self.serving + step) % count for step in range(count)]

    def failed(self, index: int, reason: str) -> None:
        """A call on endpoint `index` met an outage: if it serves, the next one does."""
        if index != self.serving or not self.several:
            return
        self.serving = (index + 1) % len(self.endpoints)
        self.failovers += 1
        log.warning(
            "backend.failed_over",
            backend=self._backend,
            failed=self.endpoints[index],
            serving=self.endpoint,
            reason=reason,
        )
        if self.serving == 0:
            self._off_primary.clear()
        else:
            self._off_primary.set()

    async def run(self, probe: Probe) -> None:
        """Take the primary back once it has answered `probe` for `failback_after`.
        Runs until cancelled (returns at once with a single endpoint)."""
        if not self.several:
            return
        while True:
            await self._off_primary.wait()
            await self._watch_primary(probe)

    async def _watch_primary(self, probe: Probe) -> None:
        healthy_since: float | None = None
        while self.serving != 0:
            await self._clock.sleep(self.probe_every)
            try:
                answered = await probe(0)
            except Exception as exc:  # a probe is a best effort: a bug is a failed probe
                log.warning("backend.probe_failed", backend=self._backend, error=type(exc).__name__)
                answered = False
            now = self._clock.monotonic()
            if not answered:
                healthy_since = None
                continue
            if healthy_since is None:
                healthy_since = now
            if now - healthy_since >= self.failback_after and self.serving != 0:
                log.info(
                    "backend.failed_back",
                    backend=self._backend,
                    serving=self.endpoints[0],
                    replaced=self.endpoint,
                    healthy_for=round(now - healthy_since, 1),
                )
                self.serving = 0
                self._off_primary.clear()
