"""Simulated model endpoints: exposition per flavour, sampling, behaviour changes, fleet."""

from __future__ import annotations

import http.client
import json
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulations.endpoints import (
    FLAVOURS,
    Behaviour,
    EndpointFleet,
    MetricsFlavour,
    ModelEndpoint,
)

NS, ISVC, REV = "team-a", "fraud", "fraud-predictor-00001"

LEGACY_MS_BUCKETS = [
    "5", "10", "20", "40", "60", "80", "100", "150", "200", "250", "300", "350", "400", "450",
    "500", "600", "700", "800", "900", "1000", "2000", "5000", "10000", "20000", "50000",
    "100000", "+Inf",
]  # fmt: skip
OTEL_S_BUCKETS = [
    "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5",
    "7.5", "10", "+Inf",
]  # fmt: skip
PY_DEFAULT_BUCKETS = [
    "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5",
    "5.0", "7.5", "10.0", "+Inf",
]  # fmt: skip
LEGACY_APP_LABELS = {
    "configuration_name", "container_name", "namespace_name", "pod_name", "response_code",
    "response_code_class", "revision_name", "service_name",
}  # fmt: skip
OTEL_SCOPE = {"otel_scope_name", "otel_scope_schema_url", "otel_scope_version"}

# family -> (type, label names of its samples, excluding le)
KSERVE_FAMILIES = {
    "request_preprocess_seconds": ("histogram", {"model_name"}),
    "request_predict_seconds": ("histogram", {"model_name"}),
    "request_postprocess_seconds": ("histogram", {"model_name"}),
    "request_explain_seconds": ("histogram", set()),  # registered, never observed
    "kserve_model_prediction": ("histogram", {"model_name"}),
    "request_preprocess_seconds_created": ("gauge", {"model_name"}),
    "request_predict_seconds_created": ("gauge", {"model_name"}),
    "request_postprocess_seconds_created": ("gauge", {"model_name"}),
    "kserve_model_prediction_created": ("gauge", {"model_name"}),
}
QUEUE_PROXY_FAMILIES: dict[str, dict[str, tuple[str, set[str]]]] = {
    "queue-proxy-legacy": {
        "revision_request_count": ("counter", LEGACY_APP_LABELS | {"route_tag"}),
        "revision_request_latencies": ("histogram", LEGACY_APP_LABELS | {"route_tag"}),
        "revision_app_request_count": ("counter", LEGACY_APP_LABELS),
        "revision_app_request_latencies": ("histogram", LEGACY_APP_LABELS),
    },
    "queue-proxy-otel": {
        "kn_serving_invocation_duration_seconds": (
            "histogram",
            {"http_response_status_code"} | OTEL_SCOPE,
        ),
        "http_server_request_duration_seconds": (
            "histogram",
            {
                "http_request_method",
                "http_response_status_code",
                "kn_route_tag",
                "network_protocol_name",
                "network_protocol_version",
                "server_address",
                "url_scheme",
            }
            | OTEL_SCOPE,
        ),
        "target_info": (
            "gauge",
            {
                "k8s_container_name",
                "k8s_namespace_name",
                "k8s_pod_name",
                "kn_configuration_name",
                "kn_revision_name",
                "kn_service_name",
                "service_instance_id",
                "service_name",
                "service_version",
                "telemetry_sdk_language",
                "telemetry_sdk_name",
                "telemetry_sdk_version",
            },
        ),
    },
    "otelhttp": {
        "http_server_request_duration_seconds": (
            "histogram",
            {
                "http_request_method",
                "http_response_status_code",
                "network_protocol_name",
                "network_protocol_version",
                "url_scheme",
            }
            | OTEL_SCOPE,
        ),
        "target_info": (
            "gauge",
            {
                "k8s_namespace_name",
                "k8s_pod_name",
                "service_name",
                "telemetry_sdk_language",
                "telemetry_sdk_name",
                "telemetry_sdk_version",
            },
        ),
    },
}


# --------------------------------------------------------------------------- helpers


