"""Traffic generator: split proportions, bounds, live split changes, InferenceService split."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulations import traffic
from simulations.endpoints import Behaviour, EndpointFleet, ModelEndpoint
from simulations.traffic import TrafficGenerator, isvc_split, split_from_isvc

NS, ISVC = "team-a", "fraud"
REV1, REV2 = "fraud-predictor-00001", "fraud-predictor-00002"


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[EndpointFleet]:
    with EndpointFleet(tmp_path / "targets.json", seed=1) as fleet:
        fleet.add(NS, ISVC, REV1, Behaviour())
        fleet.add(NS, ISVC, REV2, Behaviour())
        yield fleet


def endpoint(fleet: EndpointFleet, revision: str) -> ModelEndpoint:
    found = fleet.get(NS, revision)
    assert found is not None
    return found


def served(endpoint: ModelEndpoint) -> float:
    """Requests the endpoint's queue-proxy counted (any status)."""
    text = endpoint.exposition().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        if family.name == "revision_app_request_count"
        for s in family.samples
    )


def test_split_proportions_within_tolerance(fleet: EndpointFleet) -> None:
    one, two = endpoint(fleet, REV1), endpoint(fleet, REV2)
    n = 3000
    generator = TrafficGenerator(
        lambda: [(one.url, 25), (two.url, 75)],
        rate_rps=1500,
        seed=4,
        max_requests=n,
        model_name=ISVC,
    )
    with generator:
        assert generator.wait(timeout=60)
    sent = generator.sent
    total = sum(sent.values())
    assert total + generator.dropped == n  # drops only if this machine is overloaded
    assert total >= 0.9 * n and not generator.errors
    share = sent[one.url] / total
    assert abs(share - 0.25) <= 4 * math.sqrt(0.25 * 0.75 / total)  # ~3 points
    assert (served(one), served(two)) == (sent[one.url], sent[two.url])


def test_stops_by_itself_after_max_seconds(fleet: EndpointFleet) -> None:
    one = endpoint(fleet, REV1)
    generator = TrafficGenerator(
        lambda: [(one.url, 100)], rate_rps=100, max_seconds=0.6, arrivals="fixed", model_name=ISVC
    )
    started = time.monotonic()
    generator.start()
    assert generator.wait(timeout=10)
    assert generator.done
    assert time.monotonic() - started < 3
    assert 50 <= sum(generator.sent.values()) <= 62


def test_stop_interrupts_a_long_run(fleet: EndpointFleet) -> None:
    one = endpoint(fleet, REV1)
    generator = TrafficGenerator(lambda: [(one.url, 100)], rate_rps=50, max_seconds=600)
    generator.start()
    time.sleep(0.3)
    started = time.monotonic()
    generator.stop()
    assert generator.done
    assert time.monotonic() - started < 2
    assert not any(t.name.startswith("traffic-") and t.is_alive() for t in threading.enumerate())


def test_rate_is_open_loop_and_roughly_kept(fleet: EndpointFleet) -> None:
    slow = endpoint(fleet, REV1)
    slow.sleep = True
    slow.set_behaviour(Behaviour(latency_median_ms=100, latency_sigma=0))
    generator = TrafficGenerator(
        lambda: [(slow.url, 100)], rate_rps=40, max_seconds=1.0, concurrency=8, model_name=ISVC
    )
    with generator:
        generator.wait(timeout=10)
    # One worker alone would manage 10 rps; eight keep up with 40 rps of 100 ms calls.
    assert 25 <= sum(generator.sent.values()) <= 60
    assert generator.dropped == 0


def test_follows_split_changes(fleet: EndpointFleet) -> None:
    one, two = endpoint(fleet, REV1), endpoint(fleet, REV2)
    started = time.monotonic()

    def split() -> Sequence[tuple[str, float]]:
        late = time.monotonic() - started > 0.6
        return [(one.url, 0 if late else 100), (two.url, 100 if late else 0)]

    generator = TrafficGenerator(split, rate_rps=200, max_seconds=1.5, model_name=ISVC)
    with generator:
        generator.wait(timeout=10)
    sent = generator.sent
    assert sent[one.url] > 50 and sent[two.url] > 50


