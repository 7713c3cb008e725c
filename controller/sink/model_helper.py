"""Record predictions into the sink's histogram from inside a KServe Python ``Model``: the
alternative to the payload logger for a custom model server.

Dependencies: prometheus_client and the standard library (``controller.sink.bodies``),
never the kserve SDK nor the rest of Rollwise, so the file can be vendored into a model
image. KServe's model server serves prometheus_client's default registry on ``/metrics``,
so the series appear there with no other change; Prometheus adds the pod's ``namespace``
from the scrape target, and the drift preset's query (``rollwise_prediction_bucket``
by ``namespace`` and ``revision``) reads them as it reads the sink's::

    from kserve import Model
    from controller.sink.model_helper import PredictionRecorder

    recorder = PredictionRecorder()          # buckets: the training reference's bounds

    class Churn(Model):
        def predict(self, payload, headers=None):
            response = {"predictions": self.model.predict_proba(...)[:, 1].tolist()}
            recorder.record_response(response)   # v1 or v2 bodies; or record([...])
            return response

The revision label: ``revision=`` if given, else ``$K_REVISION`` (Knative sets it in the
serving container: the revision Rollwise compares), else ``$ROLLWISE_REVISION`` (KServe
Standard mode: set it in the predictor's env to its Deployment name,
``<isvc>-predictor`` or ``<isvc>-<canary name>-predictor``). A numeric prediction goes to
the histogram, a class label to ``<metric>_class_total``.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from controller.sink.bodies import Prediction, predictions_of

METRIC = "rollwise_prediction"          # presets.SINK_METRIC (a test keeps them equal)
DEFAULT_BOUNDS = tuple(round(i / 10, 1) for i in range(11))
OTHER_CLASS = "__other__"
_LABELS = ("inferenceservice", "component", "revision")
_families: dict[tuple[int, str], tuple[Histogram, Counter]] = {}
_families_lock = threading.Lock()


def revision_from(environ: Mapping[str, str]) -> str | None:
    return environ.get("K_REVISION") or environ.get("ROLLWISE_REVISION") or None


class PredictionRecorder:
    """One model's predictions, counted per revision with prometheus_client."""

    def __init__(self, bounds: Sequence[float] = DEFAULT_BOUNDS, *, metric: str = METRIC,
                 inferenceservice: str = "", component: str = "predictor",
                 revision: str | None = None, max_classes: int = 50,
                 registry: CollectorRegistry = REGISTRY,
                 environ: Mapping[str, str] | None = None) -> None:
        environment = os.environ if environ is None else environ
        found = revision or revision_from(environment)
        if not found:
            raise ValueError("no revision to label predictions with: pass revision=, or run "
                             "where K_REVISION (Knative) or ROLLWISE_REVISION is set")
        bounds = tuple(float(b) for b in bounds)
        if not bounds or any(b >= c for b, c in itertools.pairwise(bounds)):
            raise ValueError(f"bucket bounds must be strictly increasing, got {list(bounds)}")
        self.bounds, self.max_classes = bounds, max_classes
        self._histogram, self._classes = _family(registry, metric, bounds)
        self._labels = (inferenceservice or environment.get("K_SERVICE", "").removesuffix(
            "-predictor"), component, found)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def record(self, predictions: Iterable[Prediction | bool | int]) -> None:
        """Numbers to the histogram; strings and booleans to the class counts."""
        histogram = self._histogram.labels(*self._labels)
        for value in predictions:
            if isinstance(value, (bool, str)):
                label = ("true" if value else "false") if isinstance(value, bool) else value
                with self._lock:
                    if label not in self._seen:
                        if len(self._seen) >= self.max_classes:
                            label = OTHER_CLASS
                        else:
                            self._seen.add(label)
                self._classes.labels(*self._labels, label).inc()
            else:
                histogram.observe(float(value))

    def record_response(self, body: object, output: str | None = None) -> None:
        """A v1 (``predictions``) or v2 (``outputs``) response body, as returned by
        ``predict``; raises ``EventUnreadable`` (with its cause) for anything else."""
        self.record(predictions_of(body, output=output))


def _family(registry: CollectorRegistry, metric: str,
            bounds: tuple[float, ...]) -> tuple[Histogram, Counter]:
    """One histogram and class counter per registry and name (a model server may build
    several recorders: prometheus_client refuses to register a name twice; the first
    recorder's bounds stand)."""
    key = (id(registry), metric)
    with _families_lock:
        if key not in _families:
            _families[key] = (
                Histogram(metric, "Model predictions per revision (Rollwise drift checks)",
                          _LABELS, buckets=bounds, registry=registry),
                Counter(f"{metric}_class", "Class labels predicted per revision",
                        (*_LABELS, "class"), registry=registry))
        return _families[key]
