"""Prometheus metrics on a private registry (served at `GET /metrics`).

Metrics never carry a value, and names only where the operator already wrote
them down:

    secretd_reads_total{result}                      API reads: ok, stale, or an error code
    secretd_cache_lookups_total{result}              hit, miss, stale, negative
    secretd_backend_calls_total{backend,op,result}   op: fetch|versions|list; result: ok|error
    secretd_backend_call_seconds{backend,op}         histogram
    secretd_refreshes_total{backend,result}          changed, unchanged, error, not_found
    secretd_renders_total{result}                    written, unchanged, error
    secretd_connections_open                         open API connections (gauge)
    secretd_connections_total                        accepted API connections
    secretd_cached_secrets                           cache entries
    secretd_secret_age_max_seconds                   the oldest cached secret's age
    secretd_secret_age_seconds{secret}               per secret, declared/used (pinned) ones only
    secretd_hardening{feature}                       1 when a hardening step worked, else 0
    secretd_audit_lost_lines                         audit lines lost to write errors
    secretd_rotations_total{result}                  whole rotations: done, failed
    secretd_rotation_steps_total{step,result}        step: create|set|test|finish; result: ok,
                                                     failed, resumed, dropped
    secretd_secret_last_read_timestamp_seconds{secret}  per declared/used (pinned) secret: its
                                                     last read (epoch; 0: never read)
    secretd_backend_failovers_total{backend}         moves off a failed replica (Vault address,
                                                     AWS region) since the backend was opened

Per-secret labels are limited to pinned names (declared in the config or used
by a template or credential): a name somebody merely asked for - perhaps one
they were denied, perhaps a probe - must not become a label anyone who can
scrape /metrics can read, and must not grow the label set without bound.
Every label value is checked against a fixed vocabulary (results, ops) or a
plain-identifier pattern (backend names); anything else is counted as "other".
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from secretd.errors import SecretdError
from secretd.model import SecretName, name_problem

__all__ = ["CONTENT_TYPE", "AgedEntry", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
OTHER = "other"
LOOKUP_RESULTS = frozenset({"hit", "miss", "stale", "negative"})
BACKEND_OPS = frozenset({"fetch", "versions", "list"})
REFRESH_RESULTS = frozenset({"changed", "unchanged", "error", "not_found"})
RENDER_RESULTS = frozenset({"written", "ok", "unchanged", "error"})
ROTATION_RESULTS = frozenset({"done", "failed"})
ROTATION_STEPS = frozenset({"create", "set", "test", "finish"})
STEP_RESULTS = frozenset({"ok", "failed", "resumed", "dropped"})
_PLAIN_LABEL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AgedEntry(Protocol):
    """What `set_secret_ages` needs of a cache entry (cache.entries.EntryInfo fits)."""

    @property
    def name(self) -> SecretName: ...

    @property
    def age_seconds(self) -> float: ...

    @property
    def pinned(self) -> bool: ...


def _error_codes() -> frozenset[str]:
    codes: set[str] = set()
    pending: list[type[SecretdError]] = [SecretdError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return frozenset(codes)


def _label(value: object, allowed: frozenset[str] | None = None) -> str:
    """A safe label value: from `allowed` when given, else a plain identifier."""
    if type(value) is not str:
        raise TypeError(f"a metric label must be str, not {type(value).__name__}")
    if allowed is not None:
        return value if value in allowed else OTHER
    return value if _PLAIN_LABEL.fullmatch(value) else OTHER


class Tally:
    """A counter with one label, counted in plain integers and exported by
    `collect()` when the registry is scraped, as a `Counter` would be
    (`<name>_total` and `<name>_created` per label value).

    For what is counted on every request: a `Counter` takes a lock for each
    increment. Counting happens on the event loop, as does the scrape."""

    def __init__(self, name: str, documentation: str, label: str, allowed: frozenset[str]) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self._allowed = allowed
        self._counts: dict[str, int] = {}  # only checked label values are keys
        self._created: dict[str, float] = {}

    def add(self, value: str) -> None:
        """Count one `value` (anything outside the vocabulary counts as "other")."""
        counts = self._counts
        if type(value) is str and value in counts:
            counts[value] += 1
            return
        label = _label(value, self._allowed)
        if label not in counts:
            counts[label] = 0
            self._created[label] = time.time()
        counts[label] += 1

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self._name, self._documentation, labels=[self._label])]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, count in list(self._counts.items()):
            family.add_metric([value], count, created=self._created[value])
        yield family


class Metrics:
    """The agent's metrics; implements observe.CacheObserver."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._read_results = frozenset({"ok", "stale"}) | _error_codes()
        reg = self.registry
        # Counted once per request: plain integers, read at scrape time.
        self._reads = Tally("secretd_reads", "API secret reads", "result", self._read_results)
        self._lookups = Tally("secretd_cache_lookups", "Cache lookups", "result", LOOKUP_RESULTS)
        reg.register(self._reads)
        reg.register(self._lookups)
        self._backend_calls = Counter(
            "secretd_backend_calls", "Backend calls", ["backend", "op", "result"], registry=reg
        )
        self._backend_seconds = Histogram(
            "secretd_backend_call_seconds",
            "Backend call latency",
            ["backend", "op"],
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self._refreshes = Counter(
            "secretd_refreshes", "Secret refreshes", ["backend", "result"], registry=reg
        )
        self._renders = Counter("secretd_renders", "Template renders", ["result"], registry=reg)
        # A gauge cannot share the family name `secretd_connections` with the
        # counter behind `secretd_connections_total`, hence `_open`.
        self._open = Gauge("secretd_connections_open", "Open API connections", registry=reg)
        self._accepted = Counter("secretd_connections", "Accepted API connections", registry=reg)
        self._init_cache_gauges(reg)
        self._rotations = Counter(
            "secretd_rotations", "Rotations run by secretd", ["result"], registry=reg
        )
        self._rotation_steps = Counter(
            "secretd_rotation_steps", "Rotation steps", ["step", "result"], registry=reg
        )
        self._last_read = Gauge(
            "secretd_secret_last_read_timestamp_seconds",
            "When each declared or used secret was last read (0: never)",
            ["secret"],
            registry=reg,
        )
        self._failovers = _FailoverCounts()
        reg.register(self._failovers)

    def _init_cache_gauges(self, reg: CollectorRegistry) -> None:
        self._entries = Gauge("secretd_cached_secrets", "Cached secrets", registry=reg)
        self._age_max = Gauge(
            "secretd_secret_age_max_seconds", "Age of the oldest cached secret", registry=reg
        )
        self._age = Gauge(
            "secretd_secret_age_seconds",
            "Age of each declared or used secret since its backend last confirmed it",
            ["secret"],
            registry=reg,
        )
        self._hardening = Gauge(
            "secretd_hardening",
            "Hardening steps that worked (1) or failed (0)",
            ["feature"],
            registry=reg,
        )

    # CacheObserver

    def cache_lookup(self, result: str) -> None:
        self._lookups.add(result)

    def backend_call(self, backend: str, op: str, seconds: float, ok: bool) -> None:
        backend_label, op_label = _label(backend), _label(op, BACKEND_OPS)
        outcome = "ok" if ok else "error"
        self._backend_calls.labels(backend_label, op_label, outcome).inc()
        self._backend_seconds.labels(backend_label, op_label).observe(max(0.0, float(seconds)))

    def secret_refreshed(
        self, name: SecretName, backend: str, version_id: str | None, result: str
    ) -> None:
        self._refreshes.labels(_label(backend), _label(result, REFRESH_RESULTS)).inc()

    # API, render and composition

    def read(self, result: str) -> None:
        """One API read ended with `result`: "ok", "stale" or an error `code`."""
        self._reads.add(result)

    def connection_opened(self) -> None:
        self._open.inc()
        self._accepted.inc()

    def connection_closed(self) -> None:
        self._open.dec()

    def render(self, template: str, result: str) -> None:
        """One render of `template` (its destination) ended with `result`.

        The template is not a label: health and `secretd status` say which one."""
        self._renders.labels(_label(result, RENDER_RESULTS)).inc()

    def rotation(self, result: str) -> None:
        """One whole rotation ended: "done" or "failed"."""
        self._rotations.labels(_label(result, ROTATION_RESULTS)).inc()

    def rotation_step(self, step: str, result: str) -> None:
        self._rotation_steps.labels(
            _label(step, ROTATION_STEPS), _label(result, STEP_RESULTS)
        ).inc()

    def set_secret_ages(self, entries: Iterable[AgedEntry]) -> None:
        """Replace the age gauges from a cache snapshot (call before `exposition`)."""
        self._age.clear()
        count, oldest = 0, 0.0
        for entry in entries:
            count += 1
            age = max(0.0, float(entry.age_seconds))
            oldest = max(oldest, age)
            if entry.pinned and name_problem(entry.name) is None:
                self._age.labels(str(entry.name)).set(age)
        self._entries.set(count)
        self._age_max.set(oldest)

    def set_last_reads(self, reads: Mapping[SecretName, float | None]) -> None:
        """Replace the last-read gauges: epoch seconds per pinned secret, None for never."""
        self._last_read.clear()
        for name, when in reads.items():
            if name_problem(name) is None:
                self._last_read.labels(str(name)).set(0.0 if when is None else float(when))

    def set_failovers(self, counts: Mapping[str, int]) -> None:
        """The failover count of each backend now (call before `exposition`)."""
        self._failovers.counts = {_label(name): int(count) for name, count in counts.items()}

    def set_hardening(self, features: Mapping[str, bool | None]) -> None:
        """Record which hardening steps worked; None (not attempted) is left out."""
        for feature, worked in features.items():
            if worked is not None:
                self._hardening.labels(_label(feature)).set(1 if worked else 0)

    def track_audit_failures(self, lost_lines: Callable[[], int]) -> None:
        """Expose `secretd_audit_lost_lines`, read at scrape time (audit.AuditLog.failed_writes).

        Call once per `Metrics`; across reloads pass a callable that reads the current log."""
        gauge = Gauge(
            "secretd_audit_lost_lines",
            "Audit lines lost to write errors since start",
            registry=self.registry,
        )
        gauge.set_function(lambda: float(lost_lines()))

    def exposition(self) -> bytes:
        """The Prometheus text format; serve it with `CONTENT_TYPE`."""
        return generate_latest(self.registry)


class _FailoverCounts(Collector):
    """`secretd_backend_failovers_total`: the backends keep the counts; the last
    `set_failovers` is what a scrape reports (a counter that restarts from 0
    when a reload replaces the backend, which Prometheus' rate() expects)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "secretd_backend_failovers",
            "Moves off a failed replica (Vault address or AWS region)",
            labels=["backend"],
        )
        for backend, count in sorted(self.counts.items()):
            family.add_metric([backend], float(count))
        yield family

    def describe(self) -> Iterable[CounterMetricFamily]:
        return self.collect()
