"""A drift check on the sink's metric queries the sink's per-revision series, in any mode."""

from __future__ import annotations

import pytest

from controller.policy.loader import load_text
from controller.policy.model import DistributionCheck
from controller.providers.presets import SINK_METRIC, Part, batched_query, templates_for


@pytest.mark.parametrize("preset", ["knative-queue-proxy", "kserve-standard", "istio"])
def test_a_drift_check_on_the_sinks_metric_selects_revisions_directly(preset: str) -> None:
    policy = load_text(f"""
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {{name: p}}
spec:
  steps: [{{weight: 50}}, {{weight: 100}}]
  analysis:
    provider: {preset}
    checks:
      - {{name: d, kind: distribution, metric: {SINK_METRIC}}}
""", "p.yaml")[0].policy
    check = policy.spec.analysis.checks[0]
    assert isinstance(check, DistributionCheck)
    template = templates_for(check, preset)["histogram"]
    assert (template.revision_label, template.histogram, template.is_selector) == (
        "revision", True, True)
    query = batched_query(template, [Part("0", "models", "iris", (
        "iris-predictor-00002", "iris-predictor-00001"), 300, 60)])
    assert (f'sum by (revision, le) (increase({SINK_METRIC}_bucket{{namespace="models", '
            f'revision=~"(iris-predictor-00002|iris-predictor-00001)"}}[300s]))') in query
    # selector templates also ask for freshness and resets: a revision the sink stopped
    # exporting (idle) is missing data, one that came back is a reset
    assert '"rollwise_q", "age"' in query and '"rollwise_q", "resets"' in query
