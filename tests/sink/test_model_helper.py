"""The in-model helper: the sink's histogram from inside a KServe Python Model."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controller.providers.presets import SINK_METRIC
from controller.sink.bodies import Cause, EventUnreadable
from controller.sink.model_helper import METRIC, PredictionRecorder


def _samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]],
                                                  float]:
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_it_loads_neither_the_kserve_sdk_nor_the_rest_of_rollwise() -> None:
    code = ("import sys, controller.sink.model_helper; "
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'kserve', "
            "'cloudevents', 'kubernetes', 'pydantic', 'yaml', 'scipy'}); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "[]"


def test_it_exports_the_metric_the_drift_preset_reads() -> None:
    assert METRIC == SINK_METRIC
    registry = CollectorRegistry()
    recorder = PredictionRecorder([0.5, 1.0], registry=registry,
                                  environ={"K_REVISION": "churn-predictor-00002",
                                           "K_SERVICE": "churn-predictor"})
    recorder.record([0.2, 0.7, 0.9])
    recorder.record_response({"outputs": [{"name": "p", "shape": [1], "datatype": "FP32",
                                           "data": [0.4]}]})
    labels = {"inferenceservice": "churn", "component": "predictor",
              "revision": "churn-predictor-00002"}
    out = _samples(registry)
    assert out[(f"{METRIC}_bucket", frozenset({**labels, "le": "0.5"}.items()))] == 2
    assert out[(f"{METRIC}_count", frozenset(labels.items()))] == 4


def test_class_labels_are_counted_with_a_cap() -> None:
    registry = CollectorRegistry()
    recorder = PredictionRecorder(registry=registry, revision="r", max_classes=1)
    recorder.record_response({"predictions": ["cat", "dog", True]})
    classes = {dict(labels)["class"]: v for (name, labels), v in _samples(registry).items()
               if name == f"{METRIC}_class_total"}
    assert classes == {"cat": 1, "__other__": 2}


def test_without_a_revision_it_refuses_to_start() -> None:
    with pytest.raises(ValueError, match="K_REVISION"):
        PredictionRecorder(registry=CollectorRegistry(), environ={})
    recorder = PredictionRecorder(registry=CollectorRegistry(),
                                  environ={"ROLLWISE_REVISION": "iris-predictor"})
    with pytest.raises(EventUnreadable) as err:
        recorder.record_response({"result": 1})
    assert err.value.cause == Cause.NO_PREDICTIONS


def test_inside_a_real_kserve_model() -> None:
    """The SDK loaded only here, after the helper: a Model's predict records its answer
    into the registry the KServe model server serves on /metrics."""
    import asyncio

    from kserve import Model

    registry = CollectorRegistry()
    recorder = PredictionRecorder([0.25, 0.75], registry=registry, revision="m-predictor-1")

    class Scorer(Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__("scorer")
            self.ready = True

        def predict(self, payload: dict[str, Any], headers: Any = None) -> dict[str, Any]:
            response = {"predictions": [min(1.0, sum(row) / 10) for row in
                                        payload["instances"]]}
            recorder.record_response(response)
            return response

    model = Scorer()
    answer = model({"instances": [[1, 1], [4, 4], [9, 9]]})
    if asyncio.iscoroutine(answer):
        answer = asyncio.run(answer)
    body = answer[0] if isinstance(answer, tuple) else answer
    assert body["predictions"] == [0.2, 0.8, 1.0]
    counts = {dict(labels)["le"]: v for (name, labels), v in _samples(registry).items()
              if name == f"{METRIC}_bucket"}
    assert counts == {"0.25": 1.0, "0.75": 1.0, "+Inf": 3.0}