def test_counts_errors_unroutable_and_bad_splits(fleet: EndpointFleet) -> None:
    one = endpoint(fleet, REV1)
    one.set_behaviour(Behaviour(error_rate=1.0))
    failing = TrafficGenerator(lambda: [(one.url, 100)], rate_rps=500, max_requests=50)
    with failing:
        failing.wait(timeout=10)
    assert failing.errors == failing.sent and sum(failing.sent.values()) == 50

    empty = TrafficGenerator(lambda: [], rate_rps=500, max_requests=20)
    with empty:
        empty.wait(timeout=10)
    assert empty.unroutable == 20 and not empty.sent

    def broken() -> Sequence[tuple[str, float]]:
        raise RuntimeError("api down")

    survives = TrafficGenerator(broken, rate_rps=500, max_requests=10)
    with survives:
        survives.wait(timeout=10)
    assert survives.unroutable == 10


def test_unreachable_endpoint_counts_as_error() -> None:
    generator = TrafficGenerator(
        lambda: [("http://127.0.0.1:9", 100)], rate_rps=200, max_requests=5, model_name="m"
    )
    with generator:
        generator.wait(timeout=10)
    assert generator.errors == generator.sent and sum(generator.sent.values()) == 5


def test_discovers_the_model_name(fleet: EndpointFleet) -> None:
    one = endpoint(fleet, REV1)
    generator = TrafficGenerator(lambda: [(one.url, 100)], rate_rps=500, max_requests=40)
    with generator:
        generator.wait(timeout=10)
    assert not generator.errors and sum(generator.sent.values()) == 40


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_rps": 10},  # unbounded
        {"rate_rps": 0, "max_requests": 1},
        {"rate_rps": 10, "max_requests": 1, "concurrency": 0},
    ],
)
def test_rejects_unbounded_or_invalid_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TrafficGenerator(lambda: [], **kwargs)


# ---------------------------------------------------------------------- InferenceService


def isvc_with_traffic(*targets: dict[str, Any]) -> dict[str, Any]:
    return {"status": {"components": {"predictor": {"traffic": list(targets)}}}}


def test_split_from_isvc_maps_revisions_to_urls(fleet: EndpointFleet) -> None:
    one, two = endpoint(fleet, REV1), endpoint(fleet, REV2)
    isvc = isvc_with_traffic(
        {"revisionName": REV1, "percent": 25, "tag": "prev"},
        {"revisionName": REV2, "percent": 75, "latestRevision": True, "tag": "latest"},
        {"revisionName": "fraud-predictor-00009", "percent": 0},
        {"revisionName": REV2, "tag": "canary"},  # tag-only route: no percent
    )
    assert split_from_isvc(isvc, NS, fleet) == [(one.url, 25.0), (two.url, 75.0)]
    assert split_from_isvc({"status": {}}, NS, fleet) == []
    assert split_from_isvc({}, NS, fleet) == []


class FakeCustomObjectsApi:
    """Stands in for kubernetes.client.CustomObjectsApi; records every read."""

    calls: ClassVar[list[dict[str, Any]]] = []
    body: ClassVar[dict[str, Any]] = {}

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def get_namespaced_custom_object(self, **kwargs: Any) -> dict[str, Any]:
        FakeCustomObjectsApi.calls.append(kwargs)
        return FakeCustomObjectsApi.body


def test_isvc_split_reads_the_isvc_and_caches(
    fleet: EndpointFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kubernetes.client

    monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", FakeCustomObjectsApi)
    FakeCustomObjectsApi.calls = []
    FakeCustomObjectsApi.body = isvc_with_traffic({"revisionName": REV1, "percent": 100})
    split = isvc_split(object(), NS, ISVC, fleet)

    assert split() == [(endpoint(fleet, REV1).url, 100.0)]
    FakeCustomObjectsApi.body = isvc_with_traffic({"revisionName": REV2, "percent": 100})
    assert split() == [(endpoint(fleet, REV1).url, 100.0)]  # cached
    time.sleep(traffic.SPLIT_REFRESH_S + 0.05)
    assert split() == [(endpoint(fleet, REV2).url, 100.0)]
    assert FakeCustomObjectsApi.calls[0] == {
        "group": "serving.kserve.io",
        "version": "v1beta1",
        "namespace": NS,
        "plural": "inferenceservices",
        "name": ISVC,
    }
    assert len(FakeCustomObjectsApi.calls) == 2
