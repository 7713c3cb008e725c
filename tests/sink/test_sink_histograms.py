"""The sink's histograms: what they export, and their bounds."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controller.policy.loader import load_text
from controller.providers.presets import SINK_METRIC
from controller.sink.histograms import (
    OTHER_CLASS,
    PredictionHistograms,
    RevisionKey,
    bounds_from_policies,
)

A = RevisionKey("models", "iris", "predictor", "iris-predictor-00001")
B = RevisionKey("models", "iris", "predictor", "iris-predictor-00002")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def samples(histograms: PredictionHistograms) -> dict[tuple[str, frozenset[tuple[str, str]]],
                                                      float]:
    text = generate_latest(histograms.registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_predictions_are_counted_per_revision_in_the_layout() -> None:
    histograms = PredictionHistograms([0.25, 0.5, 0.75])
    histograms.observe(A, [0.1, 0.25, 0.3, 0.9, 0.9])
    histograms.observe(B, [0.6])
    assert histograms.counts(A) == ([2, 1, 0, 2], {})
    out = samples(histograms)
    labels = {"namespace": "models", "inferenceservice": "iris", "component": "predictor",
              "revision": "iris-predictor-00001"}
    bucket = f"{SINK_METRIC}_bucket"
    assert out[(bucket, frozenset({**labels, "le": "0.25"}.items()))] == 2
    assert out[(bucket, frozenset({**labels, "le": "0.75"}.items()))] == 3
    assert out[(bucket, frozenset({**labels, "le": "+Inf"}.items()))] == 5
    assert out[(f"{SINK_METRIC}_count", frozenset(labels.items()))] == 5
    assert abs(out[(f"{SINK_METRIC}_sum", frozenset(labels.items()))] - 2.45) < 1e-9


def test_class_labels_are_counts_with_a_cap_per_revision() -> None:
    histograms = PredictionHistograms(max_classes=2)
    histograms.observe(A, ["cat", "dog", "cat", "bird", "fish"])
    assert histograms.counts(A) == ([0] * 12, {"cat": 2, "dog": 1, OTHER_CLASS: 2})
    out = samples(histograms)
    assert out[("rollwise_sink_dropped_predictions_total",
                frozenset({("reason", "class-overflow")}))] == 2
    cls = frozenset({("namespace", "models"), ("inferenceservice", "iris"),
                     ("component", "predictor"), ("revision", A.revision), ("class", "cat")})
    assert out[(f"{SINK_METRIC}_class_total", cls)] == 2
    # a revision with only labels exports no empty histogram
    assert not any(name == f"{SINK_METRIC}_count" for name, _ in out)


def test_the_number_of_revisions_is_capped_least_recent_first() -> None:
    clock = Clock()
    histograms = PredictionHistograms(max_revisions=3, clock=clock)
    keys = [RevisionKey("models", "m", "predictor", f"m-predictor-{i:05}") for i in range(5)]
    for key in keys[:3]:
        histograms.observe(key, [0.5])
    histograms.observe(keys[0], [0.5])           # keys[0] is recent again
    histograms.observe(keys[3], [0.5])           # evicts keys[1]
    histograms.observe(keys[4], [0.5])           # evicts keys[2]
    assert len(histograms) == 3
    assert histograms.counts(keys[1]) is None and histograms.counts(keys[2]) is None
    assert histograms.counts(keys[0]) is not None
    out = samples(histograms)
    assert out[("rollwise_sink_revisions_removed_total",
                frozenset({("reason", "capacity")}))] == 2
    assert out[("rollwise_sink_revisions", frozenset())] == 3


def test_a_revision_that_stops_getting_predictions_disappears() -> None:
    """Missing data, not a histogram that silently stopped growing."""
    clock = Clock()
    histograms = PredictionHistograms(idle_seconds=60, clock=clock)
    histograms.observe(A, [0.5])
    clock.now = 30
    histograms.observe(B, [0.5])
    clock.now = 61
    revisions = {dict(labels).get("revision") for name, labels in samples(histograms)
                 if name == f"{SINK_METRIC}_count"}
    assert revisions == {B.revision}
    assert samples(histograms)[("rollwise_sink_revisions_removed_total",
                                frozenset({("reason", "idle")}))] == 1


def test_every_counter_is_exported_from_the_start() -> None:
    names = {name for name, _ in samples(PredictionHistograms())}
    assert {"rollwise_sink_events_total", "rollwise_sink_unparseable_events_total",
            "rollwise_sink_dropped_predictions_total", "rollwise_sink_unanswered_requests_total",
            "rollwise_sink_revisions_removed_total", "rollwise_sink_revisions"} <= names


def test_the_layout_can_come_from_a_policys_training_reference() -> None:
    policy = f"""\
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: p}}
spec:
  steps: [{{weight: 10}}, {{weight: 100}}]
  analysis:
    checks:
      - name: vs-stable
        kind: distribution
        metric: {SINK_METRIC}
      - name: vs-training
        kind: distribution
        metric: {SINK_METRIC}
        reference:
          source: training
          histogram: {{bounds: [0.2, 0.4, 0.8], counts: [1, 2, 3, 4]}}
"""
    loaded = [p.policy for p in load_text(policy, "p.yaml")]
    assert bounds_from_policies(loaded, SINK_METRIC) == (0.2, 0.4, 0.8)
    try:
        bounds_from_policies(loaded, "other_metric")
    except ValueError as err:
        assert "other_metric" in str(err)
    else:
        raise AssertionError("no reference for other_metric, yet bounds were found")


def test_bad_layouts_are_refused() -> None:
    for bounds in ([], [0.5, 0.5], [0.1, float("inf")], [1.0, 0.5]):
        try:
            PredictionHistograms(bounds)
        except ValueError:
            continue
        raise AssertionError(f"{bounds} accepted")
