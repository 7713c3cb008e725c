"""The simulated endpoints' logger agent speaks what the sink reads: one request and one
response event per answered prediction, paired by id, from the pod; no response event for
an error; and no prediction histogram of their own."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from controller.sink.histograms import PredictionHistograms, RevisionKey
from controller.sink.revisions import FakeOwners, RevisionMapper
from controller.sink.server import PredictionSink, listener
from simulations.endpoints import Behaviour, LoggerAgent, ModelEndpoint


@pytest.fixture
def sink() -> Iterator[tuple[PredictionSink, FakeOwners, str]]:
    owners = FakeOwners()
    sink = PredictionSink(PredictionHistograms(), RevisionMapper(owners))
    server = listener(sink, "127.0.0.1:0")
    server.start()
    try:
        yield sink, owners, f"http://127.0.0.1:{server.port}/"
    finally:
        server.stop()


def _until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.parametrize("error_rate", [0.0, 1.0])
def test_each_prediction_is_a_request_and_a_response_event(
        sink: tuple[PredictionSink, FakeOwners, str], error_rate: float) -> None:
    sink_, owners, url = sink
    agent = LoggerAgent(url, workers=2)
    endpoint = ModelEndpoint(namespace="models", isvc="iris", revision="iris-predictor-00001",
                             model_name="iris", behaviour=Behaviour(error_rate=error_rate),
                             seed=1, logger=agent)
    pod = endpoint.identity.pod_name
    owners.knative_pod("models", "iris-predictor-00001", pod, pod.rsplit("-", 1)[0])
    with endpoint:
        for _ in range(5):
            requests.post(f"{endpoint.url}/v1/models/iris:predict",
                          json={"instances": [[1.0], [2.0]]}, timeout=5)
        answered = 5 if error_rate == 0 else 0
        _until(lambda: agent.sent == 5 + answered)
        assert b"kserve_model_prediction" not in endpoint.exposition()
    agent.stop()
    assert (agent.failed, agent.dropped) == (0, 0)
    events = sink_.histograms.events
    assert events.labels("request")._value.get() == 5
    assert events.labels("response")._value.get() == answered
    assert len(sink_.pairing) == 5 - answered          # unanswered requests wait, bounded
    assert sink_.pairing.expire(time.monotonic() + 61) == 5 - answered
    counts = sink_.histograms.counts(RevisionKey("models", "iris", "predictor",
                                                 "iris-predictor-00001"))
    if answered:
        assert counts is not None and sum(counts[0]) == 10      # two instances each
    else:
        assert counts is None
