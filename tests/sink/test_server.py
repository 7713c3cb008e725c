"""The receiver on a real socket: events counted, bad input answered 4xx, never a crash."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from controller.providers.presets import SINK_METRIC
from controller.sink.histograms import PredictionHistograms
from controller.sink.revisions import FakeOwners, RevisionMapper
from controller.sink.server import PredictionSink, listener
from tests.sink.test_sink_events import POD, REQUEST_TYPE, V1_RESPONSE, V2_RESPONSE, agent_headers

REVISION = "iris-predictor-00002"


@pytest.fixture
def sink() -> Iterator[tuple[PredictionSink, str]]:
    owners = FakeOwners()
    owners.knative_pod("models", REVISION, POD, "iris-predictor-00002-deployment-7c9f8d6b5")
    sink = PredictionSink(PredictionHistograms([0.25, 0.5, 0.75]), RevisionMapper(owners))
    server = listener(sink, "127.0.0.1:0", read_timeout=1.0, max_body=4096)
    server.start()
    try:
        yield sink, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def metric(url: str, name: str, **labels: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_request_and_response_events_make_the_revisions_histogram(
        sink: tuple[PredictionSink, str]) -> None:
    _, url = sink
    for i, body in enumerate((V1_RESPONSE, V2_RESPONSE)):
        ask = requests.post(url, data=b'{"instances": [[1, 2]]}', timeout=5,
                            headers=agent_headers(REQUEST_TYPE, f"id-{i}"))
        answer = requests.post(url, data=body, headers=agent_headers(event_id=f"id-{i}"),
                               timeout=5)
        assert (ask.status_code, answer.status_code) == (200, 200), answer.text
    assert metric(url, f"{SINK_METRIC}_count", revision=REVISION, namespace="models",
                  inferenceservice="iris", component="predictor") == 6
    assert metric(url, f"{SINK_METRIC}_bucket", revision=REVISION, le="0.25") == 2
    assert metric(url, "rollwise_sink_events_total", type="request") == 2
    assert metric(url, "rollwise_sink_events_total", type="response") == 2


def test_bad_events_are_400_with_their_cause_and_counted(
        sink: tuple[PredictionSink, str]) -> None:
    _, url = sink
    answer = requests.post(url, data=b"{", headers=agent_headers(), timeout=5)
    assert answer.status_code == 400 and "bad-json" in answer.text
    answer = requests.post(url, data=b"hello", headers={"Content-Type": "text/plain"},
                           timeout=5)
    assert answer.status_code == 400 and "not-a-cloudevent" in answer.text
    assert metric(url, "rollwise_sink_unparseable_events_total", cause="bad-json") == 1
    assert metric(url, "rollwise_sink_unparseable_events_total", cause="not-a-cloudevent") == 1
    assert requests.get(f"{url}/healthz", timeout=5).status_code == 200


def test_a_pod_without_a_revision_is_404_and_its_predictions_counted_as_dropped(
        sink: tuple[PredictionSink, str]) -> None:
    _, url = sink
    answer = requests.post(url, data=V1_RESPONSE, timeout=5,
                           headers=agent_headers(**{"Ce-Source": "someone-else"}))
    assert answer.status_code == 404 and "models/someone-else" in answer.text
    assert metric(url, "rollwise_sink_dropped_predictions_total",
                  reason="unknown-revision") == 3


def test_an_unreachable_api_server_is_503_and_dropped(sink: tuple[PredictionSink, str]) -> None:
    sink_, url = sink
    owners = FakeOwners()
    owners.fail = 500
    sink_.mapper = RevisionMapper(owners)
    answer = requests.post(url, data=V1_RESPONSE, headers=agent_headers(), timeout=5)
    assert answer.status_code == 503
    assert metric(url, "rollwise_sink_dropped_predictions_total", reason="lookup-failed") == 3


def test_a_body_over_the_limit_is_413_unread(sink: tuple[PredictionSink, str]) -> None:
    _, url = sink
    body = json.dumps({"predictions": [0.5] * 2000}).encode()
    answer = requests.post(url, data=body, headers=agent_headers(), timeout=5)
    assert answer.status_code == 413
    assert metric(url, "rollwise_sink_http_refused_total", reason="too-large") == 1


def test_a_client_that_stalls_is_cut_off_and_the_sink_goes_on(
        sink: tuple[PredictionSink, str]) -> None:
    _, url = sink
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as stalled:
        stalled.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert stalled.recv(100).startswith(b"HTTP/1.1 408")
    answer = requests.post(url, data=V1_RESPONSE, headers=agent_headers(), timeout=5)
    assert answer.status_code == 200
