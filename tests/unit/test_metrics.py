"""Metrics: exposition parses, names and labels are what the docs say, no leaks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from secretd.metrics import Metrics
from secretd.model import SecretName, SecretValue

CANARY = "canary-metrics-4b1d"


@dataclass(frozen=True)
class Entry:
    name: SecretName
    age_seconds: float
    pinned: bool


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode("utf-8")
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


def test_registry_is_private() -> None:
    first, second = Metrics(), Metrics()
    first.read("ok")
    assert ("secretd_reads_total", (("result", "ok"),)) not in samples(second)


def test_an_injected_registry_is_used() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.read("ok")
    assert registry.get_sample_value("secretd_reads_total", {"result": "ok"}) == 1.0


def test_reads_by_result_with_unknown_results_folded_into_other() -> None:
    metrics = Metrics()
    for result in ("ok", "ok", "stale", "forbidden", "not_found", "rate_limited", CANARY):
        metrics.read(result)
    assert value(metrics, "secretd_reads_total", result="ok") == 2
    assert value(metrics, "secretd_reads_total", result="forbidden") == 1
    assert value(metrics, "secretd_reads_total", result="stale") == 1
    assert value(metrics, "secretd_reads_total", result="other") == 1


def test_cache_lookups() -> None:
    metrics = Metrics()
    for result in ("hit", "hit", "miss", "stale", "negative", "bogus"):
        metrics.cache_lookup(result)
    assert value(metrics, "secretd_cache_lookups_total", result="hit") == 2
    assert value(metrics, "secretd_cache_lookups_total", result="other") == 1


def test_backend_calls_and_latency() -> None:
    metrics = Metrics()
    metrics.backend_call("local", "fetch", 0.003, True)
    metrics.backend_call("local", "fetch", 0.2, False)
    metrics.backend_call("vault", "versions", 1.5, True)
    metrics.backend_call("weird name with spaces", "drop-table", -1.0, True)
    assert value(metrics, "secretd_backend_calls_total", backend="local", op="fetch", result="ok")
    assert value(
        metrics, "secretd_backend_calls_total", backend="local", op="fetch", result="error"
    )
    count = value(metrics, "secretd_backend_call_seconds_count", backend="local", op="fetch")
    assert count == 2
    bucket = value(
        metrics, "secretd_backend_call_seconds_bucket", backend="local", op="fetch", le="0.005"
    )
    assert bucket == 1
    assert value(metrics, "secretd_backend_calls_total", backend="other", op="other", result="ok")
    assert value(metrics, "secretd_backend_call_seconds_sum", backend="other", op="other") == 0


def test_refreshes_renders_connections() -> None:
    metrics = Metrics()
    metrics.secret_refreshed(SecretName("db/app"), "local", "v2", "changed")
    metrics.secret_refreshed(SecretName("db/app"), "local", None, "error")
    metrics.render("/run/app.conf", "written")
    metrics.render("/run/app.conf", "unchanged")
    metrics.render("/run/app.conf", "error")
    metrics.connection_opened()
    metrics.connection_opened()
    metrics.connection_closed()
    assert value(metrics, "secretd_refreshes_total", backend="local", result="changed") == 1
    assert value(metrics, "secretd_refreshes_total", backend="local", result="error") == 1
    assert value(metrics, "secretd_renders_total", result="error") == 1
    assert value(metrics, "secretd_renders_total", result="written") == 1
    assert value(metrics, "secretd_connections_open") == 1
    assert value(metrics, "secretd_connections_total") == 2


def test_secret_ages_label_only_pinned_names() -> None:
    metrics = Metrics()
    metrics.set_secret_ages(
        [
            Entry(SecretName("db/app"), 12.5, True),
            Entry(SecretName("probe/" + CANARY), 99.0, False),
        ]
    )
    assert value(metrics, "secretd_secret_age_seconds", secret="db/app") == 12.5
    assert value(metrics, "secretd_secret_age_max_seconds") == 99.0
    assert value(metrics, "secretd_cached_secrets") == 2
    assert CANARY not in metrics.exposition().decode()


def test_secret_ages_replace_the_previous_snapshot() -> None:
    metrics = Metrics()
    metrics.set_secret_ages([Entry(SecretName("db/old"), 1.0, True)])
    metrics.set_secret_ages([Entry(SecretName("db/new"), 2.0, True)])
    text = metrics.exposition().decode()
    assert "db/old" not in text
    assert value(metrics, "secretd_secret_age_seconds", secret="db/new") == 2.0
    metrics.set_secret_ages([])
    assert value(metrics, "secretd_cached_secrets") == 0
    assert value(metrics, "secretd_secret_age_max_seconds") == 0


def test_hardening_features() -> None:
    metrics = Metrics()
    metrics.set_hardening({"non_dumpable": True, "no_core": False, "mlock": None})
    assert value(metrics, "secretd_hardening", feature="non_dumpable") == 1
    assert value(metrics, "secretd_hardening", feature="no_core") == 0
    assert ("secretd_hardening", (("feature", "mlock"),)) not in samples(metrics)


@pytest.mark.parametrize("bad", [SecretValue(CANARY.encode()), CANARY.encode(), 3])
def test_labels_refuse_anything_but_text(bad: object) -> None:
    metrics = Metrics()
    with pytest.raises(TypeError):
        metrics.read(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        metrics.backend_call(bad, "fetch", 0.1, True)  # type: ignore[arg-type]
    assert CANARY not in metrics.exposition().decode()


def test_exposition_never_contains_a_canary_from_any_entry_point() -> None:
    metrics = Metrics()
    secret_name = SecretName("probe/" + CANARY)
    metrics.read(CANARY)
    metrics.cache_lookup(CANARY)
    metrics.backend_call(CANARY, CANARY, 0.1, False)
    metrics.secret_refreshed(secret_name, CANARY, CANARY, CANARY)
    metrics.render(CANARY, CANARY)
    metrics.set_secret_ages([Entry(secret_name, 3.0, False)])
    text = metrics.exposition().decode()
    list(text_string_to_metric_families(text))  # still parses
    # Backend names are config keys and may be labels; a canary-shaped one that is a
    # plain identifier would appear, so this checks the folding of everything else.
    assert text.count(CANARY) == text.count(f'backend="{CANARY}"')
    assert "probe/" not in text


def test_audit_lost_lines_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    lost = [0]
    metrics.track_audit_failures(lambda: lost[0])
    assert value(metrics, "secretd_audit_lost_lines") == 0
    lost[0] = 3
    assert value(metrics, "secretd_audit_lost_lines") == 3


def test_request_counters_are_exposed_as_counters_are() -> None:
    metrics = Metrics()
    for result in ("ok", "ok", "forbidden"):
        metrics.read(result)
    metrics.cache_lookup("hit")
    families = {
        f.name: f for f in text_string_to_metric_families(metrics.exposition().decode("utf-8"))
    }
    assert families["secretd_reads"].type == "counter"
    assert families["secretd_cache_lookups"].type == "counter"
    created = {s.labels["result"] for s in families["secretd_reads_created"].samples}
    assert created == {"ok", "forbidden"}  # as a labelled Counter has them
    assert value(metrics, "secretd_reads_total", result="ok") == 2


def test_a_label_that_is_not_text_is_refused_as_before() -> None:
    metrics = Metrics()
    with pytest.raises(TypeError):
        metrics.read(SecretValue(CANARY.encode()))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        metrics.cache_lookup(5)  # type: ignore[arg-type]
