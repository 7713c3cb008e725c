"""Which Deployment changes wake a pass: only those of objects that opted in and of the
canaries Rollwise made (most Deployments of a cluster are nobody's rollout)."""

from __future__ import annotations

from controller.daemon import _rollwise_object


def test_only_opted_in_deployments_and_rollwise_canaries_wake_a_pass() -> None:
    assert _rollwise_object({"metadata": {"annotations": {"rollwise.io/policy": "fast"}}})
    assert _rollwise_object({"metadata": {"labels": {"rollwise.io/canary": "true"}}})
    assert not _rollwise_object({"metadata": {"name": "iris-predictor", "labels": {
        "app": "iris"}, "annotations": {"deployment.kubernetes.io/revision": "3"}}})
    assert not _rollwise_object({})
