"""Batched PromQL from presets, injection refusal, and sorting samples back to rollouts."""

from __future__ import annotations

import math

import pytest

from controller.policy.loader import load_text
from controller.providers import Quality
from controller.providers.presets import (
    Part,
    Template,
    UnsafeLabelValue,
    batched_query,
    templates_for,
)
from controller.providers.prometheus import sort_samples

LEGACY_TOTAL = Template('revision_app_request_count{namespace_name="${namespace}", '
                        'revision_name=~"${revision}"}', "revision_name", False)
PARTS = [Part("0", "models", "churn", ("churn-predictor-00002", "churn-predictor-00001"), 300, 60),
         Part("1", "fraud", "fraud", ("fraud-predictor-00007", "fraud-predictor-00006"), 120, 60)]


def test_one_query_serves_every_rollout_with_its_own_window() -> None:
    query = batched_query(LEGACY_TOTAL, PARTS)
    assert query.count("increase(") == 2
    assert '[300s]' in query and '[120s]' in query
    assert 'revision_name=~"(churn\\-predictor\\-00002|churn\\-predictor\\-00001)"' in query \
        or 'revision_name=~"(churn-predictor-00002|churn-predictor-00001)"' in query
    assert '"rollwise_group", "0"' in query and '"rollwise_group", "1"' in query
    assert '"rollwise_q", "age"' in query and '"rollwise_q", "resets"' in query


@pytest.mark.parametrize("bad", ['x"}) or vector(1', "a|b", "UPPER", "ns with space", ""])
def test_label_values_that_are_not_kubernetes_names_never_reach_promql(bad: str) -> None:
    with pytest.raises(UnsafeLabelValue):
        batched_query(LEGACY_TOTAL, [Part("0", bad, "s", ("r1",), 60, 60)])
    with pytest.raises(UnsafeLabelValue):
        batched_query(LEGACY_TOTAL, [Part("0", "ns", "s", (bad,), 60, 60)])


def test_every_preset_builds_queries_for_the_checks_it_claims() -> None:
    policy = load_text("""
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {name: p}
spec:
  steps: [{weight: 50}, {weight: 100}]
  analysis:
    checks:
      - {name: e, kind: ratio}
      - {name: l, kind: latency, quantile: 0.99}
      - {name: d, kind: distribution}
""", "p.yaml")[0].policy
    for preset in ("knative-queue-proxy", "knative-otel", "istio"):
        for check in policy.spec.analysis.checks:
            for template in templates_for(check, preset).values():
                query = batched_query(template, PARTS[:1])
                assert "churn-predictor-00002" in query.replace("\\", "")
                assert "${" not in query


def _sample(group: str, q: str, labels: dict[str, str], value: str) -> dict[str, object]:
    return {"metric": {"rollwise_group": group, "rollwise_q": q, **labels},
            "value": [0, value]}


def test_samples_are_sorted_back_with_quality_flags() -> None:
    a, b = PARTS[0].revisions
    samples = [
        _sample("0", "value", {"revision_name": a}, "120"),
        _sample("0", "value", {"revision_name": b}, "980"),
        _sample("0", "age", {"revision_name": a}, "2"),
        _sample("0", "resets", {"revision_name": a}, "0"),
        _sample("1", "value", {"revision_name": "fraud-predictor-00006"}, "50"),
    ]
    results = sort_samples(LEGACY_TOTAL, PARTS, samples, stale_after=120)
    assert results["0"].quality == Quality.OK
    assert results["0"].values == {a: 120.0, b: 980.0}
    assert results["1"].quality == Quality.NO_DATA
    assert "fraud-predictor-00007" in results["1"].detail


@pytest.mark.parametrize(("extra", "quality"), [
    (_sample("0", "value", {"revision_name": "churn-predictor-00002"}, "NaN"), Quality.ERROR),
    (_sample("0", "age", {"revision_name": "churn-predictor-00002"}, "600"), Quality.STALE),
    (_sample("0", "resets", {"revision_name": "churn-predictor-00001"}, "1"), Quality.RESET),
])
def test_nan_stale_and_reset_are_never_ok(extra: dict[str, object], quality: Quality) -> None:
    a, b = PARTS[0].revisions
    samples = [_sample("0", "value", {"revision_name": a}, "1"),
               _sample("0", "value", {"revision_name": b}, "1"), extra]
    assert sort_samples(LEGACY_TOTAL, PARTS[:1], samples, 120)["0"].quality == quality


def test_histogram_buckets_are_scaled_to_seconds() -> None:
    latency = Template("x_bucket{namespace_name=\"${namespace}\", revision_name=~\"${revision}\"}",
                       "revision_name", True, 0.001)
    a, b = PARTS[0].revisions
    samples = [_sample("0", "value", {"revision_name": r, "le": le}, v)
               for r in (a, b) for le, v in (("100", "5"), ("500", "9"), ("+Inf", "10"))]
    result = sort_samples(latency, PARTS[:1], samples, 120)["0"]
    assert result.quality == Quality.OK
    assert result.buckets[a] == {0.1: 5.0, 0.5: 9.0, math.inf: 10.0}
