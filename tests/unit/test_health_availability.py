"""Health and metrics for the availability features: the endpoint serving each
backend (full view only), failovers and last reads exported, refused persisted
entries degrading health. Through HealthRoutes over the fakes in tests/fakes/."""

from __future__ import annotations

from secretd.api.health import HealthRoutes
from secretd.api.ports import ApiDeps, ServingState
from secretd.events import Hub
from secretd.metrics import Metrics
from secretd.model import SecretName
from secretd.usage import Usage
from tests.fakes.api_deps import CountingLimiter, Health, ListAudit, MemoryCache, UidPolicy


class RefusingCache(MemoryCache):
    refused: int = 0

    def persist_refused(self) -> int:
        return self.refused


def deps_with(cache: MemoryCache, metrics: Metrics, usage: Usage) -> ApiDeps:
    return ApiDeps.fixed(
        cache=cache,
        policy=UidPolicy({1000}, ("app/",)),
        audit=ListAudit(),
        hub=Hub(),
        metrics=metrics,
        limiter=CountingLimiter(),
        identify=lambda _request: None,
        state=ServingState(ready=True),
        usage=usage,
    )


def test_the_serving_endpoint_is_shown_to_root_and_summarised_for_others() -> None:
    cache = RefusingCache(Hub())
    cache.health = {
        "vault": Health(endpoint="https://vault-b:8200", on_primary=False, failovers=2),
        "local": Health(),
    }
    routes = HealthRoutes(deps_with(cache, Metrics(), Usage(None)))
    full = routes.document()["backends"]
    assert full["vault"]["endpoint"] == "https://vault-b:8200"
    assert full["vault"]["on_primary"] is False
    assert (full["local"]["endpoint"], full["local"]["on_primary"]) == (None, None)
    summary = routes.document(lambda _name: True)["backends"]
    assert summary["vault"]["endpoint"] is None  # addresses are root's to see
    assert summary["vault"]["on_primary"] is False


def test_a_refused_persisted_entry_degrades_health() -> None:
    cache = RefusingCache(Hub())
    routes = HealthRoutes(deps_with(cache, Metrics(), Usage(None)))
    assert routes.document()["status"] == "ok"
    cache.refused = 1
    document = routes.document()
    assert document["status"] == "degraded"
    assert document["cache"]["persist_refused"] == 1


async def test_metrics_carry_failovers_and_the_last_reads_of_pinned_secrets() -> None:
    cache = RefusingCache(Hub())
    cache.health = {"vault": Health(endpoint="http://b", on_primary=False, failovers=3)}
    cache.put("app/declared", b"v")
    cache.unloaded = {SecretName("app/unloaded"): "not loaded yet"}
    usage = Usage(None, wall=lambda: 1_767_268_800.0)
    usage.note(SecretName("app/declared"))
    usage.note(SecretName("app/read-but-not-pinned"))
    metrics = Metrics()
    routes = HealthRoutes(deps_with(cache, metrics, usage))
    await routes.metrics(None)  # type: ignore[arg-type]
    text = metrics.exposition().decode()
    assert 'secretd_backend_failovers_total{backend="vault"} 3.0' in text
    # A pinned (declared) name is exported, 0 when never read; names merely read
    # or cached (not pinned in this fake) are not labels.
    exported = [
        line
        for line in text.splitlines()
        if line.startswith("secretd_secret_last_read_timestamp_seconds{")
    ]
    assert exported == ['secretd_secret_last_read_timestamp_seconds{secret="app/unloaded"} 0.0']