class Client:
    """A keep-alive HTTP client for one endpoint."""

    def __init__(self, endpoint: ModelEndpoint) -> None:
        self.endpoint = endpoint
        host, port = endpoint.address.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.model = endpoint.model_name

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=data)
        response = self.conn.getresponse()
        raw = response.read()
        is_json = response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(raw) if is_json else raw.decode()

    def predict(self, instances: int = 1) -> tuple[int, Any]:
        return self.call(
            "POST", f"/v1/models/{self.model}:predict", {"instances": [[1.0]] * instances}
        )

    def metrics(self) -> str:
        status, text = self.call("GET", "/metrics")
        assert status == 200
        return str(text)

    def close(self) -> None:
        self.conn.close()


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample_values(text: str, sample_name: str, **labels: str) -> list[float]:
    return [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def start_endpoint(
    flavour: MetricsFlavour = "queue-proxy-legacy", seed: int = 7, **behaviour: float
) -> ModelEndpoint:
    endpoint = ModelEndpoint(
        namespace=NS,
        isvc=ISVC,
        revision=REV,
        model_name=ISVC,
        behaviour=Behaviour(**behaviour),
        flavour=flavour,
        seed=seed,
    )
    endpoint.start()
    return endpoint


@pytest.fixture
def client_for() -> Iterator[Any]:
    started: list[tuple[ModelEndpoint, Client]] = []

    def make(
        flavour: MetricsFlavour = "queue-proxy-legacy", seed: int = 7, **behaviour: float
    ) -> Client:
        endpoint = start_endpoint(flavour, seed, **behaviour)
        client = Client(endpoint)
        started.append((endpoint, client))
        return client

    yield make
    for endpoint, client in started:
        client.close()
        endpoint.stop()


# --------------------------------------------------------------------------- exposition


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_exposition_has_exact_families_types_and_labels(client_for: Any, flavour: str) -> None:
    client = client_for(flavour, error_rate=0.5)
    for _ in range(40):
        client.predict()
    text = client.metrics()
    found = families(text)

    expected = {**QUEUE_PROXY_FAMILIES[flavour], **KSERVE_FAMILIES}
    assert set(found) == set(expected)
    for name, (typ, label_names) in expected.items():
        family = found[name]
        assert family.type == typ, name
        seen = {frozenset(set(s.labels) - {"le"}) for s in family.samples}
        assert seen == ({frozenset(label_names)} if label_names else set()), name

    # Go-style counters: the sample is named like the family, never ..._total.
    for name, (typ, _) in QUEUE_PROXY_FAMILIES[flavour].items():
        assert f"# TYPE {name} {typ}\n" in text
    assert "_total" not in text


def test_legacy_label_values_and_buckets(client_for: Any) -> None:
    client = client_for("queue-proxy-legacy", error_rate=0.5)
    codes = Counter(client.predict()[0] for _ in range(60))
    text = client.metrics()
    found = families(text)

    counts = {
        s.labels["response_code"]: s.value for s in found["revision_app_request_count"].samples
    }
    assert counts == {"200": codes[200], "500": codes[500]}
    sample = found["revision_request_count"].samples[0]
    assert sample.labels["namespace_name"] == NS
    assert sample.labels["revision_name"] == REV
    assert (
        sample.labels["service_name"] == sample.labels["configuration_name"] == f"{ISVC}-predictor"
    )
    assert sample.labels["container_name"] == "queue-proxy"
    assert sample.labels["pod_name"].startswith(f"{REV}-deployment-")
    assert sample.labels["route_tag"] == "DISABLED"
    assert {s.labels["response_code_class"] for s in found["revision_request_count"].samples} == {
        "2xx",
        "5xx",
    }
    bucket_les = [
        s.labels["le"]
        for s in found["revision_app_request_latencies"].samples
        if s.name.endswith("_bucket") and s.labels["response_code"] == "200"
    ]
    assert bucket_les == LEGACY_MS_BUCKETS
    # Whole milliseconds, as queue-proxy's latency.Milliseconds().
    for value in sample_values(text, "revision_app_request_latencies_sum"):
        assert value == int(value)


def test_otel_label_values_and_buckets(client_for: Any) -> None:
    client = client_for("queue-proxy-otel", error_rate=0.5)
    for _ in range(30):
        client.predict()
    found = families(client.metrics())

    info = found["target_info"].samples[0]
    assert info.value == 1
    assert info.labels["kn_revision_name"] == REV
    assert info.labels["k8s_namespace_name"] == NS
    assert info.labels["kn_service_name"] == f"{ISVC}-predictor"
    invocation = found["kn_serving_invocation_duration_seconds"].samples
    assert {s.labels["http_response_status_code"] for s in invocation} == {"200", "500"}
    assert {s.labels["otel_scope_name"] for s in invocation} == {"knative.dev/serving/pkg/queue"}
    les = [
        s.labels["le"]
        for s in invocation
        if s.name.endswith("_bucket") and s.labels["http_response_status_code"] == "200"
    ]
    assert les == OTEL_S_BUCKETS


def test_kserve_histograms_buckets_and_observation_rules(client_for: Any) -> None:
    client = client_for(error_rate=0.5)
    codes = Counter(client.predict(instances=3)[0] for _ in range(50))
    text = client.metrics()
    found = families(text)

    les = [s.labels["le"] for s in found["request_predict_seconds"].samples if "le" in s.labels]
    assert les == PY_DEFAULT_BUCKETS
    prediction_les = [
        s.labels["le"] for s in found["kserve_model_prediction"].samples if "le" in s.labels
    ]
    assert prediction_les == [str(i / 10) for i in range(11)] + ["+Inf"]

    def count(name: str) -> float:
        return sample_values(text, f"{name}_count", model_name=ISVC)[0]

    assert count("request_preprocess_seconds") == 50
    assert count("request_predict_seconds") == 50  # observed even when predict fails
    assert count("request_postprocess_seconds") == codes[200]
    assert count("kserve_model_prediction") == 3 * codes[200]  # one per instance


# --------------------------------------------------------------------------- behaviour


def test_error_rate_within_binomial_tolerance(client_for: Any) -> None:
    n, p = 2000, 0.1
    client = client_for(error_rate=p, seed=1234)
    errors = sum(client.predict()[0] == 500 for _ in range(n))
    assert abs(errors - n * p) <= 4 * math.sqrt(n * p * (1 - p))
    # prometheus_client's parser reports counter samples as <family>_total.
    metrics = client.metrics()
    assert sample_values(metrics, "revision_app_request_count_total", response_code="500") == [
        errors
    ]


def test_sampling_matches_the_behaviour() -> None:
    behaviour = Behaviour(latency_median_ms=80, latency_sigma=0.5, prediction_mean=0.9)
    rng = random.Random(5)
    outcomes = [behaviour.sample(rng, instances=2) for _ in range(5000)]
    median_ms = statistics.median(o.latency_s for o in outcomes) * 1000
    assert median_ms == pytest.approx(80, rel=0.05)
    predictions = [v for o in outcomes for v in o.predictions]
    assert all(0.0 <= v <= 1.0 for v in predictions)
    assert max(predictions) == 1.0  # mean 0.9, sd 0.1: the clip is hit
    # E[min(X, 1)] for X ~ N(0.9, 0.1): 0.9 - 0.1 * (pdf(1) - (1 - cdf(1))) = 0.8917
    assert statistics.mean(predictions) == pytest.approx(0.8917, abs=0.005)


def test_same_seed_same_answers(client_for: Any) -> None:
    first, second = client_for(seed=99, error_rate=0.3), client_for(seed=99, error_rate=0.3)
    assert [first.predict() for _ in range(30)] == [second.predict() for _ in range(30)]


def test_set_behaviour_changes_output(client_for: Any) -> None:
    client = client_for(latency_median_ms=20, prediction_mean=0.2, prediction_sd=0.01)
    endpoint = client.endpoint
    before = [client.predict()[1]["predictions"][0] for _ in range(100)]
    endpoint.set_behaviour(Behaviour(latency_median_ms=2000, error_rate=1.0))
    after = [client.predict()[0] for _ in range(100)]
    text = client.metrics()

    assert statistics.mean(before) == pytest.approx(0.2, abs=0.01)
    assert after == [500] * 100
    assert sample_values(text, "revision_app_request_count_total", response_code="500") == [100]
    slow = sample_values(text, "revision_app_request_latencies_sum", response_code="500")[0]
    fast = sample_values(text, "revision_app_request_latencies_sum", response_code="200")[0]
    assert slow / 100 > 1000 > 100 > fast / 100


def test_behaviour_mapping_round_trip_and_validation() -> None:
    behaviour = Behaviour(latency_median_ms=55, error_rate=0.02)
    assert Behaviour.from_mapping(behaviour.to_mapping()) == behaviour
    assert Behaviour.from_mapping(json.loads(json.dumps(behaviour.to_mapping()))) == behaviour
    with pytest.raises(ValueError, match="unknown behaviour keys"):
        Behaviour.from_mapping({"latency_p50": 3})
    with pytest.raises(ValueError):
        Behaviour(error_rate=1.5)
    with pytest.raises(ValueError):
        Behaviour(latency_median_ms=0)
    with pytest.raises(TypeError):
        Behaviour.from_mapping({"error_rate": True})
    with pytest.raises(TypeError):
        Behaviour.from_mapping({"error_rate": "0.1"})


def test_non_prediction_requests_are_answered_and_counted(client_for: Any) -> None:
    client = client_for()
    assert client.call("GET", "/v1/models") == (200, {"models": [ISVC]})
    assert client.call("POST", "/v1/models/other:predict", {"instances": [1]})[0] == 404
    assert client.call("POST", f"/v1/models/{ISVC}:predict", {"rows": []})[0] == 400
    assert client.call("POST", f"/v1/models/{ISVC}:predict", "not json")[0] == 400
    counts = {
        s.labels["response_code"]: s.value
        for s in families(client.metrics())["revision_app_request_count"].samples
    }
    assert counts == {"200": 1, "404": 1, "400": 2}


def test_sleep_mode_really_waits() -> None:
    endpoint = ModelEndpoint(
        namespace=NS,
        isvc=ISVC,
        revision=REV,
        model_name=ISVC,
        behaviour=Behaviour(latency_median_ms=150, latency_sigma=0.0),
        sleep=True,
    )
    with endpoint:
        client = Client(endpoint)
        started = time.perf_counter()
        client.predict()
        assert time.perf_counter() - started >= 0.14
        client.close()


# --------------------------------------------------------------------------- lifecycle


def test_stop_closes_keep_alive_connections() -> None:
    endpoint = start_endpoint()
    client = Client(endpoint)
    assert client.predict()[0] == 200
    endpoint.stop()
    assert endpoint._thread is not None and not endpoint._thread.is_alive()
    with pytest.raises((OSError, http.client.HTTPException)):
        client.predict()
    client.close()
    with pytest.raises(RuntimeError):
        endpoint.start()


def test_fleet_keeps_file_sd_in_step(tmp_path: Path) -> None:
    sd_file = tmp_path / "sd" / "targets.json"
    with EndpointFleet(sd_file, seed=3) as fleet:
        assert json.loads(sd_file.read_text()) == []
        one = fleet.add(NS, ISVC, "fraud-predictor-00001", Behaviour())
        two = fleet.add(NS, ISVC, "fraud-predictor-00002", Behaviour(error_rate=0.2))
        groups = json.loads(sd_file.read_text())
        assert [g["targets"] for g in groups] == [[one.address], [two.address]]
        assert groups[0]["labels"] == {"namespace": NS, "pod": one.identity.pod_name}
        assert fleet.get(NS, "fraud-predictor-00002") is two
        assert fleet.get("other", "fraud-predictor-00002") is None
        with pytest.raises(ValueError):
            fleet.add(NS, ISVC, "fraud-predictor-00001", Behaviour())

        removed_address = one.address
        fleet.remove(NS, ISVC, "fraud-predictor-00001")
        assert [g["targets"] for g in json.loads(sd_file.read_text())] == [[two.address]]
        with pytest.raises(OSError):
            host, port = removed_address.split(":")
            http.client.HTTPConnection(host, int(port), timeout=2).connect()
    assert json.loads(sd_file.read_text()) == []
    assert list(sd_file.parent.iterdir()) == [sd_file]  # no temp files left


def test_fleet_seeds_by_name_not_by_order(tmp_path: Path) -> None:
    def answers(order: list[str]) -> dict[str, Any]:
        with EndpointFleet(tmp_path / f"{order[0]}.json", seed=11) as fleet:
            endpoints = {rev: fleet.add(NS, ISVC, rev, Behaviour()) for rev in order}
            out = {}
            for rev, endpoint in endpoints.items():
                client = Client(endpoint)
                out[rev] = (endpoint.identity.pod_name, [client.predict() for _ in range(5)])
                client.close()
            return out

    assert answers(["a", "b"]) == answers(["b", "a"])
