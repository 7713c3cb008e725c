"""Lineage: which model serves an endpoint, which run produced it, what it was judged on.

The boundary is ``LineageStore``; ML Metadata (``mlmd``) is the first backend. Kubeflow
is moving off MLMD (to the KFP artifacts API and Kubeflow Hub), so nothing outside this
package may import ``ml_metadata``: another backend must slot in without touching the
controller. ``gate`` (pure) judges a model's recorded evaluation against a policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from controller.rollout.snapshot import RolloutSnapshot


@dataclass(frozen=True)
class Evaluation:
    """A model's evaluation as its training pipeline recorded it."""

    model_uri: str
    metrics: Mapping[str, float]
    run: str | None = None                 # the pipeline run that produced the model
    source: str = ""                       # where it was read (for reasons and the CLI)


@dataclass(frozen=True)
class LineageView:
    """`rollwise lineage NAMESPACE/NAME`: endpoint -> revisions -> models -> runs ->
    evaluations -> rollouts with outcomes and approvers. JSON-friendly."""

    endpoint: str
    rollouts: tuple[Mapping[str, object], ...] = ()
    models: tuple[Mapping[str, object], ...] = ()
    extra: Mapping[str, object] = field(default_factory=dict)


class LineageStore(Protocol):
    def record(self, snapshot: RolloutSnapshot) -> int:
        """Make the store match this rollout (idempotent, keyed by the rollout id); returns
        the execution id. Raises LineageUnavailable when the backend cannot be reached."""

    def evaluation(self, model_uri: str) -> Evaluation | None:
        """The recorded evaluation of the model with this URI, or None if there is none.
        Raises LineageUnavailable when the backend cannot be reached."""

    def view(self, namespace: str, name: str) -> LineageView:
        """Everything recorded about one InferenceService."""


class LineageUnavailable(Exception):
    """The lineage backend cannot be reached or refused the request; retry later."""
