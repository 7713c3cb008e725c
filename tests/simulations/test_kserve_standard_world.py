"""The world for KServe Standard mode: what a Standard-mode pod exports, the split an
HTTPRoute puts in force, and (e2e) a Knative and a Standard InferenceService side by side,
with traffic following the route and Prometheus counting per pod."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_api_client import PrometheusConnect
from prometheus_client.parser import text_string_to_metric_families

from simulations.endpoints import STANDARD_FLAVOUR, Behaviour, EndpointFleet
from simulations.kube.build import Binaries
from simulations.traffic import split_in_force
from simulations.world import World, WorldConfig
from tests.e2e.rollouts import wait_for
from tests.simulations.test_endpoints import KSERVE_FAMILIES, Client

NS = "models"
POD = "iris-v2-predictor-bcdfghjklm-x2z4b"


# --- a Standard-mode pod's metrics --------------------------------------------------------


def test_a_standard_pod_exports_the_model_server_series_only(tmp_path: Path) -> None:
    fleet = EndpointFleet(tmp_path / "targets.json", seed=3)  # the fleet's flavour: Knative
    try:
        endpoint = fleet.add(NS, "iris", "iris-v2-predictor-bcdfghjklm", Behaviour(
            error_rate=0.5), flavour=STANDARD_FLAVOUR, pod_name=POD)
        client = Client(endpoint)
        statuses = [client.predict()[0] for _ in range(40)]
        text = client.metrics()
        client.close()
        found = {f.name: f for f in text_string_to_metric_families(text)}
        assert set(found) == set(KSERVE_FAMILIES)  # no queue-proxy family at all
        predicted = next(s.value for s in found["request_predict_seconds"].samples
                         if s.name == "request_predict_seconds_count")
        succeeded = next(s.value for s in found["request_postprocess_seconds"].samples
                         if s.name == "request_postprocess_seconds_count")
        assert (predicted, predicted - succeeded) == (40, statuses.count(500))
        targets = json.loads((tmp_path / "targets.json").read_text())
        assert targets == [{"targets": [endpoint.address],
                            "labels": {"namespace": NS, "pod": POD}}]
    finally:
        fleet.close()


# --- the split a route puts in force ----------------------------------------------------------


def route(generation: int, accepted: int | None, *refs: tuple[str, int | None]) -> dict[str, Any]:
    backend_refs = [{"kind": "Service", "name": n, "port": 80, **({} if w is None else
                                                                 {"weight": w})}
                    for n, w in refs]
    status = {} if accepted is None else {"parents": [{"conditions": [
        {"type": "Accepted", "status": "True", "observedGeneration": accepted}]}]}
    return {"metadata": {"namespace": NS, "generation": generation},
            "spec": {"rules": [{"backendRefs": backend_refs}]}, "status": status}


ENDPOINTS = {"stable": ["http://s1", "http://s2"], "canary": ["http://c1"], "down": []}


def resolve(namespace: str, service: str) -> list[str]:
    assert namespace == NS
    return ENDPOINTS[service]


@pytest.mark.parametrize(
    ("current", "last", "expected"),
    [
        pytest.param(route(1, 1, ("stable", 90), ("canary", 10)), None,
                     [("http://s1", 45.0), ("http://s2", 45.0), ("http://c1", 10.0)],
                     id="accepted-weights-shared-by-ready-endpoints"),
        pytest.param(route(1, 1, ("stable", None)), None,
                     [("http://s1", 0.5), ("http://s2", 0.5)], id="missing-weight-is-1"),
        pytest.param(route(2, 1, ("stable", 50), ("canary", 50)),
                     route(1, 1, ("stable", 90), ("canary", 10)),
                     [("http://s1", 45.0), ("http://s2", 45.0), ("http://c1", 10.0)],
                     id="new-generation-not-accepted-yet-keeps-the-last"),
        pytest.param(route(1, None, ("stable", 100)), None, [],
                     id="never-accepted-routes-nothing"),
        pytest.param(route(1, 1, ("stable", 80), ("down", 20)), None,
                     [("http://s1", 40.0), ("http://s2", 40.0)],
                     id="a-service-without-ready-endpoints-is-left-out"),
        pytest.param(route(1, 1, ("stable", 100), ("canary", 0)), None,
                     [("http://s1", 50.0), ("http://s2", 50.0)], id="weight-0-gets-nothing"),
        pytest.param(None, route(1, 1, ("stable", 100)), [], id="route-gone-routes-nothing"),
    ],
)
def test_split_in_force(current: dict[str, Any] | None, last: dict[str, Any] | None,
                        expected: list[tuple[str, float]]) -> None:
    split, _ = split_in_force(current, resolve, last)
    assert split == expected


# --- the world, end to end ---------------------------------------------------------------------


@pytest.mark.e2e
def test_standard_and_knative_side_by_side_traffic_follows_the_route(
    kube_binaries: Binaries,
) -> None:
    good = Behaviour(error_rate=0.0)
    config = WorldConfig(models={"s3://m/v1": good, "s3://m/v2": good}, ready_delay=0.5)
    with World(config, binaries=kube_binaries) as world:
        world.create_isvc(NS, "kn", "s3://m/v1")
        world.create_isvc(NS, "std", "s3://m/v1",
                          annotations={"serving.kserve.io/deploymentMode": "Standard"})
        canary = {"predictor": {"name": "v2", "model": {
            "name": "kserve-container", "modelFormat": {"name": "sklearn"},
            "storageUri": "s3://m/v2"}}, "trafficPercent": 20}
        world.patch_isvc(NS, "std", {"spec": {"canary": [canary]}})

        def ready_canary() -> bool:
            status = world.get_isvc(NS, "std").get("status") or {}
            return [c.get("ready") for c in status.get("canaryStatuses") or []] == [True]

        wait_for(ready_canary, 30, "the Standard-mode canary Ready")
        wait_for(lambda: (world.get_isvc(NS, "kn").get("status") or {}).get(
            "deploymentMode") == "Knative", 30, "the Knative-mode neighbour reconciled")
        pods = {e.identity.pod_name: e for e in world.fleet if e.identity.isvc == "std"}
        assert sorted(p.rsplit("-", 2)[0] for p in pods) == ["std-predictor", "std-v2-predictor"]
        assert {e.flavour for e in pods.values()} == {STANDARD_FLAVOUR}

        generators = [world.start_traffic(NS, "std", 200, max_seconds=10),
                      world.start_traffic(NS, "kn", 50, max_seconds=10)]
        time.sleep(10)
        for generator in generators:
            generator.stop()
        time.sleep(3)  # two scrapes after the last request
        assert [g.unroutable for g in generators] == [0, 0]
        prom = PrometheusConnect(world.prometheus.url)
        samples = prom.custom_query(
            'sum by (pod) (request_predict_seconds_count{namespace="models", '
            'pod=~"std(-[a-z0-9]+)?-predictor-[a-z0-9]+-[a-z0-9]+"})')
        counts = {s["metric"]["pod"]: float(s["value"][1]) for s in samples}
        assert set(counts) == set(pods), counts
        total = sum(counts.values())
        canary_share = sum(v for p, v in counts.items() if p.startswith("std-v2-")) / total
        assert total > 1200, counts
        assert abs(canary_share - 0.20) < 0.05, counts
        # The Knative neighbour is counted by its queue-proxy, per revision; a Standard pod
        # has no queue-proxy series.
        knative = prom.custom_query(
            'sum by (revision_name) (revision_app_request_count{namespace_name="models"})')
        assert [s["metric"]["revision_name"] for s in knative] == ["kn-predictor-00001"]
        assert float(knative[0]["value"][1]) > 300
        assert not prom.custom_query('{__name__=~"revision_.*", pod=~"std-.*"}')
